"""The contract generator: deterministic, every gold value in its document, a teacher wrong ~4 % of the time."""

from __future__ import annotations

import json

import pytest

from ml import demo_contracts
from ml.demo_contracts import FIELDS, generate, read_jsonl


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    summary = generate(tmp_path_factory.mktemp("contracts"), n_documents=400, n_gold=60)
    return summary, read_jsonl(summary["call_log_path"]), read_jsonl(summary["gold_path"])


def _files(out_dir):
    return [(out_dir / n).read_bytes() for n in ("documents.jsonl", "call_log.jsonl", "gold.jsonl")]


@pytest.mark.parametrize("seed_a, seed_b, identical", [(42, 42, True), (42, 43, False)])
def test_same_seed_gives_byte_identical_files(tmp_path, seed_a, seed_b, identical):
    generate(tmp_path / "a", n_documents=40, n_gold=10, seed=seed_a)
    generate(tmp_path / "b", n_documents=40, n_gold=10, seed=seed_b)
    for a, b in zip(_files(tmp_path / "a"), _files(tmp_path / "b")):
        assert (a == b) is identical


def test_changing_the_gold_size_leaves_the_call_log_as_it_was(tmp_path):
    generate(tmp_path / "a", n_documents=30, n_gold=5)
    generate(tmp_path / "b", n_documents=30, n_gold=20)
    assert _files(tmp_path / "a")[:2] == _files(tmp_path / "b")[:2]


def test_every_gold_value_occurs_in_its_document_at_its_span(demo):
    _, _, gold = demo
    absent = 0
    for row in gold:
        assert set(row["values"]) == set(FIELDS)
        for name, value in row["values"].items():
            if value is None:
                absent += 1
                assert row["spans"][name] is None
                continue
            start, end = row["spans"][name]
            assert row["text"][start:end] == value, (row["document_id"], name)
    assert absent > 0  # some contracts have no fixed value or no notice clause


def test_contracts_span_one_to_six_pages_and_vary_in_wording(demo):
    _, calls, _ = demo
    words = [len(c["request_text"].split()) for c in calls]
    assert min(words) < demo_contracts.WORDS_PER_PAGE * 1.5
    assert max(words) > demo_contracts.WORDS_PER_PAGE * 5
    preambles = {c["request_text"].split("\n\n")[1][:60] for c in calls}
    assert len(preambles) > 50  # templates x names x dates, not one shape


def test_the_teacher_is_mostly_right_and_wrong_in_named_ways(demo):
    summary, calls, _ = demo
    answers = summary["teacher_answers"]
    wrong = sum(v for k, v in answers.items() if k != "correct")
    assert 0.02 <= wrong / summary["n_ok"] <= 0.07
    not_json = 0
    for c in calls:
        if c["status"] != "ok":
            assert c["response_json"] is None
            continue
        try:
            json.loads(c["response_json"])
        except ValueError:
            not_json += 1
    assert not_json == answers["malformed_json"]


def test_latency_and_tokens_grow_with_the_document(demo):
    _, calls, _ = demo
    ok = sorted((c for c in calls if c["status"] == "ok"), key=lambda c: len(c["request_text"]))
    for c in ok:
        assert abs(c["tokens_in"] - len(c["request_text"]) / 4) < demo_contracts.PROMPT_OVERHEAD_TOKENS + 2
    third = len(ok) // 3
    short = sorted(c["latency_ms"] for c in ok[:third])[third // 2]
    long = sorted(c["latency_ms"] for c in ok[-third:])[third // 2]
    assert long > short * 1.3


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"n_documents": 0}, "n_documents=0"), ({"max_pages": 7}, "max_pages=7"), ({"days": 0}, "days=0")],
)
def test_bad_arguments_name_the_fix(tmp_path, kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        generate(tmp_path, **kwargs)
