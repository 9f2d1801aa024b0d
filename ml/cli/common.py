"""Helpers the command modules share: resolve the workflow, print results."""

from __future__ import annotations

import json
import sys

from ml.config import Settings, load_settings
from ml.workflows import Workflow, load_workflows


def add_json(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_workflow(parser) -> None:
    parser.add_argument("--workflow", "-w", help="workflow name from dags/workflows.yaml (default: the first one)")


def settings_and_workflow(args) -> tuple[Settings, Workflow]:
    settings = load_settings()
    workflows = load_workflows(settings.workflows_file)
    name = getattr(args, "workflow", None)
    if name is None:
        return settings, next(iter(workflows.values()))
    if name not in workflows:
        raise LookupError(f"unknown workflow {name!r}; {settings.workflows_file} declares: {', '.join(workflows)}")
    return settings, workflows[name]


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
