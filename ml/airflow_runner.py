"""Run Airflow as a subprocess with the platform's environment.

`ml` never imports airflow: it sets the environment (AIRFLOW_HOME in the state folder, this
repository's dags/ and plugins/, no examples) and calls the `airflow` command that the install
put next to this Python. `airflow dags test` runs a real DAG run in one process (dag.test()).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from ml.config import Settings


class AirflowRunError(RuntimeError):
    """An Airflow command or DAG run failed; the message names the DAG and where its log is."""


def airflow_env(settings: Settings) -> dict[str, str]:
    env = {
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.project_dir / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.project_dir / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Transformers and MLflow must never reach for a model hub from a task.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
    }
    # Production overrides (PostgreSQL metadata DB, Celery) come from the caller's environment.
    return {**env, **{k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__")}}


def airflow_bin() -> str:
    local = Path(sys.executable).parent / "airflow"
    return str(local) if local.exists() else (shutil.which("airflow") or "airflow")


def run_airflow(settings: Settings, args: list[str], *, log_path: Path | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, **airflow_env(settings)}
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    if log_path is None:
        return subprocess.run([airflow_bin(), *args], env=env, check=check)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.run([airflow_bin(), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    if check and proc.returncode != 0:
        raise AirflowRunError(f"`airflow {' '.join(args)}` exited {proc.returncode}; see {log_path}.")
    return proc


def migrate(settings: Settings) -> None:
    """Create or upgrade Airflow's metadata database (idempotent, a few seconds)."""
    run_airflow(settings, ["db", "migrate"], log_path=settings.airflow_home / "logs" / "db_migrate.log")


_FINAL = re.compile(r"DagRun Finished: dag_id=(?P<dag>\S+?), .*? state=(?P<state>\w+)")


def test_dag(settings: Settings, dag_id: str, *, echo=print) -> dict:
    """One real DAG run through `airflow dags test`; raises unless the run ends in success."""
    log_path = settings.airflow_home / "logs" / "dags_test" / f"{dag_id}.log"
    echo(f"→ airflow dags test {dag_id}  (log: {log_path})")
    proc = run_airflow(settings, ["dags", "test", dag_id], log_path=log_path, check=False)
    text = log_path.read_text(errors="replace")
    states = [m.group("state") for m in _FINAL.finditer(text)]
    state = states[-1] if states else "unknown"
    tasks = _task_states(text)
    if proc.returncode != 0 or state != "success":
        failed = [t for t, s in tasks.items() if s == "failed"]
        reason = _first_error(text)
        raise AirflowRunError(f"DAG {dag_id} ended {state} (exit {proc.returncode}); failed tasks: {failed or '?'}"
                              f"{'; ' + reason if reason else ''}. Full log: {log_path}")
    return {"dag_id": dag_id, "state": state, "tasks": tasks, "log": str(log_path)}


def _task_states(text: str) -> dict[str, str]:
    """task_id → the state of its last try, read off the `dags test` log in order."""
    states: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        started = re.search(r"\[DAG TEST\] starting task_id=(\S+)", line)
        if started:
            current = started.group(1)
        updated = re.search(r"new_state=(\w+)", line)
        if current and updated:
            states[current] = updated.group(1)
    return states


def _first_error(text: str) -> str:
    # The exception line of the last traceback names the problem and the fix.
    found = re.findall(r"^(?:[\w.]*(?:Exception|Error|Rejected)): .+$", text, flags=re.MULTILINE)
    return found[-1][:400] if found else ""
