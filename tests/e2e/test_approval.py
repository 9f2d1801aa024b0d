"""Manual approval as real distill DAG runs (`airflow dags test`, through `mlops run`), tiny model.

The workflow says `approval: manual`. While the run waits at `wait_for_approval` (a reschedule
sensor), a thread plays the model owner: once the version's wait is open in the registry it runs
`mlops models approve|reject VERSION --reason TEXT` in its own process, as a person would. An
approval is carried out by the run's own `promote` task (the CLI leaves @champion to it); a
rejection ends the run with promote skipped and the reason in the log. Two runs, one DAG each.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MLOPS = [sys.executable, "-m", "ml.cli"]
WF = "approve_e2e"
MODEL = f"{WF}_student"
OWNER_WAITS_AT_MOST_S = 900

WORKFLOWS = """
workflows:
  approve_e2e:
    labels: {labels}
    base_model: {base}
    teacher: {{kind: call_log, model: frontier-large}}
    latency_sla_p99_ms: 5000
    monthly_calls: 3000000   # the demo's volume: below ~150k calls a month two always-on replicas cost more than the frontier, and the cost gate says so
    schedule: {{cron: null, on_new_data: true}}
    training: {{epochs: 1, batch_size: 16, max_length: 32, learning_rate: 1.0e-3, checkpoint_every: 10}}
    validation: {{min_rows: 20, min_per_class: 1}}
    gate: {{min_macro_f1: 0.0, per_class_f1_floor: 0.0, max_macro_f1_drop: 1.0, approval: manual,
            approval_timeout_hours: {timeout_hours}}}
"""


def mlops(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MLOPS, *args], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def platform(tmp_path_factory, tiny_base_model):
    """Demo data ingested for the workflow; the env of every `mlops` child; a registry client."""
    import mlflow

    from ml import registry
    from ml.cli.lifecycle import stage_demo_data
    from ml.config import load_settings
    from ml.demo_data import LABELS
    from ml.workflows import get_workflow

    root = tmp_path_factory.mktemp("approval")
    (root / "workflows.yaml").write_text(
        WORKFLOWS.format(labels=json.dumps(sorted(LABELS)), base=tiny_base_model, timeout_hours=0.5)
    )
    variables = {
        "MLOPS_STATE_DIR": str(root / "state"),
        "MLOPS_WORKFLOWS_FILE": str(root / "workflows.yaml"),
        "MLOPS_TORCH_THREADS": "1",
    }
    # An earlier test's MLFLOW_* URIs (mlflow.set_*_uri writes them into os.environ) must not reach the CLI.
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")},
        **variables,
    }
    settings = load_settings(variables)
    settings.ensure_dirs()
    stage_demo_data(
        settings,
        get_workflow(settings.workflows_file, WF),
        n_calls=200,
        n_gold=80,
        seed=0,
        echo=lambda m: None,
    )
    ingest = mlops(env, "run", "--only", "ingest_validate", "--workflow", WF, "--json")
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield {
        "env": env,
        "client": registry.configure(settings),
        "airflow_db": settings.airflow_home / "airflow.db",
        "workflows": root / "workflows.yaml",
    }
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])
    for key, value in saved.items():  # set_*_uri wrote these: leave os.environ as it was
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


class Owner(threading.Thread):
    """Decides on the version a run waits for, with the CLI, once the wait is open in the registry."""

    def __init__(self, platform, verb: str, reason: str):
        super().__init__(daemon=True)
        self.platform, self.verb, self.reason = platform, verb, reason
        self.version: str | None = None
        self.cli: subprocess.CompletedProcess | None = None
        self.seen_before: set[str] = set()

    def waiting_version(self) -> str | None:
        from mlflow.exceptions import MlflowException

        from ml import registry

        try:
            rows = registry.list_versions(self.platform["client"], MODEL)
        except MlflowException:
            return None  # nothing registered yet
        waiting = [r["version"] for r in rows if registry.is_waiting(r["approval_wait"])]
        return waiting[-1] if waiting else None

    def run(self) -> None:
        deadline = time.monotonic() + OWNER_WAITS_AT_MOST_S
        while time.monotonic() < deadline and self.version is None:
            self.version = self.waiting_version()
            time.sleep(2)
        if self.version is not None:
            self.cli = mlops(
                self.platform["env"],
                "models",
                self.verb,
                self.version,
                "--reason",
                self.reason,
                "--who",
                "owner-ada",
                "--workflow",
                WF,
                "--json",
            )


def distill_with(platform, owner: Owner) -> dict:
    owner.start()
    run = mlops(platform["env"], "run", "--only", "distill", "--workflow", WF, "--json")
    owner.join(timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    assert owner.version is not None, "the run never waited for approval"
    assert owner.cli.returncode == 0, owner.cli.stderr
    return json.loads(run.stdout)["dag_runs"][0]


def task_states(platform) -> dict[str, str]:
    """Task states of the latest distill run, from Airflow's metadata DB (a skipped task never logs)."""
    with sqlite3.connect(platform["airflow_db"]) as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (f"distill__{WF}",)
        ).fetchone()
        rows = db.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (f"distill__{WF}", run_id),
        ).fetchall()
    return dict(rows)


def champion(platform) -> str | None:
    from ml import registry

    found = registry.version_by_alias(platform["client"], MODEL, registry.CHAMPION)
    return str(found.version) if found else None


def test_an_approval_while_the_run_waits_is_promoted_by_the_run(platform):
    owner = Owner(platform, "approve", "reviewed the confusion matrix")
    dag_run = distill_with(platform, owner)
    decided = json.loads(owner.cli.stdout)
    # The CLI found the run waiting and left the move to it.
    assert decided["moved"] is False and decided["promoted_by"].startswith(f"distill__{WF}/")
    assert dag_run["state"] == "success"
    states = task_states(platform)
    assert (states["wait_for_approval"], states["promote"]) == ("success", "success")
    assert champion(platform) == owner.version
    from ml import registry

    move = registry.alias_history(platform["client"], MODEL)[-1]
    assert (move["alias"], move["from"], move["to"], move["who"], move["kind"]) == (
        "champion",
        None,
        owner.version,
        "owner-ada",
        "promote",
    )
    assert move["why"].startswith("approved: reviewed the confusion matrix")
    shown = json.loads(
        mlops(platform["env"], "models", "show", owner.version, "--workflow", WF, "--json").stdout
    )
    assert shown["approval"]["decision"] == "approved" and shown["approval_wait"]["outcome"] == "approved"
    # Lineage: its cost so far, from the ledger the cost listener booked the run's tasks in.
    assert float(shown["tags"]["cost_usd"]) > 0 and "cost ledger" in shown["tags"]["cost_scope"]


def test_a_rejection_while_the_run_waits_skips_promote_and_logs_why(platform):
    before = champion(platform)
    assert before is not None  # the test above promoted one
    owner = Owner(platform, "reject", "misroutes refunds")
    dag_run = distill_with(platform, owner)
    assert owner.version != before
    assert dag_run["state"] == "success"
    states = task_states(platform)
    assert (states["wait_for_approval"], states["promote"]) == ("skipped", "skipped")
    assert champion(platform) == before
    log = Path(dag_run["log"]).read_text(errors="replace")
    assert f"v{owner.version} rejected by owner-ada" in log and "misroutes refunds" in log


def test_without_a_decision_in_time_the_run_fails_saying_so(platform):
    before = champion(platform)
    text = platform["workflows"].read_text()
    platform["workflows"].write_text(
        text.replace("approval_timeout_hours: 0.5", "approval_timeout_hours: 0.002")
    )  # 7 s
    run = mlops(platform["env"], "run", "--only", "distill", "--workflow", WF)
    assert run.returncode != 0
    assert "nobody approved or rejected" in run.stderr and "approval_timeout_hours=0.002" in run.stderr
    states = task_states(platform)
    assert (states["wait_for_approval"], states["promote"]) == ("failed", "upstream_failed")
    assert champion(platform) == before
