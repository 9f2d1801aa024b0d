"""The one cost model, against cases computed by hand to the cent, and the readers that must agree on it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timezone
from decimal import Decimal as D
from pathlib import Path

import pytest

from ml.breakeven import BreakEvenInputs, MlopsSpend, break_even, flip_points, pays
from ml.costs import unit_costs
from ml.costs.pricebook import PriceBook
from ml.costs.unit_costs import ServingPlan

ROOT = Path(__file__).resolve().parents[2]
CENT = D("0.01")

BOOK = """
version: 1
currency: USD
compute_hourly:
  cpu: [{from: 2026-01-01, usd: "0.1008"}]
  gpu_a10g: [{from: 2026-01-01, usd: "1.006"}]
storage_gb_month: [{from: 2026-01-01, usd: "0.023"}]
frontier_per_1m_tokens:
  frontier-large:
    - {from: 2026-01-01, input_usd: "3.00", output_usd: "15.00"}
    - {from: 2026-06-01, input_usd: "2.00", output_usd: "10.00"}
  frontier-mini: [{from: 2026-01-01, input_usd: "0.40", output_usd: "1.60"}]
people_hourly:
  ml_engineer: [{from: 2026-01-01, usd: "110.64"}]
"""


@pytest.fixture
def book(tmp_path) -> PriceBook:
    path = tmp_path / "book.yaml"
    path.write_text(BOOK)
    return PriceBook.load(path)


# --- serving: replicas by the hour, the always-on floor -------------------------------------


@pytest.mark.parametrize(
    "throughput, hour, min_replicas, peak, calls, replicas, month_usd, per_call_usd",
    [
        # The demo: 3 M calls a month = 3e6 / 2,628,000 s = 1.1416 calls/s on average, 3.42 at a 3x peak;
        # one replica serves 342/s, but two always run: 2 x $0.1008 x 730 h = $147.168 a month,
        # $147.168 / 3e6 = $0.000049056 a call. (Priced by the call it was $0.49 a month.)
        (342, D("0.1008"), 2, 3, 3_000_000, 2, D("147.168"), D("0.000049056")),
        # Peak-sized: 1e8 calls = 38.05/s average, 114.16/s at 3x, 10/s a replica -> ceil(11.42) = 12 replicas;
        # 12 x $1 x 730 = $8,760; / 1e8 = $0.0000876.
        (10, D(1), 2, 3, 100_000_000, 12, D(8760), D("0.0000876")),
        # Exactly at a boundary: 7,884,000 calls = 3.0/s with no peak, 1/s a replica -> exactly 3, no fourth;
        # 3 x $2 x 730 = $4,380; / 7,884,000 = $0.000555555...
        (1, D(2), 1, 1, 7_884_000, 3, D(4380), D(4380) / D(7_884_000)),
        # One call over the boundary needs a fourth replica: 4 x $2 x 730 = $5,840.
        (1, D(2), 1, 1, 7_884_001, 4, D(5840), D(5840) / D(7_884_001)),
    ],
)
def test_serving_month_and_per_call_cost(
    throughput, hour, min_replicas, peak, calls, replicas, month_usd, per_call_usd
):
    plan = ServingPlan(
        throughput_calls_per_s=throughput,
        instance_hour_usd=hour,
        min_replicas=min_replicas,
        peak_to_average=peak,
    )
    assert plan.replicas(calls) == replicas
    assert plan.usd_per_month(calls) == month_usd
    assert plan.cost_per_call_usd(calls) == per_call_usd


def test_no_traffic_still_pays_the_floor():
    plan = ServingPlan(throughput_calls_per_s=342, instance_hour_usd=D("0.1008"))
    assert plan.usd_per_month(0) == plan.floor_usd_per_month() == D("147.168")
    with pytest.raises(ValueError, match="calls_per_month=0"):
        plan.cost_per_call_usd(0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(throughput_calls_per_s=0, instance_hour_usd=1), "throughput_calls_per_s=0 must be > 0"),
        (dict(throughput_calls_per_s=1, instance_hour_usd=-1), "instance_hour_usd=-1 is negative"),
        (dict(throughput_calls_per_s=1, instance_hour_usd=1, min_replicas=0), "min_replicas=0"),
        (dict(throughput_calls_per_s=1, instance_hour_usd=1, peak_to_average=D("0.5")), "must be >= 1"),
        (dict(throughput_calls_per_s="fast", instance_hour_usd=1), "'fast' is not a number"),
    ],
)
def test_serving_plan_rejects_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ServingPlan(**kwargs)


# --- frontier: each call at its own model and day ------------------------------------------


def test_each_call_is_priced_at_its_own_model_and_day(book):
    rows = [
        # 1,000 x $3 + 100 x $15 = $4,500 per 1M -> $0.0045 (before the 1 June price cut)
        {
            "ts": "2026-05-31T23:59:00Z",
            "model": "frontier-large",
            "tokens_in": 1000,
            "tokens_out": 100,
            "status": "ok",
        },
        # the same call on 1 June: 1,000 x $2 + 100 x $10 -> $0.003
        {
            "ts": "2026-06-01T00:00:00Z",
            "model": "frontier-large",
            "tokens_in": 1000,
            "tokens_out": 100,
            "status": "ok",
        },
        # the small model: 2,000 x $0.40 + 500 x $1.60 -> $0.0016
        {
            "ts": "2026-06-02T08:00:00Z",
            "model": "frontier-mini",
            "tokens_in": 2000,
            "tokens_out": 500,
            "status": "ok",
        },
        # not billed
        {
            "ts": "2026-06-02T08:00:00Z",
            "model": "frontier-large",
            "tokens_in": 9000,
            "tokens_out": 0,
            "status": "error",
        },
    ]
    cost = unit_costs.measured_frontier_cost(rows, book)
    # ($0.0045 + $0.003 + $0.0016) / 3 = $0.0030333...; all tokens at the most-called model's
    # newest price would say (4,000 x 2 + 700 x 10) / 1M / 3 = $0.005.
    assert cost.calls == 3 and cost.basis == "measured"
    assert cost.cost_per_call_usd == (D("0.0045") + D("0.003") + D("0.0016")) / 3
    assert unit_costs.measured_frontier_cost(rows[3:], book) is None


def test_a_declared_frontier_is_priced_and_says_so(book):
    cost = unit_costs.declared_frontier_cost("frontier-large", 800, 60, book, date(2026, 3, 1))
    assert cost.cost_per_call_usd == D("0.0033")  # 800 x $3 + 60 x $15 = $3,300 per 1M calls
    assert cost.basis == "declared" and "declared, not measured" in cost.detail


# --- break-even with the floor, and the flip point -----------------------------------------


def _inputs(calls=3_000_000, **kw) -> BreakEvenInputs:
    values = dict(
        calls_per_month=calls,
        growth_per_month=0,
        frontier_cost_per_call_usd=D("0.0033"),
        serving=ServingPlan(throughput_calls_per_s=342, instance_hour_usd=D("0.1008")),
        spend=MlopsSpend({}, {"people": D("4425.60")}),
    )
    return BreakEvenInputs(**{**values, **kw})


def test_break_even_charges_the_floor_every_month():
    result = break_even(_inputs())
    # Each month: 3e6 x $0.0033 = $9,900 frontier; $147.168 serving + $4,425.60 people = $4,572.768.
    assert [r.serving_usd for r in result.rows] == [D("147.168")] * 24
    assert result.rows[0].post_training_usd == D("4572.768")
    assert result.cumulative_saving_at_horizon_usd.quantize(CENT) == (
        24 * (D(9900) - D("4572.768"))
    ).quantize(CENT)
    # The volume that just covers it: c x 0.0033 - 147.168 >= 4,425.60 -> c >= 1,385,687.27 -> 1,385,688.
    assert result.break_even_calls_per_month == 1_385_688


def test_the_flip_point_is_found_on_the_break_even_function():
    flips = {f.parameter: f for f in flip_points(_inputs())}
    # It stops paying when c x 0.0033 < 4,572.768 a month, i.e. below 1,385,687 calls = 0.4619x the volume:
    # 0.46x does not pay; 0.47x still does. The frontier price crosses at the same factor.
    assert flips["volume"].factor == D("0.46") and flips["volume"].pays_now
    assert not pays(break_even(_inputs(calls=3_000_000 * D("0.46"))))
    assert pays(break_even(_inputs(calls=3_000_000 * D("0.47"))))
    assert flips["frontier_price"].factor == D("0.46")
    # People: 9,900 - 147.168 = 9,752.83 a month can carry 2.2037x the $4,425.60 -> flips at 2.21x.
    assert flips["people_time"].factor == D("2.21")
    assert "at 0.46× the declared volume it no longer pays" == flips["volume"].text
    # And from the other side: a workflow that does not pay, and what would make it.
    low = flip_points(_inputs(calls=1_000_000))
    assert (
        low[0].parameter in ("volume", "frontier_price")
        and not low[0].pays_now
        and low[0].factor == D("1.39")
    )


# --- the gate and the report price the same version the same ---------------------------------

WORKFLOWS = """
workflows:
  human_labelled:
    labels: [a, b]
    monthly_calls: 3000000
    frontier: {model: frontier-large, tokens_in_per_call: 800, tokens_out_per_call: 60}
  undeclared:
    labels: [a, b]
"""


@pytest.fixture
def state(tmp_path, monkeypatch):
    (tmp_path / "workflows.yaml").write_text(WORKFLOWS)
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(tmp_path / "workflows.yaml"))
    monkeypatch.setenv("MLOPS_PRICE_BOOK_FILE", str(ROOT / "infra" / "price_book.yaml"))
    from ml.config import load_settings
    from ml.pipeline import cost_report

    # The registered version's measured throughput (eval.throughput_calls_per_s in MLflow).
    monkeypatch.setattr(cost_report, "_serving_throughput", lambda settings, wf: (342.5, "3"))
    settings = load_settings()
    settings.ensure_dirs()
    return settings


def test_gate_and_report_give_the_same_student_cost_for_the_same_version(state):
    from ml.pipeline import distill
    from ml.pipeline.cost_report import build_report
    from ml.workflows import get_workflow

    wf = get_workflow(state.workflows_file, "human_labelled")
    build_report(wf.name)
    report = json.loads((state.reports_dir / wf.name / "breakeven.json").read_text())
    gate_per_1k = D(str(distill._serving_cost_per_1k_usd(state, wf, 342.5)))
    assert (gate_per_1k / 1000).quantize(D("1e-12")) == D(report["self_hosted_cost_per_call_usd"]).quantize(
        D("1e-12")
    )
    # ... and that figure carries the floor: 2 x $0.1008 x 730 / 3e6.
    assert D(report["self_hosted_cost_per_call_usd"]) == D("0.000049056")
    assert D(str(distill._frontier_cost_per_call_usd(state, wf))) == D(report["frontier_cost_per_call_usd"])


def test_a_workflow_without_a_call_log_gets_a_report_from_its_declaration(state):
    from ml.pipeline.cost_report import build_report

    out = build_report("human_labelled")
    report = json.loads(Path(out["report"]).read_text())
    assert report["frontier"]["basis"] == "declared" and report["constraints"] == "not measured yet"
    assert "not measured yet" in report["verdict"] and report["basis"]["volume_basis"] == "declared"
    assert D(report["serving"]["usd_per_month"]) >= 2 * D("0.1008") * 730
    assert report["flip_points"] and report["basis"]["flip"].startswith("at ")
    assert (state.reports_dir / "human_labelled" / "breakeven.html").is_file()


def test_a_workflow_with_nothing_to_price_gets_a_pending_report_not_a_failure(state):
    from ml.pipeline.cost_report import build_report

    out = build_report("undeclared")
    report = json.loads(Path(out["report"]).read_text())
    assert (
        report["pending"]
        and report["verdict"].startswith("no verdict yet")
        and "frontier:" in report["verdict"]
    )
    assert (state.reports_dir / "undeclared" / "costs_focus.csv").is_file()  # the books are exported anyway
    assert not (state.reports_dir / "undeclared" / "breakeven.html").exists()


def test_the_ninety_day_report_says_not_measured_yet(state):
    from ml.frontier import build_report

    report = build_report("human_labelled", settings=state, now=datetime(2026, 12, 1, tzinfo=timezone.utc))
    assert report["verdict"].startswith("not measured yet") and report["measured"] is None


def test_cli_json_html_and_cost_page_show_the_same_verdict_basis_and_margin(state, capsys):
    from ml.cli import main
    from ml.costs import review_page
    from ml.costs.ledger import Ledger

    assert main(["costs", "report", "--refresh", "--json", "-w", "human_labelled"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)  # exactly one JSON document on stdout
    assert main(["costs", "report", "-w", "human_labelled"]) == 0
    text = capsys.readouterr().out
    html_report = (state.reports_dir / "human_labelled" / "breakeven.html").read_text()
    with Ledger(state.ledger_url) as ledger:
        page = review_page.render_page([review_page.review("human_labelled", "", state.reports_dir, ledger)])
    import html as html_lib

    for needle in (
        report["verdict"],
        report["basis"]["flip"],
        report["basis"]["reconciliation"],
        report["basis"]["recurring"],
        "2 replica(s) of cpu",
        "$147.17 a month",
    ):
        assert (
            needle in text and needle in html_lib.unescape(html_report) and needle in html_lib.unescape(page)
        ), needle
    assert "$-" not in text + html_report + page  # money is -$1,234, never $-1,234


def test_the_report_prices_the_variant_the_gate_judged():
    from ml.pipeline.cost_report import served_throughput

    # The gate judges (and logs as eval.served.*) the served variant, e.g. ONNX int8 at 250 calls/s,
    # not the torch model's 100/s: the report prices the same figure.
    assert (
        served_throughput({"eval.throughput_calls_per_s": 100.0, "eval.served.throughput_calls_per_s": 250.0})
        == 250.0
    )
    assert served_throughput({"eval.throughput_calls_per_s": 100.0}) == 100.0  # registered before variants
    assert served_throughput({}) is None


def test_the_flip_point_is_the_nearest_one_when_whole_replicas_make_the_saving_a_saw_tooth():
    # One replica serves 2,628,000 calls a month (1/s) and costs $2,000; a call saves $0.001. With n
    # replicas it pays between 2,000,000·n and 2,628,000·n calls: at 10,512,000 (4 full replicas) it
    # pays, below 8,000,000 (0.761x) it does not, and at 0.5-0.6x (3 replicas' band) it pays again.
    # Bisection from [0.001, 1] alone lands in that lower band (0.57x); the nearest flip is 0.76x.
    plan = ServingPlan(
        throughput_calls_per_s=1, instance_hour_usd=D(2000) / 730, min_replicas=1, peak_to_average=1
    )
    inputs = BreakEvenInputs(
        calls_per_month=10_512_000,
        growth_per_month=0,
        frontier_cost_per_call_usd=D("0.001"),
        serving=plan,
        spend=MlopsSpend({}, {}),
        horizon_months=1,
    )
    assert plan.replicas(10_512_000) == 4 and plan.usd_per_month(10_512_000).quantize(CENT) == D(8000)
    assert pays(break_even(inputs)) and pays(
        break_even(replace(inputs, calls_per_month=10_512_000 * D("0.6")))
    )
    assert {f.parameter: f.factor for f in flip_points(inputs)}["volume"] == D("0.76")


def test_recurring_spend_is_averaged_over_the_platform_s_months_not_the_older_call_log(state):
    from datetime import timedelta

    from ml.costs import capture
    from ml.costs.ledger import Ledger
    from ml.pipeline.cost_report import build_report

    book = PriceBook.load(state.price_book_file)
    today = datetime.now(timezone.utc)
    with Ledger(state.ledger_url) as ledger:
        # Frontier calls from 80 days ago (the log predates the platform), people's hours today.
        old = (today - timedelta(days=80)).isoformat()
        capture.book_frontier_calls(
            ledger,
            [{"ts": old, "model": "frontier-large", "tokens_in": 1_000_000, "tokens_out": 0, "status": "ok"}],
            book,
            "human_labelled",
        )
        capture.book_manual(
            ledger,
            price_book=book,
            workflow="human_labelled",
            on=today.date(),
            quantity="40",
            person="ana",
            role="ml_engineer",
        )
    report = json.loads(Path(build_report("human_labelled")["report"]).read_text())
    # 40 h x $110.64 = $4,425.60 in the platform's first month, not spread over the log's 2.7 months.
    assert D(report["recurring_usd_per_month"]) == D("4425.60")
    assert "$3.00 of frontier calls over 1.0 month(s) of call log" in report["basis"]["reconciliation"]
