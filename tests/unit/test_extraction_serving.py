"""The served extraction model: fields with character offsets, bad documents refused by name.

A tiny random tagger whose head is biased to tag every token B-party_a, so each answer is a
real span: its offsets must slice the document to its value. Then the same model logged as the
MLflow pyfunc (ml/serving_extractor.py), registered as @champion in a SQLite registry, served
over HTTP (`{"documents": [...]}`, 400 with a named reason for bad documents) and batch-scored.
"""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from ml import registry
from ml.config import load_settings
from ml.tasks import extraction as ex
from ml.workflows import load_workflows

FIELDS = ["party_a", "party_b"]
DOCS = [
    "This Services Agreement is made between Acme Widgets Inc. and Beta Logistics LLC.",
    "Effective 3 March 2026, Gamma Ltd agrees to supply Delta GmbH.\n\nSigned: Gamma Ltd",
]
WORKFLOWS = """
workflows:
  contracts_unit:
    task: extraction
    fields: [party_a, party_b]
    teacher: {kind: call_log, model: frontier-large}
    training: {max_length: 32}
    gate: {metrics: {field_f1_macro: {min: 0.0}}}
"""


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory, tiny_base_model):
    import torch

    model, tokenizer = ex.build_student(tiny_base_model, FIELDS)
    target = ex.label_names(FIELDS).index("B-party_a")
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.fill_(-5.0)
        model.classifier.bias[target] = 5.0
    out = tmp_path_factory.mktemp("tagger")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def answers(frame: pd.DataFrame) -> list[dict]:
    return [json.loads(x) for x in frame["fields"]]


def assert_offsets_slice(documents, found):
    assert len(found) == len(documents)
    for doc, fields in zip(documents, found):
        assert set(fields) == set(FIELDS)
        assert fields["party_b"] is None
        span = fields["party_a"]
        assert doc[span["start"] : span["end"]] == span["value"] and span["value"].strip()
        assert 0.5 < span["confidence"] <= 1.0


def test_served_fields_carry_offsets_that_slice_the_document(tagger_dir):
    from ml.serving_extractor import StudentExtractor

    served = StudentExtractor()
    served.load(tagger_dir, max_length=32, stride=ex.stride_for(32))
    assert served.fields == FIELDS
    by_dict = answers(served.predict(None, {"documents": DOCS}))
    by_frame = answers(served.predict(None, pd.DataFrame({"text": DOCS})))
    assert by_dict == by_frame
    assert_offsets_slice(DOCS, by_dict)


@pytest.mark.parametrize(
    ("documents", "reason"),
    [
        (["a contract", "   "], "empty_document"),
        (["x" * (ex.MAX_DOCUMENT_BYTES + 1)], "document_too_large"),
        (["é" * (ex.MAX_DOCUMENT_BYTES // 2 + 1)], "document_too_large"),  # bytes, not characters
        ([7], "not_a_string"),
        ("one contract", "not_a_list"),
    ],
)
def test_bad_documents_are_refused_by_name(documents, reason):
    with pytest.raises(ex.BadDocument) as raised:
        ex.check_documents(documents)
    assert raised.value.reason == reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"texts": ["a"]}, "no_documents"),
        ([1, 2], "no_documents"),
        ({"documents": []}, "no_documents"),
        ({"documents": ["a"] * 5}, "too_many_documents"),
        ({"documents": ["a", ""]}, "empty_document"),
    ],
)
def test_http_bodies_are_refused_by_name(body, reason):
    from ml.serve import parse_documents

    with pytest.raises(ex.BadDocument) as raised:
        parse_documents(body, max_batch=4)
    assert raised.value.reason == reason


def test_fields_are_read_back_from_the_tagger_config():
    names = ex.label_names(FIELDS)
    assert ex.fields_of({str(i): n for i, n in enumerate(names)}) == FIELDS
    with pytest.raises(ValueError, match="not an extraction tagger"):
        ex.fields_of({"0": "billing", "1": "refund"})


def test_gold_answers_from_values_or_field_columns():
    values = pd.DataFrame({"text": ["t"], "values": [json.dumps({"party_a": "Acme", "party_b": None})]})
    columns = pd.DataFrame({"text": ["t"], "party_a": ["Acme"], "party_b": [""]})
    expected = [{"party_a": "Acme", "party_b": None}]
    assert ex.gold_answers(values, FIELDS) == ex.gold_answers(columns, FIELDS) == expected
    with pytest.raises(ValueError, match="needs text and `values`"):
        ex.gold_answers(pd.DataFrame({"text": ["t"]}), FIELDS)


@pytest.fixture(scope="module")
def champion(tmp_path_factory, tagger_dir):
    """The tagger logged as the served pyfunc, registered, @champion, in a fresh SQLite registry."""
    from ml.export import log_served_extractor

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    state = tmp_path_factory.mktemp("state")
    (state / "workflows.yaml").write_text(WORKFLOWS)
    settings = load_settings({"MLOPS_STATE_DIR": str(state), "MLOPS_TORCH_THREADS": "1"})
    settings.ensure_dirs()
    wf = load_workflows(state / "workflows.yaml")["contracts_unit"]
    client = registry.configure(settings)
    experiment_id = registry.ensure_experiment(settings, wf.name)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = log_served_extractor("torch_fp32", tagger_dir, tagger_dir, max_length=wf.training.max_length)
    version = registry.register(
        client,
        wf.model_name,
        info.model_uri,
        run.info.run_id,
        idempotency_key="unit",
        tags={"task": "extraction"},
    )
    registry.move_alias(client, wf.model_name, registry.CHAMPION, version, expected_from=None, why="test")
    yield settings, wf, version
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


def test_the_registered_pyfunc_answers_with_offsets(champion):
    _, wf, version = champion
    model = mlflow.pyfunc.load_model(f"models:/{wf.model_name}@champion")
    assert model.model_config["task"] == "extraction" and model.model_config["stride"] == 8
    assert_offsets_slice(DOCS, answers(model.predict(pd.DataFrame({"text": DOCS}))))
    assert_offsets_slice(DOCS, answers(model.unwrap_python_model().predict(None, {"documents": DOCS})))


def test_http_documents_in_fields_out_and_bad_documents_get_400(champion):
    from ml.serve import create_app

    settings, wf, version = champion
    with TestClient(create_app(settings, wf, max_batch=4)) as http:
        ok = http.post("/predict", json={"documents": DOCS})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["model_version"] == version and body["served_variant"] == "torch_fp32"
        assert_offsets_slice(DOCS, [d["fields"] for d in body["documents"]])
        for documents, reason in (
            (["a contract", ""], "empty_document"),
            (["x" * (ex.MAX_DOCUMENT_BYTES + 1)], "document_too_large"),
            (None, "no_documents"),
        ):
            bad = http.post("/predict", json={"documents": documents} if documents else {"texts": ["a"]})
            assert bad.status_code == 400 and bad.json()["reason"] == reason, bad.text


def test_batch_scoring_writes_the_fields_column(champion, tmp_path):
    from ml.serve import predict_file

    settings, wf, version = champion
    source = tmp_path / "contracts.jsonl"
    pd.DataFrame({"text": DOCS}).to_json(source, orient="records", lines=True)
    summary = predict_file(settings, wf, source)
    assert summary["model_version"] == version and summary["rows"] == len(DOCS)
    scored = pd.read_json(summary["out"], lines=True, dtype=False)
    assert_offsets_slice(DOCS, answers(scored))


def test_batch_scoring_refuses_an_empty_document_by_name(champion, tmp_path):
    from ml.serve import predict_file

    settings, wf, _ = champion
    source = tmp_path / "contracts.jsonl"
    pd.DataFrame({"text": [DOCS[0], "   "]}).to_json(source, orient="records", lines=True)
    with pytest.raises(ex.BadDocument, match=r"empty_document: text\[1\] is empty"):
        predict_file(settings, wf, source)
    assert not (tmp_path / "contracts.predictions.jsonl").exists()
