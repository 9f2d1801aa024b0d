"""The demo data generator: deterministic, shaped like real ticket traffic, and not trivially learnable."""

from __future__ import annotations

import collections
import csv
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from ml import demo_data
from ml.demo_data import LABELS, NEIGHBOURS, generate

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One default-sized run shared by the read-only tests: (summary, call-log rows, gold rows)."""
    summary = generate(tmp_path_factory.mktemp("demo"))
    with open(summary["call_log_path"], encoding="utf-8") as f:
        calls = [json.loads(line) for line in f]
    with open(summary["gold_path"], encoding="utf-8", newline="") as f:
        gold = list(csv.DictReader(f))
    return summary, calls, gold


def _read_bytes(out_dir: Path) -> tuple[bytes, bytes]:
    return (out_dir / "call_log.jsonl").read_bytes(), (out_dir / "gold.csv").read_bytes()


@pytest.mark.parametrize("seed_a, seed_b, identical", [(42, 42, True), (7, 7, True), (42, 43, False)])
def test_same_seed_gives_byte_identical_files(tmp_path, seed_a, seed_b, identical):
    generate(tmp_path / "a", n_calls=300, n_gold=60, seed=seed_a)
    generate(tmp_path / "b", n_calls=300, n_gold=60, seed=seed_b)
    a, b = _read_bytes(tmp_path / "a"), _read_bytes(tmp_path / "b")
    assert (a[0] == b[0]) is identical
    assert (a[1] == b[1]) is identical


def test_output_does_not_depend_on_the_process_hash_seed(tmp_path):
    # Set iteration order and str hashes change with PYTHONHASHSEED; the files must not.
    code = (
        "import sys; from pathlib import Path; from ml.demo_data import generate; "
        "generate(Path(sys.argv[1]), n_calls=200, n_gold=40)"
    )
    for name, hash_seed in (("a", "1"), ("b", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True, cwd=REPO_ROOT, env=env)
    assert _read_bytes(tmp_path / "a") == _read_bytes(tmp_path / "b")


def test_gold_does_not_change_the_call_log(tmp_path):
    generate(tmp_path / "a", n_calls=300, n_gold=10)
    generate(tmp_path / "b", n_calls=300, n_gold=90)
    assert _read_bytes(tmp_path / "a")[0] == _read_bytes(tmp_path / "b")[0]


def test_summary_counts_match_the_files(demo):
    summary, calls, gold = demo
    statuses = collections.Counter(c["status"] for c in calls)
    assert (summary["n_calls"], summary["n_gold"]) == (len(calls), len(gold)) == (2400, 400)
    assert (summary["n_ok"], summary["n_error"], summary["n_timeout"]) == (
        statuses["ok"],
        statuses["error"],
        statuses["timeout"],
    )
    assert summary["labels"] == list(LABELS)
    json.dumps(summary)  # the CLI prints it with --json


def test_labels_are_a_realistic_intent_set():
    assert 12 <= len(LABELS) <= 16
    assert len(set(LABELS)) == len(LABELS)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", label) for label in LABELS)
    assert set(NEIGHBOURS) == set(LABELS)
    assert all(n in LABELS and n != label for label, ns in NEIGHBOURS.items() for n in ns)


def test_every_label_appears_in_both_files(demo):
    _, calls, gold = demo
    assert {c["response_label"] for c in calls if c["status"] == "ok"} == set(LABELS)
    assert {g["label"] for g in gold} == set(LABELS)


@pytest.mark.parametrize(
    "status, expected_rate, tolerance",
    [
        ("error", demo_data.ERROR_RATE, 0.012),
        ("timeout", demo_data.TIMEOUT_RATE, 0.008),
        ("ok", 1 - demo_data.ERROR_RATE - demo_data.TIMEOUT_RATE, 0.015),
    ],
)
def test_status_rates_are_near_the_configured_ones(demo, status, expected_rate, tolerance):
    _, calls, _ = demo
    rate = sum(c["status"] == status for c in calls) / len(calls)
    assert abs(rate - expected_rate) <= tolerance, (status, rate)


@pytest.mark.parametrize("error_rate", [0.0, 0.05, 0.09, 0.2])
def test_teacher_error_rate_is_near_the_requested_one(tmp_path, error_rate):
    summary = generate(tmp_path, n_calls=1500, n_gold=0, teacher_error_rate=error_rate)
    assert abs((1 - summary["teacher_accuracy"]) - error_rate) <= 0.025, summary["teacher_accuracy"]


def test_teacher_errors_are_neighbour_confusions_and_cluster_on_mixed_tickets():
    rng = random.Random(0)
    tickets = demo_data.make_tickets(rng, 6000)
    answers = demo_data.teacher_labels(rng, tickets, 0.09)
    wrong = [(t, a) for t, a in zip(tickets, answers) if a != t.label]
    plausible = sum(a in NEIGHBOURS[t.label] or a == t.mixed_with for t, a in wrong)
    assert plausible / len(wrong) >= 0.75  # not uniform noise, which would give ~ 2/15

    def error_rate(group):
        return sum(a != t.label for t, a in group) / len(group)

    mixed = [(t, a) for t, a in zip(tickets, answers) if t.mixed_with]
    plain = [(t, a) for t, a in zip(tickets, answers) if not t.mixed_with]
    assert error_rate(mixed) > 2 * error_rate(plain)


CALL_FIELDS = {
    # field: (types allowed, null allowed)
    "call_id": (str, False),
    "ts": (str, False),
    "workflow": (str, False),
    "request_text": (str, False),
    "response_label": (str, True),
    "label_probs": (dict, True),
    "model": (str, False),
    "model_version": (str, False),
    "latency_ms": (float, False),
    "tokens_in": (int, False),
    "tokens_out": (int, False),
    "cost_usd": (float, False),
    "status": (str, False),
    "error": (str, True),
    "retries": (int, False),
}


def test_every_call_log_line_follows_the_schema(demo):
    _, calls, _ = demo
    window_start = datetime(2026, 8, 1, tzinfo=timezone.utc)
    for c in calls:
        assert set(c) == set(CALL_FIELDS)
        for name, (kind, nullable) in CALL_FIELDS.items():
            assert (c[name] is None and nullable) or type(c[name]) is kind, (name, c)
        assert c["status"] in ("ok", "error", "timeout")
        assert c["workflow"] == "ticket_routing" and c["model"] == "frontier-large"
        assert window_start <= datetime.fromisoformat(c["ts"]) < window_start + timedelta(days=90)
        assert c["ts"].endswith("Z")
        assert c["latency_ms"] > 0 and c["retries"] >= 0 and c["cost_usd"] >= 0
        assert c["tokens_in"] >= demo_data.PROMPT_OVERHEAD_TOKENS
        if c["status"] == "ok":
            assert c["response_label"] in LABELS and c["error"] is None and c["tokens_out"] > 0
        else:
            assert c["response_label"] is None and c["label_probs"] is None
            assert c["error"] in ("RateLimitError", "ServerError", "Timeout")
            assert (c["status"] == "timeout") == (c["error"] == "Timeout")


def test_label_probs_are_top3_with_argmax_equal_to_the_answer(demo):
    _, calls, _ = demo
    ok = [c for c in calls if c["status"] == "ok"]
    with_probs = [c for c in ok if c["label_probs"] is not None]
    assert 0.4 <= len(with_probs) / len(ok) <= 0.6
    for c in with_probs:
        probs = c["label_probs"]
        assert len(probs) == 3 and set(probs) <= set(LABELS)
        assert all(0 < p <= 1 for p in probs.values()) and sum(probs.values()) <= 1.0
        assert max(probs, key=probs.get) == c["response_label"]
        assert sorted(probs.values(), reverse=True)[0] > sorted(probs.values(), reverse=True)[1]


def test_call_ids_are_unique_and_timestamps_ordered(demo):
    _, calls, _ = demo
    assert len({c["call_id"] for c in calls}) == len(calls)
    assert [c["ts"] for c in calls] == sorted(c["ts"] for c in calls)


def test_latency_is_long_tailed_around_800_ms(demo):
    _, calls, _ = demo
    latency_ms = [c["latency_ms"] for c in calls if c["status"] == "ok"]
    assert 600 <= statistics.median(latency_ms) <= 1100
    assert sum(x > 3000 for x in latency_ms) / len(latency_ms) >= 0.005  # a tail the SLA check will see
    assert statistics.mean(latency_ms) > statistics.median(latency_ms)  # right-skewed


def test_tokens_in_grow_with_text_length(demo):
    _, calls, _ = demo
    by_length = sorted(calls, key=lambda c: len(c["request_text"]))
    short, long = by_length[: len(by_length) // 4], by_length[-len(by_length) // 4 :]
    assert statistics.mean(c["tokens_in"] for c in long) > statistics.mean(c["tokens_in"] for c in short) + 10


def test_gold_texts_are_disjoint_from_the_call_log(demo):
    _, calls, gold = demo
    log_texts = {c["request_text"] for c in calls}
    overlap = sum(g["text"] in log_texts for g in gold)
    assert overlap / len(gold) <= 0.02


@pytest.mark.parametrize(
    "what, pattern, min_share",
    [
        ("email", r"[\w.+-]+@[\w-]+\.[\w.]+", 0.10),
        ("phone", r"(\+\d{1,2} |\(\d{3}\) |0)\d{2,4}[ -]\d{3,4}", 0.10),
        ("order number", r"(#|ORD-)\d{7}", 0.05),
        ("card-like number", r"\b\d{4} \d{4} \d{4} \d{4}\b", 0.002),
    ],
)
def test_texts_carry_personal_data_to_mask(demo, what, pattern, min_share):
    _, calls, gold = demo
    texts = [c["request_text"] for c in calls] + [g["text"] for g in gold]
    share = sum(bool(re.search(pattern, t, flags=re.IGNORECASE)) for t in texts) / len(texts)
    assert share >= min_share, (what, share)


@pytest.mark.parametrize("source", ["call_log", "gold"])
def test_classes_are_imbalanced_but_none_is_vanishing(demo, source):
    _, calls, gold = demo
    labels = (
        [c["response_label"] for c in calls if c["status"] == "ok"]
        if source == "call_log"
        else [g["label"] for g in gold]
    )
    shares = [n / len(labels) for n in collections.Counter(labels).values()]
    assert max(shares) > 2 * min(shares)
    assert min(shares) >= 0.015  # 2% of true labels; the teacher's mistakes move a little mass


def test_texts_vary_in_length_and_wording(demo):
    _, calls, _ = demo
    words = [len(c["request_text"].split()) for c in calls]
    assert min(words) <= 4 and max(words) >= 30
    assert len({c["request_text"] for c in calls}) / len(calls) >= 0.95


def _naive_bayes_accuracy(train: list[tuple[str, str]], test: list[tuple[str, str]]) -> float:
    """Multinomial naive Bayes on lowercase word counts: the simplest student there is."""

    def words(text):
        return re.findall(r"[a-z']+", text.lower())

    counts = {label: collections.Counter() for label in LABELS}
    priors = collections.Counter(label for _, label in train)
    for text, label in train:
        counts[label].update(words(text))
    vocab = set().union(*counts.values())
    totals = {label: sum(c.values()) for label, c in counts.items()}

    def predict(text):
        return max(
            LABELS,
            key=lambda lab: (
                math.log(priors[lab] + 1)
                + sum(math.log((counts[lab][w] + 1) / (totals[lab] + len(vocab))) for w in words(text))
            ),
        )

    return sum(predict(text) == label for text, label in test) / len(test)


def test_task_is_learnable_but_not_trivially_separable(demo):
    _, calls, gold = demo
    train = [(c["request_text"], c["response_label"]) for c in calls if c["status"] == "ok"]
    accuracy = _naive_bayes_accuracy(train, [(g["text"], g["label"]) for g in gold])
    assert 0.6 <= accuracy < 0.98, accuracy


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_calls": 0}, "n_calls"),
        ({"n_gold": -1}, "n_gold"),
        ({"teacher_error_rate": 1.5}, "teacher_error_rate"),
        ({"teacher_error_rate": -0.1}, "teacher_error_rate"),
        ({"days": 0}, "days"),
    ],
)
def test_bad_arguments_name_the_problem(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, **kwargs)
    assert not (tmp_path / "call_log.jsonl").exists()


@pytest.mark.parametrize("n", [1, 15, 16, 100, 401, 2400])
def test_allocate_gives_exact_counts_and_covers_labels_when_it_can(n):
    labels = demo_data.allocate(n)
    assert len(labels) == n
    if n >= len(LABELS):
        assert set(labels) == set(LABELS)
    counts = collections.Counter(labels)
    assert counts["password_reset"] == max(counts.values())  # the shares' order survives


def test_custom_window_and_model_are_recorded(tmp_path):
    summary = generate(
        tmp_path,
        n_calls=100,
        n_gold=20,
        start=date(2025, 1, 1),
        days=7,
        model="frontier-xl",
        model_version="2025-12-01",
        workflow="triage",
    )
    with open(summary["call_log_path"], encoding="utf-8") as f:
        calls = [json.loads(line) for line in f]
    first, last = datetime.fromisoformat(calls[0]["ts"]), datetime.fromisoformat(calls[-1]["ts"])
    assert (
        datetime(2025, 1, 1, tzinfo=timezone.utc) <= first <= last < datetime(2025, 1, 8, tzinfo=timezone.utc)
    )
    assert {(c["workflow"], c["model"], c["model_version"]) for c in calls} == {
        ("triage", "frontier-xl", "2025-12-01")
    }
