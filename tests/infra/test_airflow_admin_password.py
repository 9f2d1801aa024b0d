"""infra/airflow_admin_password.py writes the Airflow admin's password from the environment, in the
JSON shape SimpleAuthManager reads, readable by its owner only, and refuses an empty or short one."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

import pytest
from infra_rules import ROOT

SCRIPT = ROOT / "infra" / "airflow_admin_password.py"


def run(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_writes_the_password_file_owner_only(tmp_path):
    target = tmp_path / "auth" / "passwords.json"
    result = run(
        {
            "AIRFLOW_ADMIN_USER": "ops",
            "AIRFLOW_ADMIN_PASSWORD": "correct-horse-battery",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(target),
        }
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(target.read_text()) == {"ops": "correct-horse-battery"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "correct-horse-battery" not in result.stdout + result.stderr  # never logged


def test_a_new_password_replaces_the_old_one(tmp_path):
    target = tmp_path / "passwords.json"
    target.write_text(json.dumps({"ops": "old-password-123", "someone": "else-entirely"}))
    run(
        {
            "AIRFLOW_ADMIN_USER": "ops",
            "AIRFLOW_ADMIN_PASSWORD": "new-password-456",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(target),
        }
    )
    assert json.loads(target.read_text()) == {"ops": "new-password-456"}


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {"AIRFLOW_ADMIN_USER": "ops", "AIRFLOW_ADMIN_PASSWORD": ""},
            "AIRFLOW_ADMIN_PASSWORD is shorter than 12",
        ),
        (
            {"AIRFLOW_ADMIN_USER": "ops", "AIRFLOW_ADMIN_PASSWORD": "admin"},
            "AIRFLOW_ADMIN_PASSWORD is shorter than 12",
        ),
        ({"AIRFLOW_ADMIN_PASSWORD": "long-enough-password"}, "AIRFLOW_ADMIN_USER is empty"),
    ],
    ids=["empty", "short", "no-user"],
)
def test_refuses_a_missing_or_weak_password(tmp_path, env, message):
    target = tmp_path / "passwords.json"
    result = run({**env, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(target)})
    assert result.returncode != 0 and message in result.stderr
    assert not target.exists()


def test_refuses_without_the_file_setting(tmp_path):
    result = run({"AIRFLOW_ADMIN_USER": "ops", "AIRFLOW_ADMIN_PASSWORD": "long-enough-password"})
    assert (
        result.returncode != 0
        and "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE is not set" in result.stderr
    )
