"""A user's own CSV, labels as people write them (`?`, spaces, `/`, accents), from `workflows init` to a champion.

The path the README's "Bring your own data" section walks: `mlops workflows init NAME --from FILE
--text-col … --label-col …`, `mlops data import` (training rows, then a frozen test set), and
`mlops run` of ingest_validate and distill as real Airflow DAG runs, on a tiny random-init model.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.e2e

MLOPS = [sys.executable, "-m", "ml.cli"]
LABELS = ["what is this?", "card / lost", "Réclamation", "Bill Pay", "日本語"]
WORDS = {
    "what is this?": "question",
    "card / lost": "card",
    "Réclamation": "complaint",
    "Bill Pay": "bill",
    "日本語": "nihongo",
}


def mlops(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MLOPS, *args], env=env, capture_output=True, text=True, timeout=900)


def labelled(path: Path, per_label: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = [
        {
            "utterance": f"{WORDS[label]} {rng.choice(['please', 'now', 'help', 'today'])} {seed}-{i}",
            "intent": label,
        }
        for label in LABELS
        for i in range(per_label)
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_csv_with_awkward_labels_goes_from_init_to_a_champion(tmp_path, tiny_base_model):
    inherited = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    }
    workflows = tmp_path / "workflows.yaml"
    workflows.write_text("workflows:\n", encoding="utf-8")
    env = {
        **inherited,
        "MLOPS_STATE_DIR": str(tmp_path / "state"),
        "MLOPS_WORKFLOWS_FILE": str(workflows),
        "MLOPS_TORCH_THREADS": "1",
    }
    train, test = labelled(tmp_path / "mine.csv", 12, 1), labelled(tmp_path / "test.csv", 4, 2)

    init = mlops(
        env,
        "workflows",
        "init",
        "my_intents",
        "--from",
        str(train),
        "--text-col",
        "utterance",
        "--label-col",
        "intent",
    )
    assert init.returncode == 0, init.stderr
    # A tiny model and a lenient gate: this test is about the labels' path, not the model's quality.
    doc = yaml.safe_load(workflows.read_text(encoding="utf-8"))
    doc["workflows"]["my_intents"].update(
        base_model=str(tiny_base_model),
        latency_sla_p99_ms=5000,
        training={"max_epochs": 2, "batch_size": 8, "max_length": 16, "learning_rate": 1e-3},
        validation={"min_rows": 10, "min_per_class": 1},
        gate={"min_macro_f1": 0.0, "per_class_f1_floor": 0.0},
    )
    workflows.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")

    for args in (
        ["data", "import", str(train), "-w", "my_intents"],
        ["data", "import", str(test), "-w", "my_intents", "--as", "eval"],
    ):
        imported = mlops(env, *args)
        assert imported.returncode == 0, imported.stderr
    for stage in ("ingest_validate", "distill"):
        ran = mlops(env, "run", "-w", "my_intents", "--only", stage, "--json")
        assert ran.returncode == 0, ran.stderr[-4000:]
        assert [r["state"] for r in json.loads(ran.stdout)["dag_runs"]] == ["success"], ran.stderr[-4000:]

    listed = mlops(env, "models", "list", "-w", "my_intents", "--json")
    assert "champion" in listed.stdout, listed.stdout + listed.stderr
    shown = mlops(env, "models", "show", "1", "-w", "my_intents", "--json")
    assert shown.returncode == 0, shown.stderr
    text = json.dumps(json.loads(shown.stdout), ensure_ascii=False)
    missing = [label for label in LABELS if json.dumps(label, ensure_ascii=False)[1:-1] not in text]
    assert not missing, (
        f"labels not shown as written: {missing}"
    )  # per-class figures, not MLflow metric names
