"""ingest_validate for an extraction workflow (issue 18): the DAG's step functions, as its tasks call
them, on generated contracts. A call log and a gold set become a DVC-versioned dataset; a batch
the gate fails (an empty document, a 2 MB document, a missing column) is quarantined byte for
byte with a named reason; a refused teacher answer is counted by reason and kept beside the data,
never in what training reads."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ml.data.ingest import sha256_file
from ml.demo_contracts import FIELDS, generate, read_jsonl
from ml.tasks import extraction

WF = "contracts"
WORKFLOWS = f"""
workflows:
  {WF}:
    task: extraction
    fields: [{", ".join(FIELDS)}]
    teacher: {{kind: call_log, model: frontier-large}}
    validation: {{min_rows: 10, max_duplicate_ratio: 0.2}}
"""


@pytest.fixture
def state(tmp_path, monkeypatch):
    """(settings, workflow, drop folder, generated files) in a state folder of the test's own."""
    workflows = tmp_path / "workflows.yaml"
    workflows.write_text(WORKFLOWS)
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(workflows))
    from ml.config import load_settings
    from ml.pipeline.ingest_validate import drop_dir_for
    from ml.workflows import get_workflow

    settings = load_settings()
    settings.ensure_dirs()
    wf = get_workflow(settings.workflows_file, WF)
    generated = generate(tmp_path / "gen", n_documents=40, n_gold=12, seed=7, max_pages=1, workflow=WF)
    return settings, wf, drop_dir_for(settings, wf), generated


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def with_bad_answers(rows: list[dict]) -> tuple[list[dict], dict[str, str]]:
    """The call log with one answer of each kind curation refuses; {reason: the document's id}."""
    rows = [dict(r) for r in rows]
    ok = [r for r in rows if r["status"] == "ok" and extraction.curate([r], FIELDS)[1] == []]
    planted = {}

    def plant(reason: str, row: dict, answer) -> None:
        row["response_json"] = answer if isinstance(answer, str) else json.dumps(answer)
        planted[reason] = row["document_id"]

    values = [json.loads(r["response_json"]) for r in ok[:4]]
    plant("not_json", ok[0], '{"party_a": "Acme')  # truncated
    plant("undeclared_field", ok[1], {**values[1], "contract_type": "Supply Agreement"})
    plant("value_not_in_document", ok[2], {**values[2], "governing_law": "the Moon"})
    plant("overlapping_spans", ok[3], {**values[3], "party_b": values[3]["party_a"]})
    return rows, planted


def test_a_call_log_and_a_gold_set_become_a_versioned_dataset_and_refusals_are_kept(state):
    from ml.pipeline.ingest_validate import (
        dataset_summary,
        ingest_batch,
        label_set,
        list_new_batches,
        publish_if_changed,
        store_for,
    )

    settings, wf, drop, generated = state
    calls, planted = with_bad_answers(read_jsonl(generated["call_log_path"]))
    log = write_jsonl(drop / "call_log.jsonl", calls)
    raw_sha = sha256_file(log)
    (drop / "eval" / "gold.jsonl").write_bytes(Path(generated["gold_path"]).read_bytes())
    expected_accepted, expected_refused = extraction.curate(calls, FIELDS)

    assert list_new_batches(WF, echo=lambda m: None) == ["eval/gold.jsonl", "call_log.jsonl"]
    gold = ingest_batch(WF, "eval/gold.jsonl")
    assert gold["role"] == "eval" and gold["rows"] == 12 and gold["refused"] == 0
    result = ingest_batch(WF, "call_log.jsonl")

    # every row is accepted or refused, refusals counted by reason, teacher errors among them
    counts = result["stats"]["refusals"]
    assert {reason: counts.get(reason, 0) > 0 for reason in planted} == dict.fromkeys(planted, True)
    assert counts == {k: v for k, v in extraction.refusal_counts(expected_refused).items() if v}
    assert result["stats"]["accepted"] + result["stats"]["refused"] == len(calls)
    assert result["refused"] == len(expected_refused) and result["stats"]["teacher_errors"] >= len(planted)

    # the accepted rows are a DVC version; what training reads holds no refused document
    store = store_for(settings, wf)
    train = store.load("train")
    assert list(train.columns) == list(extraction.DATASET_COLUMNS)
    assert len(train) == result["rows"] == len(expected_accepted)
    assert set(train[extraction.DOCUMENT_ID]).isdisjoint(planted.values())
    answers = [json.loads(v) for v in train[extraction.VALUES]]  # {field: value or None}, as gold.jsonl's
    assert all(set(a) == set(FIELDS) for a in answers) and set(train["source"]) == {"teacher"}
    assert (store.root / "train.parquet.dvc").is_file() and result["version"] == store.current("train")[
        "version"
    ]
    assert set(json.loads(store.load("eval")[extraction.VALUES][0])) == set(FIELDS)

    # refused rows are kept beside the data, each with its reason and the teacher's answer as sent
    refused = store.refused()
    assert len(refused) == len(expected_refused) and set(refused["batch"]) == {"call_log.jsonl"}
    by_id = refused.set_index(extraction.DOCUMENT_ID)
    for reason, doc in planted.items():
        assert by_id.loc[doc, "reason"] == reason
    assert by_id.loc[planted["not_json"], "response_json"] == '{"party_a": "Acme'
    assert store.current("train")["refused_rows"] == len(expected_refused)

    # the raw batch is archived byte for byte; the dataset event fires once per version
    [archived] = (settings.data_dir / WF / "raw").glob("*_call_log.jsonl")
    assert sha256_file(archived) == raw_sha
    event = publish_if_changed(WF)
    assert event == {"workflow": WF, "version": result["version"], "rows": len(train)}
    assert publish_if_changed(WF) is None
    assert dataset_summary(WF)["eval_rows"] == 12
    assert label_set(settings, wf) == list(FIELDS)


def _empty_document(rows):
    rows[3]["request_text"] = "   "
    return rows


def _huge_document(rows):
    rows[5]["request_text"] = rows[5]["request_text"] + " lorem" * 360_000  # about 2.2 MB
    return rows


def _no_answer_column(rows):
    return [{k: v for k, v in r.items() if k != "response_json"} for r in rows]


BAD_BATCHES = [
    ("empty_document.jsonl", _empty_document, "1 of 40 texts are empty or whitespace only"),
    ("huge_document.jsonl", _huge_document, "1 of 40 documents are over 2,000,000 UTF-8 bytes"),
    ("no_answers.jsonl", _no_answer_column, "missing column(s) ['response_json']"),
]


@pytest.mark.parametrize("name, spoil, reason", BAD_BATCHES, ids=[b[0] for b in BAD_BATCHES])
def test_a_batch_the_gate_fails_is_quarantined_byte_for_byte_with_a_named_reason(state, name, spoil, reason):
    from ml.pipeline.ingest_validate import BatchRejected, ingest_batch, list_new_batches, store_for
    from ml.validation.quarantine import list_quarantined, show

    settings, wf, drop, generated = state
    path = write_jsonl(drop / name, spoil(read_jsonl(generated["call_log_path"])))
    before = path.read_bytes()
    assert list_new_batches(WF, echo=lambda m: None) == [name]
    with pytest.raises(BatchRejected) as rejected:
        ingest_batch(WF, name)
    assert reason in str(rejected.value)
    [entry] = list_quarantined(settings.quarantine_dir / WF)
    assert entry.file_name == name and reason in entry.reason
    assert entry.batch_file.read_bytes() == before and entry.sha256 == sha256_file(entry.batch_file)
    assert not path.exists() and store_for(settings, wf).current("train") is None
    assert show(settings.quarantine_dir / WF, entry.id).report["success"] is False


def test_the_gate_judges_the_answers_as_received_and_counts_refusals_without_failing(state):
    _, wf, _, generated = state
    calls, planted = with_bad_answers(read_jsonl(generated["call_log_path"]))
    calls[0]["response_json"] = {"party_a": "an object, not JSON text"}
    received = extraction.normalise(pd.DataFrame(calls), wf, origin="log.jsonl")
    assert list(received.columns) == list(extraction.RECEIVED_COLUMNS)
    report = extraction.validate_batch(received, wf, batch_id="t/log.jsonl", refusals={"not_json": 1})
    assert not report.success and report.statistics["refusals"] == {"not_json": 1}
    [failure] = report.failures
    assert "1 of 40 answers are not JSON text" in failure.observed and failure.column == "response_json"
    calls[0]["response_json"] = json.dumps({"party_a": "fine"})
    received = extraction.normalise(pd.DataFrame(calls), wf, origin="log.jsonl")
    assert extraction.validate_batch(received, wf, batch_id="t/log.jsonl").success


def test_the_demo_stages_generated_contracts_where_the_ticket_demo_stages_its_log(state):
    from ml.cli.lifecycle import stage_demo_data
    from ml.pipeline.ingest_validate import list_new_batches

    settings, wf, drop, _ = state
    said: list[str] = []
    staged = stage_demo_data(settings, wf, n_calls=20, n_gold=5, seed=3, echo=said.append)
    assert staged["drop"] == str(drop)
    assert list_new_batches(WF, echo=lambda m: None) == ["eval/gold_seed3.jsonl", "call_log_seed3.jsonl"]
    assert said[0].startswith("generated 20 contracts") and "5 gold contracts" in said[0]
    assert len(read_jsonl(drop / "call_log_seed3.jsonl")) == 20
    assert {"values", "text"} <= set(read_jsonl(drop / "eval" / "gold_seed3.jsonl")[0])


def test_data_import_drops_a_call_log_and_a_gold_file_as_they_are(state, capsys):
    from ml.cli import main

    _, _, drop, generated = state
    assert main(["data", "import", generated["call_log_path"], "-w", WF, "--json"]) == 0
    assert main(["data", "import", generated["gold_path"], "-w", WF, "--as", "eval"]) == 0
    assert (drop / "call_log.jsonl").read_bytes() == Path(generated["call_log_path"]).read_bytes()
    assert (drop / "eval" / "gold.jsonl").read_bytes() == Path(generated["gold_path"]).read_bytes()
    assert '"kind": "call_log"' in capsys.readouterr().out


def test_a_blank_cell_in_a_one_column_per_field_gold_file_is_an_absent_value(state):
    _, wf, _, _ = state
    text = "Acme Ltd supplies Beta GmbH under the laws of Ohio."
    row = {"text": text, "party_a": "Acme Ltd", "party_b": "Beta GmbH", "governing_law": "Ohio"}
    frame = pd.DataFrame([row, {**row, "governing_law": float("nan")}])  # a CSV's blank cell reads as NaN
    for f in wf.fields:
        frame[f] = frame.get(f, float("nan"))
    received = extraction.normalise(frame, wf, origin="gold.csv")
    assert json.loads(received[extraction.RESPONSE_JSON][1])["governing_law"] is None
    rows = [{**r, extraction.REQUEST_TEXT: r[extraction.TEXT]} for r in received.to_dict("records")]
    accepted, refused = extraction.curate(rows, wf.fields)
    assert refused == [] and len(accepted) == 2
