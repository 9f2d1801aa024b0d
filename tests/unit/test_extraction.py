"""Field extraction: curation reasons, span <-> BIO tags over windows, window merge, metrics, a real training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from ml import demo_contracts
from ml.tasks import extraction as ex
from ml.workflows import Training

FIELDS = ("party_a", "party_b", "effective_date", "notice_days")
DOC = (
    'This Agreement is made on 15 March 2026 between Acme Widgets Inc. ("Acme") and Blue Harbor Ltd. '
    "Either party may terminate on 30 days' notice; invoices are payable within 45 days and the fee is "
    "$30,000. Signed for Acme Widgets Inc. and Blue Harbor Ltd."
)
GOOD = {
    "party_a": "Acme Widgets Inc.",
    "party_b": "Blue Harbor Ltd.",
    "effective_date": "15 March 2026",
    "notice_days": "30",
}


@pytest.fixture(scope="module")
def tokenizer(tiny_base_model):
    return AutoTokenizer.from_pretrained(tiny_base_model, local_files_only=True)


def _row(answer, text=DOC, **extra):
    body = answer if isinstance(answer, str) else json.dumps(answer)
    return {"call_id": "c1", "request_text": text, "response_json": body, "status": "ok", **extra}


# -- curation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "row, reason, detail",
    [
        (
            _row(GOOD, status="error", error="RateLimitError") | {"response_json": None},
            "call_failed",
            "error",
        ),
        (_row(GOOD) | {"response_json": None}, "no_answer", "null"),
        (_row(GOOD, text="   \n"), "empty_document", "empty"),
        (_row(GOOD, text=DOC + " x" * ex.MAX_DOCUMENT_BYTES), "document_too_large", "bytes"),
        (_row('{"party_a": "Acme Widgets Inc."'), "not_json", "JSONDecodeError"),
        (_row("```json\n" + json.dumps(GOOD) + "\n```"), "not_json", "```"),
        (_row("[1, 2]"), "not_an_object", "list"),
        (_row({**GOOD, "contract_type": "MSA"}), "undeclared_field", "contract_type"),
        (_row({k: v for k, v in GOOD.items() if k != "notice_days"}), "missing_field", "notice_days"),
        (_row({**GOOD, "notice_days": ["30"]}), "value_not_string", "list"),
        (_row({**GOOD, "effective_date": "2026-03-15"}), "value_not_in_document", "2026-03-15"),
        (_row({**GOOD, "party_b": "Acme Widgets Inc."}), "overlapping_spans", "'party_a' and 'party_b'"),
        (_row({**GOOD, "party_b": "Widgets"}), "overlapping_spans", "only inside field 'party_a'"),
    ],
)
def test_each_bad_answer_is_refused_with_its_named_reason(row, reason, detail):
    accepted, refused = ex.curate([row], FIELDS)
    assert accepted == []
    assert [r["reason"] for r in refused] == [reason]
    assert detail in refused[0]["detail"]
    assert refused[0]["request_text"] == row["request_text"]  # the row is kept whole, never lost
    assert reason in ex.REFUSAL_REASONS


def test_curation_keeps_every_row_and_reads_absent_and_numeric_values():
    rows = [
        _row(GOOD),
        _row({**GOOD, "notice_days": 30.0, "effective_date": None}),  # a number is its digits; null = absent
        _row({**GOOD, "notice_days": ""}),
        _row("not json"),
    ]
    accepted, refused = ex.curate(rows, FIELDS)
    assert len(accepted) + len(refused) == len(rows)
    assert accepted[1]["answer"]["notice_days"] == "30"
    assert accepted[1]["answer"]["effective_date"] is None and accepted[1]["spans"]["effective_date"] == []
    assert accepted[2]["answer"]["notice_days"] is None
    assert ex.refusal_counts(refused)["not_json"] == 1


def test_spans_are_whole_word_occurrences_and_a_value_inside_a_longer_one_belongs_to_it():
    spans = ex.answer_spans(DOC, GOOD, FIELDS)
    assert [DOC[s:e] for s, e in spans["party_a"]] == ["Acme Widgets Inc."] * 2  # every mention
    assert [DOC[s:e] for s, e in spans["notice_days"]] == ["30"]  # not the one inside "$30,000"
    # "15" occurs only inside the date: it is the date's, and a notice of 15 days cannot be tagged.
    with pytest.raises(ex.RefusedAnswer, match="overlapping_spans"):
        ex.answer_spans(DOC, {**GOOD, "notice_days": "15"}, FIELDS)
    assert ex.find_occurrences("pay 30,000 or 1.30 in 30 days", "30") == [(22, 24)]


def test_bad_field_declarations_name_the_fix():
    for fields in ([], ["a", "a"], ["B-x y"]):
        with pytest.raises(ValueError, match="unique field names"):
            ex.label_names(fields)
    with pytest.raises(ValueError, match="request_text"):
        ex.curate([{"text": DOC}], FIELDS)


# -- spans <-> BIO over windows -------------------------------------------------------------------


def _decode_gold_labels(windows, n_docs, fields):
    """Spans read back from the target labels as if they were the model's (one-hot) probabilities."""
    n_labels = len(ex.label_names(fields))
    probs = [np.eye(n_labels)[[max(lab, 0) for lab in labels]] for labels in windows.labels]
    merged = ex.merge_windows(windows, probs, n_docs)
    return [
        {f: [(s, e) for s, e, _ in v] for f, v in ex.decode_spans(t, p, fields).items()} for t, p in merged
    ]


@pytest.mark.parametrize("max_length, stride", [(512, 0), (24, 8), (16, 5)])
def test_bio_labels_decode_back_to_the_same_spans_across_windows(tokenizer, max_length, stride):
    long_doc = DOC + " Boilerplate clause text." * 12 + " Acme Widgets Inc. again."
    docs = [DOC, long_doc]
    windows = ex.targets_from_answers(
        docs, [GOOD, GOOD], FIELDS, tokenizer, max_length=max_length, stride=stride
    )
    assert (max(windows.doc_index) + 1, len(windows) > 2) == (2, max_length < 512)
    assert all(len(ids) <= max_length for ids in windows.input_ids)
    assert windows.labels[0][0] == ex.IGNORE_INDEX  # [CLS]: no loss, no prediction
    decoded = _decode_gold_labels(windows, len(docs), FIELDS)
    for text, got in zip(docs, decoded):
        assert got == ex.answer_spans(text, GOOD, FIELDS)


def test_generated_contracts_round_trip_through_the_tokenizer(tmp_path, tokenizer):
    summary = demo_contracts.generate(tmp_path, n_documents=12, n_gold=0, max_pages=2)
    accepted, _ = ex.curate(demo_contracts.read_jsonl(summary["call_log_path"]), demo_contracts.FIELDS)
    docs, answers = [a["text"] for a in accepted], [a["answer"] for a in accepted]
    windows = ex.targets_from_answers(
        docs, answers, demo_contracts.FIELDS, tokenizer, max_length=128, stride=32
    )
    assert len(windows) > 3 * len(docs)  # a 1-2 page contract is many 128-token windows
    assert _decode_gold_labels(windows, len(docs), demo_contracts.FIELDS) == [a["spans"] for a in accepted]


def test_window_merge_averages_a_token_over_the_windows_that_read_it():
    windows = ex.Windows(
        input_ids=[[101, 1, 2, 102], [101, 2, 3, 102]],
        offsets=[[(0, 0), (0, 4), (5, 9), (0, 0)], [(0, 0), (5, 9), (10, 12), (0, 0)]],
        doc_index=[0, 0],
    )
    p = np.array
    probs = [
        p([[1, 0, 0], [0.9, 0.1, 0], [0.2, 0.8, 0], [1, 0, 0]]),
        p([[1, 0, 0], [0.6, 0.4, 0], [0, 0.2, 0.8], [1, 0, 0]]),
    ]
    [(tokens, merged)] = ex.merge_windows(windows, probs, 1)
    assert tokens == [(0, 4), (5, 9), (10, 12)]
    np.testing.assert_allclose(merged[1], [0.4, 0.6, 0.0])
    # labels O, B-f, I-f: one span from the B token to the I token, confidence the mean of the two.
    spans = ex.decode_spans(tokens, merged, ["f"])
    assert spans == {"f": [(5, 12, pytest.approx((0.6 + 0.8) / 2))]}


def test_decode_reads_a_stray_inside_tag_as_a_span_start_and_keeps_fields_apart():
    names = ex.label_names(["a", "b"])  # O B-a I-a B-b I-b
    tags = ["I-a", "I-a", "O", "B-b", "I-a", "B-a"]
    probs = np.eye(len(names))[[names.index(t) for t in tags]]
    tokens = [(i * 3, i * 3 + 2) for i in range(len(tags))]
    assert ex.decode_spans(tokens, probs, ["a", "b"]) == {
        "a": [(0, 5, 1.0), (12, 14, 1.0), (15, 17, 1.0)],
        "b": [(9, 11, 1.0)],
    }


# -- metrics ----------------------------------------------------------------------------------------


def test_metrics_on_hand_made_answers():
    gold = [
        {"party": "Acme Widgets Inc.", "days": "30"},
        {"party": "Blue Harbor Ltd", "days": None},
    ]
    predicted = [
        {"party": {"value": "Acme  Widgets Inc.", "start": 0, "end": 18, "confidence": 0.9}, "days": "45"},
        {"party": "Harbor Ltd", "days": None},
    ]
    scores = ex.evaluate(predicted, gold, ["party", "days"])
    # party: exact (whitespace collapsed) + "harbor ltd" vs "blue harbor ltd" (P 1, R 2/3 -> 0.8)
    assert scores["per_field_exact_match"] == {"party": 0.5, "days": 0.5}
    assert scores["per_field_f1"]["party"] == pytest.approx((1.0 + 0.8) / 2)
    assert scores["per_field_f1"]["days"] == pytest.approx(0.5)  # wrong, then absent in both
    assert scores["field_f1_macro"] == pytest.approx((0.9 + 0.5) / 2)
    assert scores["exact_match_macro"] == pytest.approx(0.5)
    assert set(ex.METRICS) <= set(scores)
    with pytest.raises(ValueError, match="whole evaluation set"):
        ex.evaluate(predicted[:1], gold, ["party", "days"])


@pytest.mark.parametrize(
    "predicted, truth, f1",
    [(None, None, 1.0), ("x", None, 0.0), (None, "x", 0.0), ("$30,000", "30,000 USD", 0.8)],
)
def test_value_f1_table(predicted, truth, f1):
    assert ex.value_f1(predicted, truth) == pytest.approx(f1)


# -- the student ------------------------------------------------------------------------------------


def test_student_has_a_tag_per_field_and_the_kept_layers(tiny_base_model):
    model, tokenizer = ex.build_student(tiny_base_model, FIELDS, student_layers=1)
    assert model.config.id2label[0] == "O" and model.config.num_labels == 1 + 2 * len(FIELDS)
    assert model.config.id2label[1] == "B-party_a" and model.config.num_hidden_layers == 1
    assert tokenizer.is_fast
    [answer] = ex.extract(model, tokenizer, [DOC], FIELDS, max_length=24, stride=8)
    for name, found in answer.items():
        assert found is None or DOC[found["start"] : found["end"]] == found["value"], name


def test_a_tiny_training_run_lowers_the_loss_and_saves_safetensors(tmp_path, tiny_base_model, monkeypatch):
    from ml.train import progress

    monkeypatch.setenv(progress.PROGRESS_FILE_VAR, str(tmp_path / "progress.json"))
    summary = demo_contracts.generate(tmp_path / "data", n_documents=10, n_gold=0, max_pages=1)
    accepted, _ = ex.curate(demo_contracts.read_jsonl(summary["call_log_path"]), demo_contracts.FIELDS)
    cfg = Training(
        max_epochs=3, patience=0, validation_fraction=0.2, batch_size=16, max_length=64, learning_rate=2e-3
    )
    result = ex.train(
        base_dir=tiny_base_model,
        documents=[a["text"] for a in accepted],
        answers=[a["answer"] for a in accepted],
        fields=demo_contracts.FIELDS,
        cfg=cfg,
        out_dir=tmp_path / "out",
        stride=16,
        negative_window_fraction=0.2,
        log=lambda _: None,
    )
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.best_epoch in (1, 2, 3) and result.n_validation_documents >= 1
    assert (result.model_dir / "model.safetensors").is_file()
    model, tokenizer = ex.load_tagger(result.model_dir)
    assert model.config.num_labels == len(ex.label_names(demo_contracts.FIELDS))
    assert len(ex.extract(model, tokenizer, [accepted[0]["text"]], demo_contracts.FIELDS, 64, 16)) == 1
    # What `mlops run` shows while it trains: the last snapshot is the last step, with the last epoch's score.
    snap = progress.read(tmp_path / "progress.json")
    assert (snap["task"], snap["step"], snap["total_steps"]) == ("train_student", result.steps, result.steps)
    assert snap["val_field_f1_macro"] == result.history[-2]["val_field_f1_macro"]


def test_loss_counts_only_tagged_tokens():
    import torch

    targets = torch.tensor([[ex.IGNORE_INDEX, 2, ex.IGNORE_INDEX]])
    assert ex.loss(torch.zeros(1, 3, 5), targets).item() == pytest.approx(np.log(5))
    sure = torch.zeros(1, 3, 5)
    sure[0, 1, 2] = 50.0
    sure[0, 0, 0] = -50.0  # special tokens' logits, however wrong, count for nothing
    assert ex.loss(sure, targets).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "start, end, snapped",
    [
        (2, 9, (0, 12)),
        (0, 4, (0, 4)),
        (5, 10, (5, 12)),
        (14, 15, (13, 16)),
        (13, 17, (13, 17)),
        (19, 20, (18, 20)),
    ],
)
def test_a_predicted_span_is_widened_to_whole_words(start, end, snapped):
    # "Acme" 0-4, "Widgets" 5-12, "Inc" 13-16 then ".", "30" 18-20
    assert ex.snap_to_words("Acme Widgets Inc. 30", start, end) == snapped
