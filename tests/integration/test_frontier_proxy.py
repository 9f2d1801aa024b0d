"""The frontier proxy against a fake OpenAI-compatible server on 127.0.0.1: every way a call can go
is recorded correctly, nothing crashes, and the API key reaches the upstream and nothing else.

No test leaves the machine; every request has a timeout; the fake never sleeps more than 2 s.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from fake_openai import FakeOpenAI

from ml.costs.pricebook import PriceBook
from ml.frontier.calllog import CallLog, export_for_curation, read_rows
from ml.frontier.client import FrontierClient
from ml.frontier.proxy import ServerThread, Shadow, build_app

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-Do-Not-Leak-7f3a9c"
LABELS = ("billing", "shipping", "login")
BOOK = PriceBook.load(ROOT / "infra" / "price_book.yaml")
HTTP_TIMEOUT_S = 10.0  # the test's own requests to the proxy
INGEST_COLUMNS = {
    "call_id",
    "ts",
    "workflow",
    "request_text",
    "response_label",
    "label_probs",
    "model",
    "model_version",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "status",
    "error",
    "retries",
}


def chat(text: str = "I was charged twice", stream: bool = False) -> dict:
    return {
        "model": "frontier-large",
        "stream": stream,
        "messages": [{"role": "system", "content": "Route the ticket."}, {"role": "user", "content": text}],
    }


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


@contextmanager
def proxy(upstream_url: str, log_dir: Path, *, extra_sinks=(), **client_kwargs):
    """The proxy app served on 127.0.0.1, its call log flushed and closed on exit."""
    log = CallLog(log_dir)
    kwargs = {"timeout_s": 1.0, "max_retries": 2, "backoff_s": 0.01, **client_kwargs}
    client = FrontierClient(
        upstream_url,
        KEY,
        workflow="ticket_routing",
        labels=LABELS,
        price_book=BOOK,
        sinks=[log.append, *extra_sinks],
        **kwargs,
    )
    try:
        with ServerThread(build_app(client)) as url:
            yield url, log
    finally:
        log.close()


def post(url: str, body, **kwargs) -> httpx.Response:
    headers = {"Authorization": "Bearer the-app-s-own-token"}
    if isinstance(body, bytes):
        return httpx.post(f"{url}/v1/chat/completions", content=body, headers=headers, timeout=HTTP_TIMEOUT_S)
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers=headers, timeout=HTTP_TIMEOUT_S, **kwargs
    )


def expected_cost_usd(tokens_in: int, tokens_out: int) -> float:
    price_in, price_out = BOOK.frontier_token_prices("frontier-large", datetime.now(timezone.utc).date())
    return round(float((tokens_in * price_in + tokens_out * price_out) / 1_000_000), 8)


# (script of upstream modes, streamed, client settings, HTTP status the app gets, what the row records)
CASES = {
    "ok": (["ok"], False, {}, 200, dict(status="ok", error=None, retries=0, response_label="billing")),
    "rate limited twice, then ok": (
        ["error429", "error429", "ok"],
        False,
        {},
        200,
        dict(status="ok", error=None, retries=2, response_label="billing"),
    ),
    "server errors until retries run out": (
        ["error500"] * 3,
        False,
        {},
        500,
        dict(status="error", error="ServerError", retries=2, response_label=None),
    ),
    "bad request is not retried": (
        ["error400", "ok"],
        False,
        {},
        400,
        dict(status="error", error="BadRequestError", retries=0),
    ),
    "slow but inside the timeout": (
        ["slow"],
        False,
        {},
        200,
        dict(status="ok", retries=0, response_label="billing"),
    ),
    "hangs past the timeout": (
        ["hang"],
        False,
        {"timeout_s": 0.5},
        504,
        dict(status="timeout", error="Timeout", retries=0, response_label=None),
    ),
    "malformed JSON": (
        ["malformed"],
        False,
        {},
        502,
        dict(status="error", error="MalformedResponse", retries=0),
    ),
    "stream ok": (
        ["ok"],
        True,
        {},
        200,
        dict(status="ok", error=None, stream=True, response_label="billing"),
    ),
    "stream slow first token": (
        ["slow"],
        True,
        {},
        200,
        dict(status="ok", stream=True, response_label="billing"),
    ),
    "stream rate limited, then ok": (
        ["error429", "ok"],
        True,
        {},
        200,
        dict(status="ok", retries=1, stream=True),
    ),
    "stream cut before [DONE]": (
        ["cut"],
        True,
        {},
        200,
        dict(status="error", error="StreamInterrupted", stream=True),
    ),
    "stream hangs past the timeout": (
        ["hang"],
        True,
        {"timeout_s": 0.5},
        504,
        dict(status="timeout", error="Timeout"),
    ),
}


@pytest.mark.parametrize(
    "script, stream, client_kwargs, http_status, recorded", CASES.values(), ids=CASES.keys()
)
def test_each_outcome_is_relayed_and_recorded(
    fake, tmp_path, script, stream, client_kwargs, http_status, recorded
):
    fake.script = list(script)
    with proxy(fake.url, tmp_path / "log", **client_kwargs) as (url, log):
        resp = post(url, chat(stream=stream))
        log.flush()
        (row,) = read_rows(log.directory)
    assert resp.status_code == http_status
    assert INGEST_COLUMNS <= set(row)
    assert {k: row[k] for k in recorded} == recorded
    assert row["request_text"] == "I was charged twice" and row["model"] == "frontier-large"
    assert len(fake.requests) == row["retries"] + 1
    if row["status"] == "ok":
        assert row["model_version"] == "fake-2026-06-01" and row["tokens_out"] >= 1
        assert row["cost_usd"] == expected_cost_usd(row["tokens_in"], row["tokens_out"]) > 0
    if "slow" in script:  # what the fake slept is a lower bound of what was recorded, never an upper one
        assert (row["ttft_ms"] if stream else row["latency_ms"]) >= fake.slow_s * 1000
    if stream and row["status"] == "ok":
        events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        content = "".join(
            (json.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or "" for e in events[:-1]
        )
        assert content == fake.answer == row["response_text"]
        assert 0 < row["ttft_ms"] <= row["latency_ms"] and row["tokens_in"] > 0


def test_upstream_down_is_a_connection_error(tmp_path):
    with FakeOpenAI() as gone:
        dead_url = gone.url  # a port that was just listening and is closed now
    with proxy(dead_url, tmp_path / "log", max_retries=1) as (url, log):
        resp = post(url, chat())
        log.flush()
        (row,) = read_rows(log.directory)
    assert resp.status_code == 502
    assert (row["status"], row["error"], row["retries"]) == ("error", "ConnectionError", 1)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"model": "x"}'])
def test_a_bad_request_gets_a_clear_400_and_reaches_nobody(fake, tmp_path, body):
    with proxy(fake.url, tmp_path / "log") as (url, log):
        resp = post(url, body)
        log.flush()
        assert read_rows(log.directory) == []
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    assert fake.requests == []


def test_an_answer_outside_the_labels_is_kept_but_not_labelled(fake, tmp_path):
    fake.answer = "I think this is about a refund"
    with proxy(fake.url, tmp_path / "log") as (url, log):
        post(url, chat())
        log.flush()
        (row,) = read_rows(log.directory)
    assert row["status"] == "ok" and row["response_label"] is None and row["response_text"] == fake.answer


def test_many_concurrent_mixed_calls_are_each_recorded_once(fake, tmp_path):
    fake.script = ["ok", "error500", "malformed", "slow", "error429", "cut"] * 4
    with proxy(fake.url, tmp_path / "log", max_retries=0) as (url, log):
        with ThreadPoolExecutor(8) as pool:
            statuses = list(
                pool.map(lambda i: post(url, chat(f"ticket {i}", stream=i % 2 == 0)).status_code, range(24))
            )
        assert httpx.get(f"{url}/healthz", timeout=HTTP_TIMEOUT_S).json()["ok"]
        log.flush()
        rows = read_rows(log.directory)
    assert len(rows) == 24 and len({r["call_id"] for r in rows}) == 24
    assert sorted(r["request_text"] for r in rows) == sorted(f"ticket {i}" for i in range(24))
    assert set(statuses) <= {200, 429, 500, 502}


def test_the_key_goes_upstream_and_nowhere_else(fake, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    fake.script = ["error500", "hang", "malformed", "ok"]
    with proxy(fake.url, tmp_path / "log", timeout_s=0.5, max_retries=0) as (url, log):
        for stream in (False, False, False, True):
            post(url, chat(stream=stream))
        log.flush()
    assert {r["authorization"] for r in fake.requests} == {f"Bearer {KEY}"}  # never the app's own token
    written = "".join(p.read_text() for p in (tmp_path / "log").rglob("*") if p.is_file())
    assert written.count('"call_id"') == 4
    out, err = capfd.readouterr()
    for text in (written, caplog.text, out, err):
        assert KEY not in text and KEY[8:] not in text


def test_the_log_is_what_ingest_reads_and_curation_exports(fake, tmp_path):
    from ml.data.ingest import read_batch

    fake.script = ["ok", "ok", "error500", "ok", "hang"]
    with proxy(fake.url, tmp_path / "log", max_retries=0, timeout_s=0.5) as (url, log):
        for i in range(5):
            post(url, chat(f"ticket number {i} about my invoice"))
    batch = read_batch(next((tmp_path / "log").glob("*.jsonl")))
    assert batch.kind == "call_log" and len(batch.frame) == 3
    assert batch.stats["calls"] == 5 and batch.stats["errors"] == 1 and batch.stats["timeouts"] == 1

    tomorrow = datetime.now(timezone.utc) + timedelta(days=1, hours=1)
    drop, labeling = tmp_path / "drop", tmp_path / "labeling"
    waiting = export_for_curation(tmp_path / "log", drop, labeling, min_rows=10, gold_share=0.0, now=tomorrow)
    assert waiting["exported_days"] == [] and waiting["waiting_labelled_rows"] == 3
    # Call ids are random, so pick the share that sets exactly one of the three answered calls aside.
    ok_ids = [
        json.loads(ln)["call_id"]
        for p in (tmp_path / "log").glob("*.jsonl")
        for ln in p.read_text().splitlines()
        if json.loads(ln)["status"] == "ok"
    ]
    draws = sorted(int(hashlib.sha256(i.encode()).hexdigest()[:8], 16) / 2**32 for i in ok_ids)
    share = (draws[0] + draws[1]) / 2
    result = export_for_curation(tmp_path / "log", drop, labeling, min_rows=2, gold_share=share, now=tomorrow)
    assert result["gold_rows"] == 1
    exported = [json.loads(line) for line in Path(result["batch"]).read_text().splitlines()]
    assert len(exported) == 5 and result["exported_days"] == [datetime.now(timezone.utc).date().isoformat()]
    gold_ids = {r["call_id"] for r in exported if r["status"] == "ok" and r["response_label"] is None}
    assert len(gold_ids) == result["gold_rows"]
    if gold_ids:
        gold_csv = Path(result["gold_file"]).read_text().splitlines()
        assert gold_csv[0] == "call_id,text,label" and {ln.split(",")[0] for ln in gold_csv[1:]} == gold_ids
    # Exported days leave the pending folder, so a second run exports nothing twice.
    assert list((tmp_path / "log").glob("*.jsonl")) == []
    again = export_for_curation(tmp_path / "log", drop, labeling, min_rows=2, now=tomorrow)
    assert again["exported_days"] == [] and len(list(drop.glob("*.jsonl"))) == 1


def test_shadow_mode_scores_the_student_beside_the_frontier(fake, tmp_path, tiny_base_model):
    from transformers import AutoModelForSequenceClassification

    from ml.frontier.constraints import shadow_summary
    from ml.workflows import Workflow

    student_dir = tmp_path / "student"
    AutoModelForSequenceClassification.from_pretrained(
        tiny_base_model,
        num_labels=3,
        id2label=dict(enumerate(LABELS)),
        label2id={lab: i for i, lab in enumerate(LABELS)},
    ).save_pretrained(student_dir)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tiny_base_model / name).exists():
            (student_dir / name).write_bytes((tiny_base_model / name).read_bytes())
    shadow = Shadow.for_model_dir(
        student_dir,
        CallLog(tmp_path / "log" / "shadow"),
        student="tiny v1",
        student_cost_per_call_usd=Decimal("0.000049056"),
    )
    fake.script = ["ok", "error500", "ok", "ok"]
    with proxy(fake.url, tmp_path / "log", max_retries=0, extra_sinks=[shadow.submit]) as (url, log):
        for i in range(4):
            post(url, chat(f"where is my parcel {i}"))
    shadow.close()
    calls = {r["call_id"]: r for r in read_rows(tmp_path / "log")}
    scored = read_rows(tmp_path / "log" / "shadow")
    assert len(scored) == 3  # the failed call has no frontier answer to compare with
    for s in scored:
        frontier = calls[s["call_id"]]
        assert s["frontier_label"] == frontier["response_label"] == "billing" and s["student_label"] in LABELS
        assert s["agree"] == (s["student_label"] == "billing")
        assert s["frontier_latency_ms"] == frontier["latency_ms"] and s["student_latency_ms"] > 0
        assert Decimal(s["student_cost_usd"]) == Decimal("0.000049056")  # the cost model's figure, per call
    summary = shadow_summary(scored, Workflow(name="ticket_routing", monthly_calls=1000))
    assert summary["requests"] == 3 and summary["agreement"] == sum(s["agree"] for s in scored) / 3


# A hung upstream -----------------------------------------------------------------------------


def _healthz(url: str) -> dict:
    return httpx.get(f"{url}/healthz", timeout=HTTP_TIMEOUT_S).json()


def _wait_for(predicate, what: str, deadline_s: float = 60.0) -> None:
    import time

    until = time.monotonic() + deadline_s  # generous: only a broken proxy runs into it
    while not predicate():
        assert time.monotonic() < until, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_hung_upstream_saturates_the_bound_and_the_next_call_is_refused_at_once(fake, tmp_path):
    """Before: 100 hung calls held httpx's default pool, and an unrelated call waited 26 s for a slot.
    Now the calls in flight are bounded; one more is refused with 503 while they hang, and /healthz says so."""
    fake.default_mode = "block"
    bound = 4
    # The upstream timeout is far beyond the test's own 10 s request timeout: a proxy that queued the
    # extra call behind the hung ones would make that request time out and the test fail.
    with proxy(fake.url, tmp_path / "log", max_retries=0, timeout_s=120.0, max_concurrency=bound) as (
        url,
        log,
    ):
        with ThreadPoolExecutor(bound) as pool:
            hung = [
                pool.submit(httpx.post, f"{url}/v1/chat/completions", json=chat(f"hung {i}"), timeout=120.0)
                for i in range(bound)
            ]
            _wait_for(lambda: _healthz(url)["in_flight"] == bound, "the hung calls to be in flight")
            health = _healthz(url)
            assert health["saturated"] and health["max_concurrency"] == bound
            refused = post(url, chat("an unrelated call"))
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["type"] == "saturated"
            assert _healthz(url)["rejected"] == 1
            fake.release.set()  # the upstream recovers: every hung call completes
            assert [f.result().status_code for f in hung] == [200] * bound
        assert _healthz(url)["in_flight"] == 0 and not _healthz(url)["saturated"]
        fake.default_mode = "ok"
        assert post(url, chat("after")).status_code == 200
    rows = read_rows(tmp_path / "log")
    assert len(rows) == bound + 1 and all(
        r["status"] == "ok" for r in rows
    )  # the refused call is not a frontier call


def test_a_call_has_a_deadline_over_all_its_attempts(fake, tmp_path):
    fake.default_mode = "error500"
    # Each 500 is retried after backoff; the deadline ends the call before the 50 retries do.
    with proxy(
        fake.url, tmp_path / "log", max_retries=50, backoff_s=0.2, max_backoff_s=0.2, deadline_s=0.5
    ) as (url, log):
        response = post(url, chat())
    assert response.status_code == 504
    (row,) = read_rows(tmp_path / "log")
    assert row["status"] == "timeout" and row["error"] == "Deadline" and row["retries"] < 50


def test_a_trickling_stream_is_cut_at_the_deadline(fake, tmp_path):
    fake.default_mode, fake.slow_s = "slow", 1.0  # the first token comes 1 s after the headers
    # Each read may wait 8 s (so the read timeout never races the 1 s gap); the call as a whole has 0.5 s.
    with proxy(fake.url, tmp_path / "log", max_retries=0, timeout_s=8.0, deadline_s=0.5) as (url, log):
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", json=chat(stream=True), timeout=HTTP_TIMEOUT_S
        ) as r:
            body = b"".join(r.iter_bytes())
        assert _healthz(url)["in_flight"] == 0  # the slot is free again
    assert b"[DONE]" not in body
    (row,) = read_rows(tmp_path / "log")
    assert row["status"] == "timeout" and row["error"] == "Deadline"
