"""What a model owner gets from one real distill run (`mlops run`, `airflow dags test`, tiny model):
the notices (webhook and mail to receivers on 127.0.0.1), the registry as MlflowClient reads it,
and the model's data restored from its tags alone after the local copies are deleted.

The workflow says `approval: manual` and `notify:`; a thread approves with the CLI once the wait
is open, as a person would. One run, a few minutes on a busy 2-core host.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
WF = "owner_e2e"
MODEL = f"{WF}_student"

WORKFLOWS = """
workflows:
  owner_e2e:
    labels: {labels}
    base_model: {base}
    teacher: {{kind: call_log, model: frontier-large}}
    latency_sla_p99_ms: 5000
    monthly_calls: 3000000   # the demo's volume, so the cost check passes
    schedule: {{cron: null, on_new_data: true}}
    training: {{epochs: 1, batch_size: 16, max_length: 32, learning_rate: 1.0e-3, checkpoint_every: 10}}
    validation: {{min_rows: 20, min_per_class: 1}}
    gate: {{min_macro_f1: 0.0, per_class_f1_floor: 0.0, max_macro_f1_drop: 1.0, approval: manual,
            approval_timeout_hours: 0.5}}
    notify: {{on: [approval_waiting, promoted, run_failed], email: [owner@example.com], webhook: "{webhook}"}}
"""


def mlops(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MLOPS, *args], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_base_model):
    import mlflow

    from ml import registry
    from ml.cli.lifecycle import stage_demo_data
    from ml.config import load_settings
    from ml.demo_data import LABELS
    from ml.workflows import get_workflow

    root = tmp_path_factory.mktemp("owner")
    with SmtpReceiver() as smtp, WebhookReceiver() as hook:
        (root / "workflows.yaml").write_text(
            WORKFLOWS.format(labels=json.dumps(sorted(LABELS)), base=tiny_base_model, webhook=hook.url)
        )
        variables = {
            "MLOPS_STATE_DIR": str(root / "state"),
            "MLOPS_WORKFLOWS_FILE": str(root / "workflows.yaml"),
            "MLOPS_TORCH_THREADS": "1",
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp.port,
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
        env = {
            **{
                k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
            },
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
        client = registry.configure(settings)

        approved = {}

        def owner():  # approves once the run waits, with the CLI
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                try:
                    rows = registry.list_versions(client, MODEL)
                except Exception:  # noqa: BLE001 - nothing registered yet
                    rows = []
                waiting = [r["version"] for r in rows if registry.is_waiting(r["approval_wait"])]
                if waiting:
                    approved["cli"] = mlops(
                        env,
                        "models",
                        "approve",
                        waiting[-1],
                        "--reason",
                        "checked the matrix",
                        "--who",
                        "owner-ada",
                        "--workflow",
                        WF,
                        "--json",
                    )
                    return
                time.sleep(2)

        thread = threading.Thread(target=owner, daemon=True)
        thread.start()
        distill = mlops(env, "run", "--only", "distill", "--workflow", WF, "--json")
        thread.join(timeout=60)
        notices = [h["json"] for h in hook.wait_for(2)]
        mails = smtp.wait_for(2)
    assert distill.returncode == 0, distill.stderr[-3000:]
    assert approved["cli"].returncode == 0, approved["cli"].stderr
    version = registry.version_by_alias(client, MODEL, registry.CHAMPION)
    yield {
        "env": env,
        "client": client,
        "settings": settings,
        "version": str(version.version),
        "notices": notices,
        "mails": mails,
        "root": root,
    }
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_the_owner_is_told_when_the_version_waits_and_when_it_is_promoted(run):
    events = [n["event"] for n in run["notices"]]
    assert events == ["approval_waiting", "promoted"]
    waiting, promoted = run["notices"]
    assert waiting["version"] == promoted["version"] == run["version"] and waiting["model"] == MODEL
    assert f"mlops models approve|reject {run['version']} --reason TEXT" in waiting["message"]
    assert promoted["run_key"].startswith(f"distill__{WF}/")
    assert sorted(m["message"]["Subject"] for m in run["mails"]) == sorted(
        [
            f"[mlops] {MODEL} v{run['version']} waits for approval",
            f"[mlops] {MODEL} v{run['version']} is @champion",
        ]
    )


def test_mlflow_shows_the_champion_registered_described_and_linked(run):
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    client, version = run["client"], run["version"]
    mv = client.get_model_version(MODEL, version)
    model_id = mv.source.removeprefix("models:/")
    assert model_id.startswith("m-")
    logged = client.get_logged_model(model_id)
    assert {"name": MODEL, "version": version} in json.loads(logged.tags[MLFLOW_MODEL_VERSIONS])
    text = mv.description
    assert text.startswith("**Gate:** PASSED (no champion: absolute thresholds)")
    assert text.count("threshold ") >= 3 and "`latency_sla`" in text
    assert "**Approval:** approved by owner-ada" in text and "checked the matrix" in text
    assert "**@champion:** since " in text
    eval_version = mv.tags["eval_dataset_version"]
    on_eval = {m.key for m in logged.metrics if m.dataset_digest == eval_version}
    assert {"eval.macro_f1", "eval.served.latency_p99_ms"} <= on_eval
    run_inputs = {i.dataset.name: i.dataset for i in client.get_run(mv.run_id).inputs.dataset_inputs}
    assert run_inputs[f"{WF}-train"].digest == mv.tags["dataset_version"]
    assert run_inputs[f"{WF}-eval"].digest == eval_version
    for dataset in run_inputs.values():
        assert json.loads(dataset.source)["uri"].startswith(str(run["settings"].dvc_remote_url))
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "eval")}
    assert "eval/per_class.json" in artifacts
    history = [
        v for k, v in client.get_registered_model(MODEL).tags.items() if k.startswith("alias_history.")
    ]
    assert any(
        f"@champion none → v{version} (promote) by owner-ada: approved: checked the matrix" in line
        for line in history
    )


def test_the_models_data_comes_back_from_its_tags_after_the_local_copies_are_gone(run, tmp_path):
    shown = mlops(run["env"], "models", "show", run["version"], "--workflow", WF, "--json")
    assert shown.returncode == 0, shown.stderr
    command = json.loads(shown.stdout)["data_checkout"]
    tags = json.loads(shown.stdout)["tags"]
    assert command.startswith(
        f"mlops data checkout {tags['dataset_version']} --eval {tags['eval_dataset_version']}"
    )
    data_dir = run["settings"].data_dir / WF
    kept = {
        role: hashlib.md5((data_dir / f"{role}.parquet").read_bytes()).hexdigest()
        for role in ("train", "eval")
    }
    shutil.rmtree(data_dir)  # the data folder, its DVC cache and its log: only the remote is left
    args = command.split()[1:]
    args[args.index("--out") + 1] = str(tmp_path / "restored")
    restored = mlops(run["env"], *args, "--json")
    assert restored.returncode == 0, restored.stderr
    for role in ("train", "eval"):
        assert hashlib.md5((tmp_path / "restored" / f"{role}.parquet").read_bytes()).hexdigest() == kept[role]
    assert kept["train"] == tags["dataset_version"]
