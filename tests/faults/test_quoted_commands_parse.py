"""Every `mlops ...` command the README or a YAML comment quotes parses with the CLI's own parser (issue 13.4).

A user copies these lines; one that names a command or flag that does not exist (`mlops workflows
show NAME` before it existed) is a broken promise. Placeholders (NAME, FILE, N) stand for values;
`[--flag]` is optional and `a|b` offers a choice: each form is parsed. A mention that leaves out a
required value passes; an unknown command, flag or choice never does.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from ml.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
# `mlops` as the command word: at the start, after a prompt, env assignments or a venv path.
COMMAND = re.compile(r"(?:^|[`$]\s*|^\s*(?:[A-Z_][A-Z0-9_]*=\S+\s+)*)(?:\.venv/bin/)?(mlops\s+[^`\n]*)")
NUMBERS = {"N", "VERSION", "V", "ID", "ENTRY_ID"}  # placeholders of integer arguments


def quoted_commands() -> list[tuple[str, str]]:
    found = []
    readme = (ROOT / "README.md").read_text()
    code_block = False
    for number, line in enumerate(readme.splitlines(), 1):
        if line.lstrip().startswith("```"):
            code_block = not code_block
            continue
        spans = [line.strip()] if code_block else re.findall(r"`([^`]+)`", line)
        for span in spans:
            found += [(f"README.md:{number}", m) for m in _commands(span)]
    for path in sorted([*ROOT.glob("dags/*.yaml"), *ROOT.glob("infra/**/*.yaml")]):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "#" in line:
                comment = line[line.index("#") + 1 :]
                for span in re.findall(r"`([^`]+)`", comment) or [comment.strip()]:
                    found += [(f"{path.relative_to(ROOT)}:{number}", m) for m in _commands(span)]
    return found


def _commands(span: str) -> list[str]:
    span = re.sub(r"^\$\s*", "", span.strip())
    match = COMMAND.match(span)
    if not match:
        return []
    command = re.split(r"\s(?:#|\||&&|;|>)\s?|\s+#", match.group(1))[0].strip().rstrip(".,;:)")
    return [command] if command not in ("mlops", "mlops …", "mlops ...") else []


def forms(command: str) -> list[list[str]]:
    """The argument lists a quoted command stands for: with and without each [optional] part."""
    tokens = shlex.split(command.replace("…", "..."))[1:]
    tokens = [t for t in tokens if t not in ("...", "\\")]
    bare = [t for t in tokens if not (t.startswith("[") or t.endswith("]"))]
    full = [t.strip("[]") for t in tokens]
    out = []
    for form in (bare, full):
        form = [
            ("1" if t in NUMBERS else t.split("|")[0] if "|" in t and not t.startswith("-") else t)
            for t in form
        ]
        if form not in out:
            out.append(form)
    return out


def optional_values(parser):
    """The parser with no required option, positional or value: a mention in prose may leave out
    values (`mlops costs add --tooling`), and argparse would report those before an unknown flag."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                optional_values(sub)
        else:
            action.required = False
            if (
                action.nargs is None
                and not isinstance(action.const, bool)
                and action.type is not bool
                and action.__class__.__name__ in ("_StoreAction",)
            ):
                action.nargs = "?"  # `--tooling` named in prose without its value
    for group in parser._mutually_exclusive_groups:
        group.required = False
    return parser


COMMANDS = quoted_commands()


def test_the_readme_quotes_mlops_commands():
    assert len(COMMANDS) >= 20, COMMANDS  # the extraction itself works


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w} {c}" for w, c in COMMANDS])
def test_a_quoted_command_parses(where, command, capsys):
    parser = optional_values(build_parser())
    for argv in forms(command):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            if exc.code != 0:  # `--help` exits 0
                pytest.fail(
                    f"{where}: `{command}` does not parse as {argv}: {capsys.readouterr().err.strip()}"
                )
