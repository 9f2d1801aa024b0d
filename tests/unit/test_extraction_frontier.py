"""The frontier side of an extraction workflow (issue 18), on generated contracts (ml/demo_contracts.py):
the ninety-day report counts the teacher's errors as curation refuses them, and reads tokens, cost
and latency per call from the call log as recorded (a 6-page contract is thousands of tokens);
the cost report prices those calls by the one pricing path; the proxy records the JSON answer
where ingestion reads it (response_json); the export's gold sample nulls that answer.

The proxy runs against the fake OpenAI-compatible server of tests/integration on 127.0.0.1.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from ml.costs import unit_costs
from ml.costs.pricebook import PriceBook
from ml.demo_contracts import FIELDS, generate, read_jsonl
from ml.frontier import calllog, constraints
from ml.frontier.client import FrontierClient
from ml.frontier.proxy import ServerThread, build_app
from ml.tasks import extraction
from ml.workflows import Workflow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from fake_openai import FakeOpenAI  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BOOK = PriceBook.load(ROOT / "infra" / "price_book.yaml")
NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
WF = Workflow(
    name="contracts",
    task="extraction",
    fields=FIELDS,
    latency_sla_p99_ms=2000,
    monthly_budget_usd=Decimal("500"),
    monthly_calls=10_000,
    availability_target=0.99,
)
TICKETS = Workflow(name="tickets", labels=("billing", "login"), latency_sla_p99_ms=2000)


@pytest.fixture(scope="module")
def contracts(tmp_path_factory) -> dict:
    """120 generated contracts of 1-6 pages and their call log, every call inside the window."""
    out = tmp_path_factory.mktemp("contracts")
    generated = generate(out, n_documents=120, n_gold=0, seed=11, start=date(2026, 8, 10), days=60)
    return {**generated, "rows": read_jsonl(generated["call_log_path"])}


def test_the_report_counts_the_teachers_errors_as_curation_refuses_them(contracts):
    rows = contracts["rows"]
    report = constraints.report(rows, WF, BOOK, now=NOW)
    errors = report["teacher_errors"]
    answered = [r for r in rows if r["status"] == "ok"]
    _, refused = extraction.curate(answered, FIELDS)
    counts = extraction.refusal_counts(refused)
    assert errors["answers"] == len(answered) == contracts["n_ok"]
    assert errors["by_reason"] == {k: counts[k] for k in extraction.TEACHER_ERROR_REASONS & set(counts)}
    assert errors["errors"] == sum(errors["by_reason"].values()) > 0
    assert errors["error_rate"] == errors["errors"] / len(answered)
    # Failed calls are the provider's failures (availability), never the teacher's errors.
    assert errors["other_refusals"] == {}
    # A distractor value occurs in the text: no check catches it, so errors <= what the demo planted.
    planted = sum(n for kind, n in contracts["teacher_answers"].items() if kind != "correct")
    assert errors["errors"] <= planted + counts["overlapping_spans"]


def test_a_classification_report_has_no_curation_to_count():
    row = {"call_id": "c1", "ts": "2026-10-30T10:00:00Z", "status": "ok", "latency_ms": 90.0}
    row |= {"model": "frontier-large", "tokens_in": 100, "tokens_out": 2, "response_label": "billing"}
    report = constraints.report([row], TICKETS, BOOK, now=NOW)
    assert report["teacher_errors"] is None and report["measured"]["tokens_in_per_call"] == 100


def test_tokens_cost_and_latency_per_call_are_the_logs_own_for_long_documents(contracts):
    rows = contracts["rows"]
    m = constraints.measure(rows, WF, BOOK, now=NOW)
    ok = [r for r in rows if r["status"] == "ok"]
    assert m.tokens_in_per_call == sum(r["tokens_in"] for r in ok) / len(ok)
    assert m.tokens_out_per_call == sum(r["tokens_out"] for r in ok) / len(ok)
    # Nothing shortens a document: a call's tokens are the prompt plus its whole text, about len / 4.
    longest = max(ok, key=lambda r: len(r["request_text"]))
    assert longest["tokens_in"] >= len(longest["request_text"]) // 4 > 2000
    assert m.tokens_in_per_call > 1000
    # Each call priced at its own model and day by the one pricing function, never the logged cost.
    priced = [
        unit_costs.priced_call_usd(BOOK, r["model"], unit_costs.call_day(r), r["tokens_in"], r["tokens_out"])
        for r in ok
    ]
    assert m.cost_per_call_usd == sum(priced, Decimal(0)) / len(ok)
    assert m.monthly_cost_usd == m.cost_per_call_usd * WF.monthly_calls
    assert m.latency_ms["p99"] == constraints.percentile([r["latency_ms"] for r in ok], 99) > 2000
    failing, _ = constraints.verdict(constraints.constraints(m, WF))
    assert "latency" in failing  # a multi-page prompt is read before the first token


def test_the_cost_report_and_break_even_price_the_same_calls_the_same_way(contracts, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    from ml.config import load_settings
    from ml.pipeline import cost_report

    settings = load_settings()
    log_dir = calllog.calllog_dir(settings.state_dir, WF.name)
    log_dir.mkdir(parents=True)
    (log_dir / "2026-10-01.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in contracts["rows"]), encoding="utf-8"
    )
    frontier = cost_report.frontier_side(settings, WF, BOOK, NOW)
    _, measured = cost_report._constraints(settings, WF, BOOK, NOW)
    m = constraints.measure(contracts["rows"], WF, BOOK, now=NOW)
    assert frontier.basis == "measured" and frontier.calls == m.ok_calls
    assert frontier.cost_per_call_usd == m.cost_per_call_usd
    assert Decimal(measured["cost_per_call_usd"]) == m.cost_per_call_usd
    assert measured["tokens_in_per_call"] == m.tokens_in_per_call
    # What a ticket-sized call of the same model costs: the contract's is many times that.
    ticket = unit_costs.declared_frontier_cost("frontier-large", 120, 3, BOOK, NOW.date())
    assert frontier.cost_per_call_usd > 20 * ticket.cost_per_call_usd


@pytest.fixture
def fake_teacher(contracts):
    """A fake upstream answering each contract as the demo's teacher did (its JSON, fences and all)."""
    by_text = {r["request_text"]: r["response_json"] for r in contracts["rows"] if r["status"] == "ok"}
    with FakeOpenAI(answer=lambda body: by_text[body["messages"][-1]["content"]]) as server:
        yield server


def test_the_proxy_records_the_json_answer_where_ingestion_reads_it(contracts, fake_teacher, tmp_path):
    ok = [r for r in contracts["rows"] if r["status"] == "ok"]
    _, refused = extraction.curate(ok, FIELDS)
    bad = next(r for r in refused if r["reason"] == "not_json")
    good = max((r for r in ok if r not in refused), key=lambda r: len(r["request_text"]))
    log = calllog.CallLog(tmp_path / "log")
    client = FrontierClient(
        fake_teacher.url, "sk-test", workflow=WF.name, fields=FIELDS, price_book=BOOK, sinks=[log.append]
    )
    try:
        with ServerThread(build_app(client)) as url:
            for r in (good, bad):
                body = {
                    "model": "frontier-large",
                    "messages": [
                        {"role": "system", "content": "Extract the fields as JSON."},
                        {"role": "user", "content": r["request_text"]},
                    ],
                }
                resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10.0)
                assert resp.status_code == 200
    finally:
        log.close()
    recorded = calllog.read_rows(tmp_path / "log")
    assert [r["response_json"] for r in recorded] == [good["response_json"], bad["response_json"]]
    assert all("response_label" not in r for r in recorded)
    assert recorded[0]["request_text"] == good["request_text"]  # the whole document, not a prefix
    accepted, refused_now = extraction.curate(recorded, FIELDS)
    assert [a["answer"] for a in accepted] == [extraction.parse_answer(good["response_json"])]
    assert [r["reason"] for r in refused_now] == ["not_json"]


def test_a_client_takes_labels_or_fields_not_both():
    with pytest.raises(ValueError, match="not both"):
        FrontierClient("http://127.0.0.1:9/v1", "", workflow="w", labels=("a",), fields=("b",))


def test_the_export_sets_the_gold_sample_aside_by_its_json_answer(contracts, tmp_path):
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    (log_dir / "2026-09-01.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in contracts["rows"]), encoding="utf-8"
    )
    result = calllog.export_for_curation(
        log_dir,
        tmp_path / "drop",
        tmp_path / "labeling",
        min_rows=10,
        gold_share=0.2,
        now=NOW,
        gold_columns=FIELDS,
    )
    batch = read_jsonl(Path(result["batch"]))
    assert len(batch) == len(contracts["rows"]) and result["gold_rows"] > 0
    nulled = [r for r in batch if r["status"] == "ok" and r["response_json"] is None]
    assert len(nulled) == result["gold_rows"] and all("response_label" not in r for r in batch)
    with open(result["gold_file"], encoding="utf-8") as f:
        sample = list(csv.reader(f))
    assert sample[0] == ["call_id", "text", *FIELDS] and len(sample) == result["gold_rows"] + 1
    # Curation keeps the set-aside calls out of training, by name.
    _, refused = extraction.curate(batch, FIELDS)
    assert extraction.refusal_counts(refused)["no_answer"] == result["gold_rows"]


def test_shadow_mode_refuses_a_field_tagger_by_name(tmp_path):
    from ml.frontier.proxy import Shadow

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForTokenClassification"]}))
    with calllog.CallLog(tmp_path / "shadow") as log, pytest.raises(ValueError, match="field tagger"):
        Shadow.for_model_dir(tmp_path, log, student="s", student_cost_per_call_usd=0)
