"""`mlops`: one entry point for every user action.

Each user has a group: data engineers `run`, `data`, `workflows`, `doctor`; model owners
`models`; cost reviewers `costs`. Errors print one line naming the problem and the fix and
exit 1; `--json` prints machine-readable output where a script would read it.
"""

from __future__ import annotations

import argparse
import sys

from ml.cli import costs, data, frontier, lifecycle, models, serve
from ml.cli.common import add_json, emit
from ml.config import SettingsError, describe, load_settings

EXIT_OK, EXIT_ERROR = 0, 1


class CliError(RuntimeError):
    """A user-facing failure: printed as one line, exit code 1."""


def cmd_config(args) -> int:
    settings = load_settings()
    def shown(var: str) -> str:
        value = str(getattr(settings, var[len("MLOPS_"):].lower()))
        return ("(set)" if value else "(unset)") if "KEY" in var or "PASSWORD" in var else value

    rows = [{"variable": var, "value": shown(var), "help": help_} for var, help_ in describe()]
    emit(args, rows, "\n".join(f"{r['variable']:<24} {r['value']}\n{'':<24} {r['help']}" for r in rows))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops", description=__doc__.split("\n\n")[0],
        epilog="Run `mlops COMMAND --help` for each command. Settings: `mlops config`.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("config", help="show every setting, its value and its MLOPS_* variable")
    add_json(p)
    p.set_defaults(func=cmd_config)
    for group in (lifecycle, data, models, serve, costs, frontier):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or EXIT_OK
    except KeyboardInterrupt:
        print("mlops: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
        known = (CliError, SettingsError, ValueError, RuntimeError, FileNotFoundError, PermissionError, LookupError)
        if not isinstance(exc, known):
            raise
        print(f"mlops {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR


