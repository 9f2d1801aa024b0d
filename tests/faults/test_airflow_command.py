"""`mlops airflow ...` as the README writes it (issue 16.12) and the secret it leaves on disk (16.10).

A stand-in `airflow` records what it was started with: the venv's bin must lead PATH (Airflow
starts its parts as a bare `airflow`), flags must reach it, its log records must not land in a
JSON document on stdout, and the auth manager's passwords file must exist 0600 before it starts.
"""

from __future__ import annotations

import io
import json
import stat
import sys
from pathlib import Path

import pytest

from ml import airflow_runner
from ml.cli import build_parser
from ml.config import load_settings

FAKE = r"""#!{python}
import json, os, sys
from pathlib import Path
home = Path(os.environ["AIRFLOW_HOME"])
passwords = Path(os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
                 or home / "simple_auth_manager_passwords.json.generated")
mode = oct(passwords.stat().st_mode & 0o777) if passwords.exists() else None
print(json.dumps({{"argv": sys.argv[1:], "path0": os.environ["PATH"].split(os.pathsep)[0], "passwords_mode": mode}}))
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    script = tmp_path / "bin" / "airflow"
    script.parent.mkdir()
    script.write_text(FAKE.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setattr(airflow_runner, "airflow_bin", lambda: str(script))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # as when the venv is not activated
    monkeypatch.delenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", raising=False)
    return load_settings({"MLOPS_STATE_DIR": str(tmp_path / "state")})


def started_with(settings, args) -> dict:
    log = settings.state_dir / "fake.log"
    airflow_runner.run_airflow(settings, args, log_path=log)
    return json.loads(log.read_text())


def test_flags_after_the_airflow_command_reach_airflow():
    args = build_parser().parse_args(["airflow", "dags", "list", "-o", "json"])
    assert args.airflow_args == ["dags", "list", "-o", "json"]


def test_children_find_this_venvs_airflow_without_an_activated_venv(fake):
    assert started_with(fake, ["standalone"])["path0"] == str(Path(sys.executable).parent)


def test_the_generated_admin_password_file_is_0600_before_airflow_starts(fake):
    assert started_with(fake, ["standalone"])["passwords_mode"] == "0o600"
    path = fake.airflow_home / "simple_auth_manager_passwords.json.generated"
    path.chmod(0o644)  # left readable by an earlier version
    started_with(fake, ["standalone"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_airflows_warnings_go_to_stderr_and_json_alone_to_stdout():
    printed = (
        "2026-12-01T19:03:45.795699Z [warning  ] Could not import graphviz. Rendering graph to the graphical format "
        "will not be possible. \nYou might need to install the graphviz package and necessary system packages.\n"
        "Run `pip install graphviz` to attempt to install it. [py.warnings] category=UserWarning filename=x.py lineno=57\n"
        '[\n  {"dag_id": "a", "is_paused": "True"}\n]\n'
        "2026-12-01T19:03:46Z [info     ] done [airflow.cli]\n"
    )
    out, err = io.StringIO(), io.StringIO()
    airflow_runner.split_log_records(io.StringIO(printed), out, err)
    assert json.loads(out.getvalue()) == [{"dag_id": "a", "is_paused": "True"}]
    assert "graphviz" in err.getvalue() and "done" in err.getvalue()


def test_mlops_airflow_piped_prints_only_the_commands_output(fake, capsys, monkeypatch):
    from ml.cli import lifecycle

    monkeypatch.setattr(lifecycle, "migrate", lambda settings: None)
    monkeypatch.setattr(lifecycle, "load_settings", lambda: fake)
    args = build_parser().parse_args(["airflow", "dags", "list", "-o", "json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["argv"] == ["dags", "list", "-o", "json"]
