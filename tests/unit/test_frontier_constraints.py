"""The ninety-day test as pure arithmetic: call-log rows → percentiles, rates, cost, verdict."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from ml import breakeven
from ml.costs.pricebook import PriceBook, PriceBookError
from ml.demo_data import generate
from ml.frontier.constraints import NoCallsError, constraints, measure, percentile, report, verdict
from ml.workflows import Workflow

ROOT = Path(__file__).resolve().parents[2]
BOOK = PriceBook.load(ROOT / "infra" / "price_book.yaml")
NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
WF = Workflow(
    name="ticket_routing",
    latency_sla_p99_ms=1000,
    monthly_budget_usd=Decimal("100"),
    monthly_calls=10_000,
    availability_target=0.9,
)


def row(
    i: int, *, status="ok", latency_ms=100.0, days_ago=1.0, tokens=(1000, 10), model="frontier-large", **extra
):
    ts = (NOW - timedelta(days=days_ago)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "call_id": f"c{i}",
        "ts": ts,
        "status": status,
        "latency_ms": latency_ms,
        "model": model,
        "tokens_in": tokens[0],
        "tokens_out": tokens[1],
        "cost_usd": 999.0,
        **extra,
    }


@pytest.mark.parametrize(
    "values, q, expected",
    [
        ([], 50, None),
        ([7.0], 99, 7.0),
        ([1.0, 2.0], 50, 1.0),
        ([1.0, 2.0], 51, 2.0),
        (list(range(1, 101)), 50, 50),
        (list(range(1, 101)), 95, 95),
        (list(range(1, 101)), 99, 99),
        (list(range(100, 0, -1)), 99, 99),
        (list(range(1, 1001)), 99.9, 999),
    ],
)
def test_percentile_is_nearest_rank(values, q, expected):
    assert percentile(values, q) == expected


def test_measure_counts_rates_and_prices_from_tokens_not_the_logged_cost():
    rows = [row(i, latency_ms=float(i)) for i in range(1, 97)]
    rows += [
        row(97, status="error", error="ServerError"),
        row(98, status="error", error="RateLimitError"),
        row(99, status="timeout", latency_ms=30_000.0),
        row(100, status="timeout"),
    ]
    m = measure(rows, WF, BOOK, now=NOW)
    assert (m.calls, m.ok_calls, m.errors, m.timeouts) == (100, 96, 2, 2)
    assert (m.error_rate, m.timeout_rate, m.availability) == (0.02, 0.02, 0.96)
    assert m.latency_ms == {"p50": 48.0, "p95": 92.0, "p99": 96.0}  # answered calls only
    per_call = (
        1000 * Decimal("3.00") + 10 * Decimal("15.00")
    ) / 1_000_000  # frontier-large in the price book
    assert m.cost_per_call_usd == per_call and m.monthly_cost_usd == per_call * 10_000
    assert m.ttft_ms == {"p50": None, "p95": None, "p99": None}


def test_the_window_and_duplicates():
    rows = [
        row(1, days_ago=0.5),
        row(1, days_ago=0.5),
        row(2, days_ago=89.9),
        row(3, days_ago=90.1),
        row(4, days_ago=-0.1),
        row(5, days_ago=10, ttft_ms=40.0, latency_ms=90.0),
    ]
    m = measure(rows, WF, BOOK, now=NOW)
    assert m.calls == 3  # c1 once; c3 before the window; c4 after now
    assert measure(rows, WF, BOOK, now=NOW, window_days=7).calls == 1
    assert m.ttft_ms["p50"] == 40.0


@pytest.mark.parametrize(
    "p99_ms, monthly_usd, availability, failing, words",
    [
        (900, "90", 0.95, [], ["all inside range", "the case for post-training does not close"]),
        (1370, "90", 0.95, ["latency"], ["latency fails: p99 1,370 ms is 37% over the 1,000 ms SLA"]),
        (900, "112", 0.95, ["cost"], ["cost fails: $112.00 a month is 12% over the $100.00 budget"]),
        (
            900,
            "90",
            0.885,
            ["reliability"],
            ["reliability fails: availability 88.50% is 1.50 points below the 90.00%"],
        ),
        (
            2000,
            "300",
            0.5,
            ["latency", "cost", "reliability"],
            ["100% over", "200% over", "40.00 points below"],
        ),
    ],
)
def test_verdict_names_what_fails_and_by_how_much(p99_ms, monthly_usd, availability, failing, words):
    c = breakeven.Constraints(
        p99_latency_ms=p99_ms,
        sla_ms=1000,
        monthly_cost_usd=Decimal(monthly_usd),
        monthly_budget_usd=Decimal(100),
        availability=availability,
        availability_target=0.9,
        proprietary_data=True,
        inference_cost_is_budget_line=True,
    )
    got_failing, text = verdict(c)
    assert got_failing == failing
    for w in words:
        assert w in text
    # The same Constraints feed the break-even decision, which must agree on what fails.
    result = breakeven.break_even(
        breakeven.BreakEvenInputs(
            calls_per_month=1000,
            growth_per_month=0,
            frontier_cost_per_call_usd=Decimal("0.01"),
            self_hosted_cost_per_call_usd=Decimal("0.001"),
            one_time_usd=0,
            recurring_mlops_usd_per_month=0,
        )
    )
    assert breakeven.decide(c, result).constraints_failing == failing


def test_constraints_carry_the_workflow_targets():
    c = constraints(measure([row(i, latency_ms=2000.0) for i in range(10)], WF, BOOK, now=NOW), WF)
    assert (c.p99_latency_ms, c.sla_ms, c.monthly_budget_usd, c.availability_target) == (
        2000.0,
        1000,
        100,
        0.9,
    )
    assert verdict(c)[0] == ["latency"]


@pytest.mark.parametrize(
    "rows, error, words",
    [
        ([], NoCallsError, ["no frontier calls", "mlops proxy"]),
        ([row(1, days_ago=200)], NoCallsError, ["--window-days"]),
        ([row(1, status="error"), row(2, status="timeout")], ValueError, ["none of 2", "upstream URL"]),
        ([row(1, model="no-such-model")], PriceBookError, ["no-such-model", "frontier_per_1m_tokens"]),
        ([{**row(1), "ts": "yesterday"}], ValueError, ["c1", "ISO 8601"]),
    ],
)
def test_what_cannot_be_measured_says_why(rows, error, words):
    with pytest.raises(error) as info:
        measure(rows, WF, BOOK, now=NOW)
    for w in words:
        assert w in str(info.value)


def test_the_demo_log_fails_on_latency_as_the_seed_describes(tmp_path):
    info = generate(tmp_path, n_calls=600, n_gold=0)
    rows = [json.loads(line) for line in Path(info["call_log_path"]).read_text().splitlines()]
    wf = Workflow(
        name="ticket_routing",
        latency_sla_p99_ms=300,
        monthly_budget_usd=Decimal(2500),
        monthly_calls=3_000_000,
        availability_target=0.995,
    )
    out = report(rows, wf, BOOK, now=datetime(2026, 10, 30, tzinfo=timezone.utc))
    assert out["measured"]["calls"] == 600 and out["measured"]["ok_calls"] == info["n_ok"]
    assert "latency" in out["constraints_failing"] and not out["all_inside_range"]
    assert out["shadow"] is None
    json.dumps(out)  # the report file is plain JSON
