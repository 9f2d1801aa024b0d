"""A `task: extraction` workflow from its call log to a served @champion, as real Airflow DAG runs.

Generated contracts (ml/demo_contracts.py) → `mlops data import` (the call log, then the gold
set as the frozen evaluation set) → `mlops run` of ingest_validate (curation, GX gate, DVC) and
distill (the token-classifier student, field F1 on the gold set, latency per document, gate with
thresholds at 0, registry) → @champion, whose pyfunc answers fields with character offsets, and
`mlops predict` on a file of documents. A tiny random-init model: this is the path, not quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MLOPS = [sys.executable, "-m", "ml.cli"]
WORKFLOW = "contracts_e2e"
WORKFLOWS = """
workflows:
  {name}:
    task: extraction
    fields: {fields}
    base_model: {base}
    teacher: {{kind: call_log, model: frontier-large}}
    latency_sla_p99_ms: 60000
    monthly_calls: 3000000
    schedule: {{cron: null, on_new_data: true}}
    training: {{max_epochs: 1, batch_size: 16, max_length: 64, learning_rate: 1.0e-3}}
    validation: {{min_rows: 10}}
    gate: {{metrics: {{field_f1_macro: {{min: 0.0}}, per_field_f1: {{min: 0.0}}}}}}
"""


def mlops(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MLOPS, *args], env=env, capture_output=True, text=True, timeout=900)


def test_an_extraction_workflow_reaches_a_champion_that_answers_with_offsets(tmp_path, tiny_base_model):
    from ml import demo_contracts

    inherited = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    }
    env = {
        **inherited,
        "MLOPS_STATE_DIR": str(tmp_path / "state"),
        "MLOPS_WORKFLOWS_FILE": str(tmp_path / "workflows.yaml"),
        "MLOPS_TORCH_THREADS": "1",
    }
    fields = list(demo_contracts.FIELDS)
    (tmp_path / "workflows.yaml").write_text(
        WORKFLOWS.format(name=WORKFLOW, fields=json.dumps(fields), base=tiny_base_model)
    )
    data = demo_contracts.generate(tmp_path / "data", n_documents=60, n_gold=16, max_pages=1, seed=7)

    for args in (
        ["data", "import", data["call_log_path"], "-w", WORKFLOW],
        ["data", "import", data["gold_path"], "-w", WORKFLOW, "--as", "eval"],
    ):
        imported = mlops(env, *args)
        assert imported.returncode == 0, imported.stderr[-3000:]
    for stage in ("ingest_validate", "distill"):
        ran = mlops(env, "run", "-w", WORKFLOW, "--only", stage, "--json")
        assert ran.returncode == 0, ran.stderr[-4000:]
        assert [r["state"] for r in json.loads(ran.stdout)["dag_runs"]] == ["success"], ran.stderr[-4000:]

    versions = json.loads(mlops(env, "models", "list", "-w", WORKFLOW, "--json").stdout)
    assert [v["version"] for v in versions] == ["1"] and "champion" in versions[0]["aliases"]
    assert versions[0]["gate"] == "passed"

    # The champion as any scoring host loads it, and the curation figures on its run.
    gold = demo_contracts.read_jsonl(data["gold_path"])
    code = (
        "import json, sys, mlflow, pandas as pd; from ml.config import load_settings; s = load_settings();"
        "mlflow.set_tracking_uri(s.mlflow_tracking_uri); c = mlflow.MlflowClient();"
        f"m = mlflow.pyfunc.load_model('models:/{WORKFLOW}_student@champion');"
        "docs = json.loads(sys.stdin.read());"
        "out = [json.loads(x) for x in m.predict(pd.DataFrame({'text': docs}))['fields']];"
        f"v = c.get_model_version('{WORKFLOW}_student', '1'); run = c.get_run(v.run_id);"
        "print(json.dumps({'fields': out, 'tags': v.tags, 'config': m.model_config,"
        " 'metrics': {k: x for k, x in run.data.metrics.items() if k.startswith(('curation.', 'eval.'))}}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([g["text"] for g in gold]),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served["config"]["task"] == "extraction" and served["tags"]["served_variant"] == "torch_fp32"
    assert served["tags"]["task"] == "extraction" and "field_f1_macro" in served["tags"]
    assert len(served["fields"]) == len(gold)
    for doc, answer in zip(gold, served["fields"]):
        assert set(answer) == set(fields)
        for span in filter(None, answer.values()):
            assert doc["text"][span["start"] : span["end"]] == span["value"]
            assert 0.0 <= span["confidence"] <= 1.0
    metrics = served["metrics"]
    ok_calls = data["n_ok"]
    assert metrics["curation.calls"] + metrics["curation.refused"] == data["n_documents"]
    assert metrics["curation.accepted"] <= ok_calls and metrics["curation.refused.call_failed"] == (
        data["n_documents"] - ok_calls
    )
    assert {"eval.field_f1_macro", "eval.exact_match_macro", "eval.latency_p99_ms"} <= set(metrics)
    assert {f"eval.per_field_f1.{f}" for f in fields} <= set(metrics)

    documents = tmp_path / "documents.jsonl"
    documents.write_text("".join(json.dumps({"text": g["text"]}) + "\n" for g in gold[:3]))
    predicted = mlops(env, "predict", str(documents), "-w", WORKFLOW, "--json")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    out = [json.loads(line) for line in Path(json.loads(predicted.stdout)["out"]).read_text().splitlines()]
    assert [set(json.loads(row["fields"])) for row in out] == [set(fields)] * 3
