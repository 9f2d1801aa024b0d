"""distill's prepare_targets for an extraction workflow: what it trains on and what it refuses.

The training set as ingest_validate stores it (document_id, text, values JSON, source,
teacher_version) in a real DatasetStore folder, a real SQLite MLflow for the refusal counts.
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest

from ml import registry
from ml.config import load_settings
from ml.pipeline import distill, distill_extraction
from ml.pipeline.ingest_validate import store_for
from ml.workflows import load_workflows

WORKFLOWS = """
workflows:
  contracts_unit:
    task: extraction
    fields: [party_a, effective_date]
    teacher: {kind: call_log, model: frontier-large}
    gate: {metrics: {field_f1_macro: {min: 0.0}}}
"""
TEXT_A = "This Agreement between Acme Inc. and Beta LLC is effective 1 May 2026."
TEXT_B = "Gamma Ltd agrees to supply Delta GmbH from 3 March 2026."
TEXT_C = "Epsilon BV and Zeta AG agree as follows."


def answer(party_a, date) -> str:
    return json.dumps({"party_a": party_a, "effective_date": date})


@pytest.fixture
def state(tmp_path, monkeypatch):
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    (tmp_path / "workflows.yaml").write_text(WORKFLOWS)
    # Steps that read the settings themselves (redistill.relabel_for_current_teacher) find the same ones.
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(tmp_path / "workflows.yaml"))
    settings = load_settings(
        {"MLOPS_STATE_DIR": str(tmp_path / "state"), "MLOPS_WORKFLOWS_FILE": str(tmp_path / "workflows.yaml")}
    )
    settings.ensure_dirs()
    wf = load_workflows(tmp_path / "workflows.yaml")["contracts_unit"]
    yield settings, wf
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


def place_training_set(settings, wf, rows: list[dict], refused: list[dict]) -> None:
    """The files ingest_validate leaves: train.parquet, refused.parquet and the version log."""
    store = store_for(settings, wf)
    store.root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([{"source": "teacher", **row} for row in rows]).to_parquet(store.path("train"), index=False)
    pd.DataFrame(refused).to_parquet(store.root / "refused.parquet", index=False)
    store.log_path.write_text(json.dumps({"version": "0" * 32, "role": "train", "batch_sha256": "x"}) + "\n")


def test_the_latest_answer_of_a_document_is_trained_on_and_every_refusal_is_counted(state):
    settings, wf = state
    rows = [
        {
            "document_id": "a",
            "text": TEXT_A,
            "values": answer("Beta LLC", "1 May 2026"),
            "teacher_version": "v1",
        },
        {
            "document_id": "b",
            "text": TEXT_B,
            "values": answer("Gamma Ltd", "3 March 2026"),
            "teacher_version": "v1",
        },
        # The newer teacher answers document a again: only this answer is trained on.
        {
            "document_id": "a",
            "text": TEXT_A,
            "values": answer("Acme Inc.", "1 May 2026"),
            "teacher_version": "v2",
        },
        # A value that is not in the document: refused here as at ingest.
        {
            "document_id": "c",
            "text": TEXT_C,
            "values": answer("Omega SA", None),
            "teacher_version": "v2",
        },
    ]
    refused_at_ingest = [
        {"document_id": "d", "reason": "not_json"},
        {"document_id": "e", "reason": "call_failed"},
    ]
    place_training_set(settings, wf, rows, refused_at_ingest)

    ref = distill_extraction.prepare_targets(settings, wf, "distill__contracts_unit/run-1")

    meta = json.loads(open(ref["targets"]).read())
    assert [t["row"] for t in meta["targets"]] == [1, 2]
    assert meta["targets"][1]["answer"] == {"party_a": "Acme Inc.", "effective_date": "1 May 2026"}
    assert meta["replaced_by_a_later_answer"] == 1 and meta["teacher"]["version"] == "v1,v2"
    assert {k: v for k, v in meta["refused"].items() if v} == {
        "value_not_in_document": 1,
        "not_json": 1,
        "call_failed": 1,
    }
    assert ref["n_train"] == 2 and ref["n_refused"] == 3
    client = registry.configure(settings)
    run = client.search_runs(
        [registry.ensure_experiment(settings, wf.name)],
        "tags.airflow_run_key = 'distill__contracts_unit/run-1'",
    )[0]
    metrics = run.data.metrics
    assert metrics["curation.refused.value_not_in_document"] == 1 and metrics["curation.teacher_errors"] == 2
    assert metrics["curation.accepted"] == 2 and metrics["curation.refused.call_failed"] == 1


def test_distill_hands_an_extraction_workflow_to_its_steps(state, monkeypatch):
    settings, wf = state
    seen = []
    for step in ("prepare_targets", "train", "evaluate_and_gate"):
        monkeypatch.setattr(
            distill_extraction, step, lambda *a, step=step: seen.append((step, a[1].name)) or {}
        )
    distill.prepare_targets(wf.name, "k")
    distill.train(wf.name, "k", {})
    distill.evaluate_and_gate(wf.name, "k", {})
    assert seen == [(s, wf.name) for s in ("prepare_targets", "train", "evaluate_and_gate")]


def test_an_extraction_teacher_must_be_the_call_log(state):
    import dataclasses

    from ml.workflows import ConfigurationError

    settings, wf = state
    other = dataclasses.replace(wf, teacher=dataclasses.replace(wf.teacher, kind="labels"))
    with pytest.raises(ConfigurationError, match="teacher: {kind: call_log}"):
        distill_extraction.prepare_targets(settings, other, "k")


def test_an_extraction_workflow_asking_for_an_onnx_variant_is_told_what_is_served(state):
    import dataclasses

    from ml.workflows import ConfigurationError

    settings, wf = state
    onnx = dataclasses.replace(wf, serving=dataclasses.replace(wf.serving, variants=("onnx_int8",)))
    with pytest.raises(ConfigurationError, match=r"served as torch_fp32 only"):
        distill_extraction.evaluate_and_gate(settings, onnx, "k", {})
