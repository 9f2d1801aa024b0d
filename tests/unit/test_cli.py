"""The `mlops` command as a user runs it: `python -m ml.cli` in a subprocess on a state folder of its own."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ml.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("config", "demo", "run", "airflow", "workflows", "doctor", "data", "models", "costs")


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """The caller's environment without its MLOPS_* settings, on a fresh state folder."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    return {
        **clean,
        "MLOPS_STATE_DIR": str(tmp_path / "state"),
        "MLOPS_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ml.cli", *args],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def mlops(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = start(args, env)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def subcommands() -> list[list[str]]:
    """Every command and sub-action the parser declares, e.g. ["data", "import"]."""

    def walk(parser, prefix):
        found = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found.append(prefix + [name])
                    found += walk(sub, prefix + [name])
        return found

    return walk(build_parser(), [])


def test_help_lists_every_group(env):
    result = mlops(["--help"], env)
    assert result.returncode == 0, result.stderr
    for group in GROUPS:
        assert f"    {group}" in result.stdout, group


def test_each_group_has_help_that_exits_0(env):
    running = [
        (group, start([group, "--help"], env)) for group in GROUPS
    ]  # all at once: each pays its imports
    for group, proc in running:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (group, err[-2000:])
        assert out.startswith(f"usage: mlops {group}"), (group, out[:200])


def test_every_sub_action_has_help(capsys):
    # In-process: the groups' subprocess runs above show that the real entry point works.
    commands = subcommands()
    assert {c[0] for c in commands} >= set(GROUPS)
    assert (
        ["data", "import"] in commands
        and ["models", "rollback"] in commands
        and ["costs", "report"] in commands
    )
    for command in (c for c in commands if len(c) > 1):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*command, "--help"])
        assert exit_.value.code == 0, command
        assert capsys.readouterr().out.startswith(f"usage: mlops {' '.join(command)}"), command


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout[-500:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--workflow", "nope"],
        ["data", "versions", "--workflow", "nope"],
    ],
)
def test_an_unknown_workflow_is_one_line_and_exit_1(env, args):
    line = one_line_error(mlops(args, env))
    assert line.startswith(f"mlops {args[0]}: unknown workflow 'nope'") and "ticket_routing" in line


def test_importing_a_missing_file_is_one_line_and_exit_1(env, tmp_path):
    missing = tmp_path / "missing.csv"
    line = one_line_error(mlops(["data", "import", str(missing)], env))
    assert str(missing) in line and "no such file" in line
    assert not (tmp_path / "state" / "drop" / "ticket_routing" / "missing.csv").exists()


def test_an_invalid_setting_is_one_line_naming_the_variable(env):
    line = one_line_error(mlops(["config"], {**env, "MLOPS_SEED": "forty-two"}))
    assert "MLOPS_SEED" in line and "forty-two" in line


def test_config_json_lists_every_setting_with_its_value(env, tmp_path):
    result = mlops(["config", "--json"], env)
    assert result.returncode == 0, result.stderr
    rows = {r["variable"]: r for r in json.loads(result.stdout)}
    assert {"MLOPS_STATE_DIR", "MLOPS_LEDGER_URL", "MLOPS_MLFLOW_TRACKING_URI", "MLOPS_DEVICE"} <= set(rows)
    assert rows["MLOPS_STATE_DIR"]["value"] == str((tmp_path / "state").resolve())
    assert rows["MLOPS_LEDGER_URL"]["value"].startswith(f"sqlite:///{(tmp_path / 'state').resolve()}")
    assert rows["MLOPS_TORCH_THREADS"]["value"] == "1"
    assert all(r["help"] for r in rows.values())


def test_workflows_json_lists_the_declared_workflows(env):
    result = mlops(["workflows", "--json"], env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == ["ticket_routing"] and rows[0]["approval"] in ("auto", "manual")


def test_doctor_json_reports_each_check(env, tmp_path):
    result = mlops(["doctor", "--json"], env)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert all(
        set(c) == {"check", "ok", "detail", "warning"} and isinstance(c["ok"], bool) for c in checks.values()
    )
    # A new state folder is a warning (a mistyped MLOPS_STATE_DIR must not pass as "all ok"), not a failure.
    assert checks["state folder has data"]["warning"] is True and report["warnings"] == 1
    assert {"versions", "state folder writable", "workflows file", "ledger database", "device"} <= set(checks)
    assert checks["state folder writable"]["ok"] is True
    assert checks["state folder writable"]["detail"] == str((tmp_path / "state").resolve())
    assert report["ok"] is all(c["ok"] for c in checks.values())
    assert (result.returncode == 0) is report["ok"]
    assert (tmp_path / "state" / "drop").is_dir()  # the doctor created the state folder where it was told


def test_no_command_is_a_usage_error(env):
    result = mlops([], env)
    assert result.returncode == 2 and "usage: mlops" in result.stderr
