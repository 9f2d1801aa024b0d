"""`--json` means exactly one JSON document on stdout, for every command that takes it.

The list of commands comes from the CLI's own parser, so a new command with `--json` is covered
the day it is added. Each runs as a user runs it (a subprocess on a fresh state folder); a
command that fails must still print one JSON document (an "error" object) and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

import pytest

from ml.cli import build_parser
from tests.unit.test_cli import ROOT, env, mlops, start, subcommands  # noqa: F401 - env is a fixture

# Positional arguments get a plausible value; `demo` and `run` would run the whole lifecycle,
# so they are pointed at an unknown workflow and must fail at once, with a JSON error. (Their
# success documents are parsed by tests/e2e/test_lifecycle.py and tests/e2e/test_approval.py.)
POSITIONALS = {
    "entry_id": "1",
    "path": "no_such_file.csv",
    "action": "list",
    "id": None,
    "version": "1",
    "file": "no_such_file.csv",
    "name": "ticket_routing",
}
HEAVY = {("demo",), ("run",)}
REQUIRED_OPTIONS = {
    "--reason": "checked in the json test",
    "--quantity": "1",
    "--from": "no_such_file.csv",
    "--out": "no_such_folder/checkout",
}
MUTUALLY_EXCLUSIVE = {("costs", "add"): ["--role", "ml_engineer"]}


def _parser_for(path: list[str]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def json_commands() -> list[list[str]]:
    """Every command whose parser takes --json, with its positional arguments filled in."""
    found = []
    for path in subcommands():
        parser = _parser_for(path)
        options = {s for a in parser._actions for s in a.option_strings}
        if "--json" not in options:
            continue
        argv = list(path)
        for action in parser._actions:
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
                value = POSITIONALS[action.dest]
                if value is not None:
                    argv.append(value)
        for action in parser._actions:
            if action.option_strings and action.required:
                argv += [action.option_strings[0], REQUIRED_OPTIONS[action.option_strings[0]]]
        argv += MUTUALLY_EXCLUSIVE.get(tuple(path), [])
        if tuple(path) in HEAVY:
            argv += ["--workflow", "no_such_workflow"]
        found.append(argv + ["--json"])
    return found


def test_the_parser_lists_the_json_commands_a_script_would_use():
    listed = {" ".join(c[:2]) for c in json_commands()}
    for expected in (
        "config --json",
        "costs report",
        "costs entries",
        "models list",
        "data versions",
        "doctor --json",
    ):
        assert any(x.startswith(expected) for x in listed), (expected, sorted(listed))


def test_every_json_command_prints_exactly_one_json_document(env):
    env = {**env, "MLOPS_WORKFLOWS_FILE": str(ROOT / "dags" / "workflows.yaml")}
    # A ledger entry first, so `costs report --refresh` has something to report on.
    booked = mlops(["costs", "add", "--role", "ml_engineer", "--quantity", "2", "--json"], env)
    assert booked.returncode == 0, booked.stderr
    assert json.loads(booked.stdout)["category"] == "people"
    # One MLflow command first: it creates the tracking database, which two first-comers at
    # once would both try to create.
    first = mlops(["models", "list", "--json"], env)
    assert first.returncode == 0 and isinstance(json.loads(first.stdout), list), first.stderr
    commands = json_commands() + [["costs", "report", "--refresh", "--json"]]
    running = [(argv, start(argv, env)) for argv in commands]
    for argv, proc in running:
        out, err = proc.communicate(timeout=300)
        try:
            doc = json.loads(out)
        except json.JSONDecodeError as exc:
            pytest.fail(
                f"`mlops {' '.join(argv)}` printed no single JSON document ({exc}):\n{out[:2000]}\n{err[-2000:]}"
            )
        if proc.returncode != 0:
            assert isinstance(doc, dict) and doc.get("error"), (argv, doc)
            assert doc["error"] in err, "the one-line error is on stderr as well"


def test_what_a_step_or_a_child_process_prints_goes_to_stderr_under_json(tmp_path, env):
    # A command whose step prints, and whose subprocess (as Airflow's do) inherits stdout.
    script = textwrap.dedent("""
        import subprocess, sys
        import ml.cli.workflows as workflows_cli
        original = workflows_cli.cmd_list
        def noisy(args):
            print("chatter from a step")
            subprocess.run([sys.executable, "-c", "print('chatter from a child process')"], check=True)
            return original(args)
        workflows_cli.cmd_list = noisy
        from ml.cli import main
        sys.exit(main(["workflows", "--json"]))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, text=True, capture_output=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert isinstance(json.loads(result.stdout), (list, dict))
    assert "chatter from a step" in result.stderr and "chatter from a child process" in result.stderr


def test_a_closed_pipe_is_not_a_traceback(env):
    # `mlops config | head -1`: the reader goes away after one line.
    result = subprocess.run(
        f"{sys.executable} -m ml.cli config | head -1",
        shell=True,
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=300,
    )
    assert result.stdout.strip(), result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
