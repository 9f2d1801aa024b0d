"""The whole lifecycle as real Airflow DAG runs, on a tiny random-init model.

The same command a data engineer runs (`mlops demo`) drives it: demo data → GX gate → DVC →
distillation → MLflow registry → gate → @champion (`airflow dags test`); then the teacher updates
and a real scheduler (ml/airflow_stack.py) re-distils from the upstream Asset event → cost ledger.
Then a run with a gate the new version cannot pass shows @champion does not move, and a bad
batch is quarantined.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MLOPS = [sys.executable, "-m", "ml.cli"]

WORKFLOWS = """
workflows:
  tickets_e2e:
    description: end-to-end test workflow
    labels: {labels}
    base_model: {base}
    teacher: {{kind: call_log, model: frontier-large}}
    latency_sla_p99_ms: 5000
    monthly_calls: 3000000   # the demo's volume: below ~150k calls a month two always-on replicas cost more than the frontier, and the cost gate says so
    schedule: {{cron: null, on_new_data: true}}
    training: {{epochs: 1, batch_size: 16, max_length: 32, learning_rate: 1.0e-3, checkpoint_every: 10}}
    validation: {{min_rows: 20, min_per_class: 1}}
    gate: {{min_macro_f1: {min_f1}, per_class_f1_floor: 0.0, max_macro_f1_drop: 1.0}}
"""


def write_workflows(path: Path, base: Path, min_f1: float) -> None:
    from ml.demo_data import LABELS

    path.write_text(WORKFLOWS.format(labels=json.dumps(sorted(LABELS)), base=base, min_f1=min_f1))


def mlops(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MLOPS, *args], env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def platform(tmp_path_factory, tiny_base_model):
    root = tmp_path_factory.mktemp("e2e")
    # mlflow.set_tracking_uri/set_registry_uri write MLFLOW_* variables into os.environ: an earlier test's
    # registry must not reach these subprocesses (the platform's own settings name the registry).
    inherited = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    }
    env = {
        **inherited,
        "MLOPS_STATE_DIR": str(root / "state"),
        "MLOPS_WORKFLOWS_FILE": str(root / "workflows.yaml"),
        "MLOPS_TORCH_THREADS": "1",
    }  # a tiny model is slower with two threads fighting over two cores
    write_workflows(root / "workflows.yaml", tiny_base_model, min_f1=0.0)
    first = mlops(env, "demo", "--n-calls", "300", "--n-gold", "120", "--json")
    assert first.returncode == 0, first.stderr[-4000:] + first.stdout[-2000:]
    return root, env, json.loads(first.stdout)


def test_demo_ends_with_a_champion(platform):
    _, env, result = platform
    assert result["champion"] == "2"  # v1 from the first data, v2 re-distilled after the teacher update
    assert result["model_uri"] == "models:/tickets_e2e_student@champion"
    assert [r["state"] for r in result["dag_runs"]] == ["success"] * 4


def test_the_teacher_update_re_distils_through_the_asset_and_is_booked_as_keeping_current(platform):
    _, env, result = platform
    kept = result["keep_current"]
    assert kept["shown"] and kept["run_id"].startswith("asset_triggered__"), kept
    assert kept["probe"]["compared_with"] == "old teacher" and kept["probe"]["disagreement"] > 0.02
    assert kept["challenger"] == "2" and kept["promoted"] and kept["gate"]["passed"]
    assert set(kept["tasks"].values()) == {"success"}
    entries = json.loads(mlops(env, "costs", "entries", "--json").stdout)
    run_entries = [
        e
        for e in entries
        if e["source_kind"] == "task" and e["source"].startswith(f"distill__tickets_e2e/{kept['run_id']}/")
    ]
    assert {e["source"].split("/")[2] for e in run_entries} == set(kept["tasks"])  # every task of the run
    assert {e["category"] for e in run_entries} == {"keeping_current"}
    assert float(kept["booked"]["keeping_current"]) > 0
    shown = json.loads(mlops(env, "models", "show", "2", "--json").stdout)
    assert "2026-11-15" in shown["tags"]["teacher"]  # v2 learned the new teacher


def test_champion_serves_through_mlflow_pyfunc(platform):
    root, env, _ = platform
    code = (
        "import mlflow, pandas as pd; from ml.config import load_settings; s = load_settings();"
        "mlflow.set_tracking_uri(s.mlflow_tracking_uri);"
        "m = mlflow.pyfunc.load_model('models:/tickets_e2e_student@champion');"
        "print(m.predict(pd.DataFrame({'text': ['I was charged twice', 'where is my parcel']})).to_json())"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"label", "score", "probs"} and len(out["label"]) == 2


def test_lineage_tags_lead_back_to_the_data(platform):
    _, env, _ = platform
    versions = json.loads(mlops(env, "data", "versions", "--json").stdout)
    train_versions = [v["version"] for v in versions if v["role"] == "train"]
    assert len(train_versions) == 2  # the first call log, then the new teacher's
    for model_version, data_version in (("1", train_versions[0]), ("2", train_versions[1])):
        shown = json.loads(mlops(env, "models", "show", model_version, "--json").stdout)
        assert shown["tags"]["dataset_version"] == data_version
        assert shown["tags"]["base_fingerprint"] and shown["tags"]["git_sha"]
        assert shown["gate"]["passed"] is True


def test_every_task_is_booked_in_the_ledger(platform):
    _, env, _ = platform
    report = mlops(env, "costs", "entries", "--json")
    assert report.returncode == 0, report.stderr
    sources = {e["source"].split("/")[0] for e in json.loads(report.stdout) if e["source_kind"] == "task"}
    assert {"ingest_validate__tickets_e2e", "distill__tickets_e2e"} <= sources


def test_a_version_that_fails_the_gate_never_becomes_champion(platform):
    root, env, _ = platform
    write_workflows(root / "workflows.yaml", Path(_base(root)), min_f1=0.999)
    run = mlops(env, "run", "--only", "distill", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    versions = json.loads(mlops(env, "models", "list", "--json").stdout)
    assert [v["version"] for v in versions] == ["1", "2", "3"]
    assert "champion" in versions[1]["aliases"] and "champion" not in versions[2]["aliases"]
    assert versions[2]["gate"] == "failed"


def test_a_bad_batch_is_quarantined_byte_for_byte(platform):
    root, env, _ = platform
    bad = root / "bad.csv"
    bad.write_text("text,label\n" + "".join(f"ticket {i},not_a_label\n" for i in range(30)))
    digest = hashlib.sha256(bad.read_bytes()).hexdigest()
    assert mlops(env, "data", "import", str(bad)).returncode == 0
    run = mlops(env, "run", "--only", "ingest_validate")
    assert run.returncode == 1
    assert "ingest_validate__tickets_e2e" in run.stderr
    listed = json.loads(mlops(env, "data", "quarantine", "list", "--json").stdout)
    assert len(listed) == 1
    shown = json.loads(mlops(env, "data", "quarantine", "show", listed[0]["id"], "--json").stdout)
    stored = Path(shown["path"]) if "path" in shown else None
    assert "not_a_label" in json.dumps(shown["report"])
    if stored is not None:
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == digest


def _base(root: Path) -> str:
    import yaml

    return yaml.safe_load((root / "workflows.yaml").read_text())["workflows"]["tickets_e2e"]["base_model"]


def test_cost_report_gives_a_verdict_from_the_ledger(platform):
    root, env, _ = platform
    report = mlops(env, "costs", "report", "--json")
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["verdict"].startswith(("post-training pays from month", "stay on the frontier API"))
    # Every category is shown; frontier_api and serving are priced per call, never counted as MLOps spend.
    assert (
        "frontier_api" in data["ledger_totals_usd"]
        and "frontier_api" not in data["basis"]["recurring_categories"]
    )
    assert float(data["serving"]["usd_per_month"]) >= float(data["serving"]["floor_usd_per_month"]) > 0
    assert float(data["ledger_totals_usd"]["training_compute"]) > 0
    reports = root / "state" / "reports" / "tickets_e2e"
    assert "<img" in (reports / "breakeven.html").read_text()
    header = (reports / "costs_focus.csv").read_text().splitlines()[0].split(",")
    assert {
        "BilledCost",
        "EffectiveCost",
        "ChargeCategory",
        "ChargePeriodStart",
        "ServiceName",
        "ResourceId",
    } <= set(header)


def test_demo_runs_again_without_clean_up(platform):
    # Last on purpose: a second `mlops demo` on the same state re-runs every DAG (cost_report too).
    _, env, _ = platform
    again = mlops(env, "demo", "--n-calls", "300", "--n-gold", "120", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads(again.stdout)
    assert result["champion"] == "2"  # the gate is at 0.999 since the test above: v4 is kept out
    assert [r["state"] for r in result["dag_runs"]] == ["success"] * 4
    assert result["keep_current"] == {"shown": False, "reason": "already shown on this state folder"}
