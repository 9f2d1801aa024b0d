"""Manual approval and what the model owner sees, as real distill DAG runs (`airflow dags test`,
through `mlops run`), tiny model.

The workflow says `approval: manual` and `notify:`. While the run waits at `wait_for_approval` (a
reschedule sensor), a thread plays the model owner: once the version's wait is open in the registry
it runs `mlops models approve|reject VERSION --reason TEXT` in its own process, as a person would.
An approval is carried out by the run's own `promote` task (the CLI leaves @champion to it); a
rejection ends the run with promote skipped and the reason in the log; no decision in time fails
the run. Each event reaches a webhook and a mail receiver on 127.0.0.1. After the approved run the
owner's view is checked as MlflowClient reads it (registered, described, linked), and last, the
model's data is restored from its tags alone after the local copies are deleted. Three runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from local_receivers import SmtpReceiver, WebhookReceiver  # noqa: E402

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
    notify: {{on: [approval_waiting, promoted, rejected, approval_timed_out, run_failed],
              email: [owner@example.com], webhook: "{webhook}"}}
"""


def mlops(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MLOPS, *args], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def receivers():
    with SmtpReceiver() as smtp, WebhookReceiver() as hook:
        yield {"smtp": smtp, "hook": hook}


@pytest.fixture(scope="module")
def platform(tmp_path_factory, tiny_base_model, receivers):
    """Demo data ingested for the workflow; the env of every `mlops` child; a registry client."""
    import mlflow

    from ml import registry
    from ml.cli.lifecycle import stage_demo_data
    from ml.config import load_settings
    from ml.demo_data import LABELS
    from ml.workflows import get_workflow

    root = tmp_path_factory.mktemp("approval")
    (root / "workflows.yaml").write_text(
        WORKFLOWS.format(
            labels=json.dumps(sorted(LABELS)),
            base=tiny_base_model,
            timeout_hours=0.5,
            webhook=receivers["hook"].url,
        )
    )
    variables = {
        "MLOPS_STATE_DIR": str(root / "state"),
        "MLOPS_WORKFLOWS_FILE": str(root / "workflows.yaml"),
        "MLOPS_TORCH_THREADS": "1",
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": receivers["smtp"].port,
                "extra": {
                    "disable_ssl": True,
                    "disable_tls": True,
                    "from_email": "mlops@example.com",
                    "timeout": 10,
                    "retry_limit": 0,
                },
            }
        ),
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
        "settings": settings,
        "hook": receivers["hook"],
        "smtp": receivers["smtp"],
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


def new_notices(platform, seen: int, n: int) -> list[dict]:
    """The webhook bodies received after the first `seen`, once `n` new ones arrived (or a minute)."""
    return [h["json"] for h in platform["hook"].wait_for(seen + n)[seen:]]


def champion(platform) -> str | None:
    from ml import registry

    found = registry.version_by_alias(platform["client"], MODEL, registry.CHAMPION)
    return str(found.version) if found else None


def test_an_approval_while_the_run_waits_is_promoted_by_the_run(platform):
    owner = Owner(platform, "approve", "reviewed the confusion matrix")
    dag_run = distill_with(platform, owner)
    platform["approved"] = owner.version
    notices = new_notices(platform, 0, 2)
    assert [n["event"] for n in notices] == ["approval_waiting", "promoted"]
    waiting, promoted = notices
    assert waiting["version"] == promoted["version"] == owner.version and waiting["model"] == MODEL
    assert f"mlops models approve|reject {owner.version} --reason TEXT" in waiting["message"]
    assert promoted["run_key"].startswith(f"distill__{WF}/")
    assert sorted(m["message"]["Subject"] for m in platform["smtp"].wait_for(2)) == sorted(
        [
            f"[mlops] {MODEL} v{owner.version} waits for approval",
            f"[mlops] {MODEL} v{owner.version} is @champion",
        ]
    )
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
    seen = len(platform["hook"].received)
    owner = Owner(platform, "reject", "misroutes refunds")
    dag_run = distill_with(platform, owner)
    assert [(n["event"], n["version"]) for n in new_notices(platform, seen, 2)] == [
        ("approval_waiting", owner.version),
        ("rejected", owner.version),
    ]
    assert owner.version != before
    assert dag_run["state"] == "success"
    states = task_states(platform)
    assert (states["wait_for_approval"], states["promote"]) == ("skipped", "skipped")
    assert champion(platform) == before
    log = Path(dag_run["log"]).read_text(errors="replace")
    assert f"v{owner.version} rejected by owner-ada" in log and "misroutes refunds" in log


def test_without_a_decision_in_time_the_run_fails_saying_so(platform):
    before = champion(platform)
    seen = len(platform["hook"].received)
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
    notices = new_notices(platform, seen, 3)
    assert [n["event"] for n in notices] == ["approval_waiting", "approval_timed_out", "run_failed"]


def test_mlflow_shows_the_champion_registered_described_and_linked(platform):
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    client, version = platform["client"], platform["approved"]
    mv = client.get_model_version(MODEL, version)
    model_id = mv.source.removeprefix("models:/")
    assert model_id.startswith("m-")
    logged = client.get_logged_model(model_id)
    assert {"name": MODEL, "version": version} in json.loads(logged.tags[MLFLOW_MODEL_VERSIONS])
    text = mv.description
    assert text.startswith("**Gate:** PASSED (no champion: absolute thresholds)")
    assert text.count("threshold ") >= 3 and "`latency_sla`" in text
    assert "**Approval:** approved by owner-ada" in text and "reviewed the confusion matrix" in text
    assert "**@champion:** since " in text
    eval_version = mv.tags["eval_dataset_version"]
    on_eval = {m.key for m in logged.metrics if m.dataset_digest == eval_version}
    assert {"eval.macro_f1", "eval.served.latency_p99_ms"} <= on_eval
    # Each figure once: the model is logged at its training step, so MLflow copies no step-0 scalar
    # beside the ones linked to the evaluation set.
    assert not [m.key for m in logged.metrics if m.key.startswith("eval.") and not m.dataset_digest]
    keys = [m.key for m in logged.metrics]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    run_inputs = {i.dataset.name: i.dataset for i in client.get_run(mv.run_id).inputs.dataset_inputs}
    assert run_inputs[f"{WF}-train"].digest == mv.tags["dataset_version"]
    assert run_inputs[f"{WF}-eval"].digest == eval_version
    for dataset in run_inputs.values():
        assert json.loads(dataset.source)["uri"].startswith(str(platform["settings"].dvc_remote_url))
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "eval")}
    assert "eval/per_class.json" in artifacts
    history = [
        v for k, v in client.get_registered_model(MODEL).tags.items() if k.startswith("alias_history.")
    ]
    assert any(
        f"@champion none → v{version} (promote) by owner-ada: approved: reviewed the confusion matrix" in line
        for line in history
    )


def test_the_models_data_comes_back_from_its_tags_after_the_local_copies_are_gone(platform, tmp_path):
    """Last in this module: it deletes the workflow's local data folder."""
    shown = mlops(platform["env"], "models", "show", platform["approved"], "--workflow", WF, "--json")
    assert shown.returncode == 0, shown.stderr
    command = json.loads(shown.stdout)["data_checkout"]
    tags = json.loads(shown.stdout)["tags"]
    assert command.startswith(
        f"mlops data checkout {tags['dataset_version']} --eval {tags['eval_dataset_version']}"
    )
    data_dir = platform["settings"].data_dir / WF
    kept = {
        role: hashlib.md5((data_dir / f"{role}.parquet").read_bytes()).hexdigest()
        for role in ("train", "eval")
    }
    shutil.rmtree(data_dir)  # the data folder, its DVC cache and its log: only the remote is left
    args = command.split()[1:]
    args[args.index("--out") + 1] = str(tmp_path / "restored")
    restored = mlops(platform["env"], *args, "--json")
    assert restored.returncode == 0, restored.stderr
    for role in ("train", "eval"):
        assert hashlib.md5((tmp_path / "restored" / f"{role}.parquet").read_bytes()).hexdigest() == kept[role]
    assert kept["train"] == tags["dataset_version"]
