"""`mlops`: one entry point for every user action.

Each user has a group: data engineers `run`, `data`, `workflows`, `doctor`; model owners
`models`; cost reviewers `costs`. Errors print one line naming the problem and the fix and
exit 1; `--json` prints machine-readable output where a script would read it.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys

from ml.cli import common, costs, data, frontier, lifecycle, models, serve, workflows
from ml.cli.common import add_json, emit
from ml.config import SettingsError, describe, load_settings

EXIT_OK, EXIT_ERROR = 0, 1


class CliError(RuntimeError):
    """A user-facing failure: printed as one line, exit code 1."""


def cmd_config(args) -> int:
    settings = load_settings()

    def shown(var: str) -> str:
        value = str(getattr(settings, var[len("MLOPS_") :].lower()))
        return ("(set)" if value else "(unset)") if "KEY" in var or "PASSWORD" in var else value

    rows = [{"variable": var, "value": shown(var), "help": help_} for var, help_ in describe()]
    emit(args, rows, "\n".join(f"{r['variable']:<24} {r['value']}\n{'':<24} {r['help']}" for r in rows))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops",
        description=__doc__.split("\n\n")[0],
        epilog="Run `mlops COMMAND --help` for each command. Settings: `mlops config`.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("config", help="show every setting, its value and its MLOPS_* variable")
    add_json(p)
    p.set_defaults(func=cmd_config)
    for group in (lifecycle, workflows, data, models, serve, costs, frontier):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is not None:  # in-process (tests, scripts): the process goes on
        return _main(argv)
    common._process_entry = True
    try:
        return _main(None)
    finally:
        # `mlops` and `python -m ml.cli` end with the command. The interpreter's last garbage
        # collections would traverse every object MLflow's ~2,000 modules made at import: about a
        # quarter of a `mlops models` command's CPU (benchmarks/cli_latency.py). Frozen, they are
        # left to the OS, as everything else is.
        gc.freeze()


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    # Shell completion (`eval "$(register-python-argcomplete mlops)"`): answers and exits only
    # when the shell asks (_ARGCOMPLETE set), else returns at once.
    import argcomplete

    argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    as_json = getattr(args, "json", False)
    real_stdout = sys.stdout
    saved_fd = None
    if as_json:
        # Exactly one JSON document on stdout: anything else a command prints goes to stderr,
        # at the file-descriptor level too, so Airflow subprocesses that inherit fd 1 cannot
        # write into the document either.
        sys.stdout.flush()
        try:
            stdout_fd = real_stdout.fileno()
        except (AttributeError, OSError, ValueError):  # a test's in-memory stdout
            stdout_fd = None
        if stdout_fd is not None:
            saved_fd = os.dup(stdout_fd)
            os.dup2(sys.stderr.fileno(), stdout_fd)
            common._json_stdout = os.fdopen(os.dup(saved_fd), "w", encoding="utf-8")
        else:
            common._json_stdout = real_stdout
        sys.stdout = sys.stderr
    common.take_notes()  # none left from an earlier in-process call
    try:
        code = args.func(args) or EXIT_OK
        real_stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        for text in common.take_notes():
            print(f"mlops: {text}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("mlops: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `mlops ... | head` closed the pipe: not an error worth a traceback. Point stdout at
        # devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), real_stdout.fileno())
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
        known = (
            CliError,
            SettingsError,
            ValueError,
            RuntimeError,
            FileNotFoundError,
            PermissionError,
            LookupError,
        )
        if not isinstance(exc, known):
            raise
        notes = common.take_notes()
        message = f"mlops {args.command}: {exc}" + (f" (note: {'; '.join(notes)})" if notes else "")
        print(message, file=sys.stderr)
        if as_json:
            common.emit(args, {"error": str(exc), "command": args.command, "exit_code": EXIT_ERROR})
        return EXIT_ERROR
    finally:
        if as_json:
            if saved_fd is not None:
                try:
                    common._json_stdout.close()
                except BrokenPipeError:
                    pass
                os.dup2(saved_fd, real_stdout.fileno())
                os.close(saved_fd)
            common._json_stdout, sys.stdout = None, real_stdout
