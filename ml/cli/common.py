"""Helpers the command modules share: resolve the workflow, print results."""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ml.config import Settings, load_settings, state_note
from ml.workflows import Workflow, load_workflows

# True when this process runs one command and ends (`mlops`, `python -m ml.cli`), not when
# main() is called in-process (tests, scripts): set by ml.cli.main.
_process_entry = False


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Import MLflow (and open its stores) with the cyclic garbage collector paused.

    Its ~2,000 modules allocate millions of objects that live as long as the process; the
    collector would traverse them again and again while they pile up, and once more at its
    next full collection (together ~30 % of a `mlops models` command's CPU). In a process that
    ends with its command they are frozen (gc.freeze) for the rest of it: later collections
    look at what the command itself makes. In-process callers get the collector back as it was.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _process_entry:
            gc.freeze()
        if enabled:
            gc.enable()


def add_json(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_workflow(parser) -> None:
    parser.add_argument(
        "--workflow", "-w", help="workflow name from dags/workflows.yaml (default: the first one)"
    )


def settings_and_workflow(args) -> tuple[Settings, Workflow]:
    """The settings and the workflow a command acts on, saying on stderr what a user did not choose:
    the workflow when -w was not given, and a state folder that is new or empty."""
    settings = load_settings()
    state = state_note(settings)
    workflows = load_workflows(settings.workflows_file)
    name = getattr(args, "workflow", None)
    if name is not None and name not in workflows:
        raise LookupError(
            f"unknown workflow {name!r}; {settings.workflows_file} declares: {', '.join(workflows)}"
        )
    if state:
        note(state)
    if name is None:
        first = next(iter(workflows.values()))
        others = (
            f"; others: {', '.join(n for n in workflows if n != first.name)}" if len(workflows) > 1 else ""
        )
        note(f"workflow {first.name!r} (the first in {settings.workflows_file}; choose with -w NAME{others})")
        return settings, first
    return settings, workflows[name]


# What a user did not choose but should know (the workflow picked for them, a new state folder).
# Long commands (run, demo) print them at once; others leave them to main(), which prints them
# after the command, or folds them into the one-line error when it fails.
_notes: list[str] = []
_notes_now = False


def note(text: str) -> None:
    if _notes_now:
        print(f"mlops: {text}", file=sys.stderr, flush=True)
    else:
        _notes.append(text)


def notes_now() -> None:
    """From here on, print notes at once (a command that runs for minutes)."""
    global _notes_now
    _notes_now = True
    for text in _notes:
        print(f"mlops: {text}", file=sys.stderr, flush=True)
    _notes.clear()


def take_notes() -> list[str]:
    global _notes_now
    taken, _notes[:], _notes_now = list(_notes), [], False
    return taken


# Under --json, main() points sys.stdout at stderr for the whole command (so whatever a step
# prints cannot corrupt the document) and keeps the real stdout here for emit() alone.
_json_stdout = None


def emit(args, payload, text: str | None = None) -> None:
    if getattr(args, "json", False):
        out = _json_stdout or sys.stdout
        out.write(json.dumps(payload, indent=2, default=str) + "\n")
        out.flush()
    else:
        print(text if text is not None else json.dumps(payload, indent=2, default=str))


def table(rows: list[dict], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)
