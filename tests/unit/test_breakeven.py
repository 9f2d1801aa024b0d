"""Break-even arithmetic against tables computed by hand, and the verdict table of the seed's frame."""

from dataclasses import replace
from decimal import Decimal as D

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml.breakeven import (
    BreakEvenInputs,
    Constraints,
    MlopsSpend,
    break_even,
    decide,
    frontier_cost_per_call_usd,
    monthly_volumes,
    naive_vs_fully_loaded,
    sensitivity,
    spend_from_category_totals,
)

# --- per-call costs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens_in, tokens_out, price_in, price_out, expected",
    [
        # 1,000 in × $3/1M = $0.003; 200 out × $15/1M = $0.003 → $0.006
        (1000, 200, D(3), D(15), D("0.006")),
        # 500 × $0.50/1M = $0.00025; 0 out → $0.00025
        (500, 0, D("0.50"), D(10), D("0.00025")),
        # floats go through str(): 0.1 × 1M tokens → $0.1 exactly, not 0.1000000000000000055
        (1_000_000, 0, 0.1, 0, D("0.1")),
    ],
)
def test_frontier_cost_per_call(tokens_in, tokens_out, price_in, price_out, expected):
    assert frontier_cost_per_call_usd(tokens_in, tokens_out, price_in, price_out) == expected


# --- volumes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "calls, growth, months, expected",
    [
        (1000, 0, 3, [1000, 1000, 1000]),
        # 1000 × 1.1^k: 1000, 1100, 1210, 1331, 1464.1 → 1464, 1610.51 → 1611
        (1000, D("0.1"), 6, [1000, 1100, 1210, 1331, 1464, 1611]),
        (1000, D("-0.5"), 3, [1000, 500, 250]),
        (1000, 0.1, 0, []),
    ],
)
def test_monthly_volumes(calls, growth, months, expected):
    assert monthly_volumes(calls, growth, months) == expected


def test_monthly_volumes_rejects_growth_at_or_below_minus_one():
    with pytest.raises(ValueError, match=r"growth_per_month=-1 must be a number > -1"):
        monthly_volumes(1000, -1, 3)


# --- the month-by-month table --------------------------------------------------------------


def _flat(**overrides) -> BreakEvenInputs:
    # 1,000 calls a month, no growth; frontier $0.01 a call, self-hosted $0.002 → $8 saved a month
    # on calls, less $4 recurring → $4 net a month, against $20 set-up.
    values = dict(
        calls_per_month=1000,
        growth_per_month=0,
        frontier_cost_per_call_usd=D("0.01"),
        self_hosted_cost_per_call_usd=D("0.002"),
        one_time_usd=D(20),
        recurring_mlops_usd_per_month=D(4),
        horizon_months=6,
    )
    return BreakEvenInputs(**{**values, **overrides})


def test_flat_volume_table():
    # month: frontier 1000 × 0.01 = 10; post-training 1000 × 0.002 + 4 = 6, plus 20 in month 1.
    # cumulative frontier 10m; cumulative post 20 + 6m; saving 4m - 20 → 0 in month 5 (equality counts).
    result = break_even(_flat())
    table = [
        (
            r.month,
            r.calls,
            r.frontier_usd,
            r.post_training_usd,
            r.cumulative_frontier_usd,
            r.cumulative_post_training_usd,
            r.cumulative_saving_usd,
        )
        for r in result.rows
    ]
    assert table == [
        (1, 1000, 10, 26, 10, 26, -16),
        (2, 1000, 10, 6, 20, 32, -12),
        (3, 1000, 10, 6, 30, 38, -8),
        (4, 1000, 10, 6, 40, 44, -4),
        (5, 1000, 10, 6, 50, 50, 0),
        (6, 1000, 10, 6, 60, 56, 4),
    ]
    assert result.break_even_month == 5
    assert result.cumulative_saving_at_horizon_usd == 4
    # recurring $4 ÷ $0.008 saved a call = 500 calls a month
    assert result.break_even_calls_per_month == 500


def test_growing_volume_table():
    # volumes 1000, 1100, 1210, 1331, 1464, 1611 (sum 7716); saving a call 0.008; recurring 5; one-time 30.
    # net monthly: 3, 3.8, 4.68, 5.648, 6.712, 7.888; cumulative less 30: -27, -23.2, -18.52, -12.872, -6.16, 1.728
    result = break_even(
        _flat(growth_per_month=D("0.1"), one_time_usd=D(30), recurring_mlops_usd_per_month=D(5))
    )
    assert [r.cumulative_saving_usd for r in result.rows] == [
        D(-27),
        D("-23.2"),
        D("-18.52"),
        D("-12.872"),
        D("-6.16"),
        D("1.728"),
    ]
    assert result.break_even_month == 6
    # frontier 7716 × 0.01 = 77.16; post 30 + 6 × 5 + 7716 × 0.002 = 75.432
    assert result.rows[-1].cumulative_frontier_usd == D("77.16")
    assert result.rows[-1].cumulative_post_training_usd == D("75.432")


def test_serving_floor_is_recurring():
    # a $4 a month minimum instance: $8 recurring → net 0 a month, never repays the $20 set-up;
    # break-even volume 8 ÷ 0.008 = 1,000 calls, exactly today's volume.
    result = break_even(_flat(serving_fixed_usd_per_month=D(4)))
    assert result.break_even_month is None
    assert result.cumulative_saving_at_horizon_usd == -20
    assert result.break_even_calls_per_month == 1000


def test_never_breaks_even_within_horizon():
    # one-time 100: saving 4m - 100 → month 25, one past a 24-month horizon.
    assert break_even(_flat(one_time_usd=D(100), horizon_months=24)).break_even_month is None
    assert break_even(_flat(one_time_usd=D(100), horizon_months=25)).break_even_month == 25


def test_self_hosted_dearer_per_call_never_breaks_even():
    result = break_even(
        _flat(self_hosted_cost_per_call_usd=D("0.02"), one_time_usd=0, recurring_mlops_usd_per_month=0)
    )
    assert result.break_even_month is None
    assert result.break_even_calls_per_month is None
    assert result.cumulative_saving_at_horizon_usd == D(-60)  # 6 × 1000 × (0.01 - 0.02)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(one_time_usd=None), "one_time_usd is missing"),
        (dict(horizon_months=0), "horizon_months=0 must be a whole number >= 1"),
        (dict(horizon_months=1.5), "horizon_months=1.5 must be a whole number >= 1"),
        (dict(growth_per_month="fast"), "growth_per_month='fast' must be a number > -1"),
        (dict(spend=MlopsSpend({"people": D(1)})), "one_time_usd=20 disagrees with spend's total 1"),
    ],
)
def test_inputs_reject_bad_values(overrides, message):
    with pytest.raises(ValueError) as excinfo:
        _flat(**overrides)
    assert message in str(excinfo.value)


# --- spend by category, naive vs fully loaded ----------------------------------------------


def test_spend_from_category_totals():
    # 3 observed months: curation and first training count once; evaluation 1,500/3 = 500 and
    # people 12,000/3 = 4,000 a month recur; frontier_api and serving are priced per call, so dropped.
    spend = spend_from_category_totals(
        {
            "data_curation": D(9000),
            "training_compute": D(3000),
            "evaluation": D(1500),
            "people": D(12000),
            "frontier_api": D(50000),
            "serving": D(800),
        },
        observed_months=3,
    )
    assert spend.one_time_usd == {"data_curation": 9000, "training_compute": 3000}
    assert spend.recurring_usd_per_month == {"evaluation": 500, "people": 4000}
    assert spend.fully_loaded() == (12000, 4500)
    assert spend.compute_only() == (3000, 0)


@pytest.mark.parametrize(
    "totals, months, message",
    [
        ({"gpus": D(1)}, 3, "unknown category 'gpus'"),
        ({"people": D(1)}, 0, "observed_months=0 must be > 0"),
        ({"people": D(-1)}, 3, "is negative"),
    ],
)
def test_spend_from_category_totals_rejects(totals, months, message):
    with pytest.raises(ValueError) as excinfo:
        spend_from_category_totals(totals, months)
    assert message in str(excinfo.value)


def test_mlops_spend_rejects_per_call_categories():
    with pytest.raises(ValueError, match="unknown category 'frontier_api'"):
        MlopsSpend(recurring_usd_per_month={"frontier_api": D(1)})


# A realistic case: 2M calls a month growing 5%; 1,500 in / 200 out tokens at $2.50 / $10 per 1M;
# a $4/h instance serving 50 calls/s at 40% utilisation; a small team's set-up and running costs.
REALISTIC_SPEND = MlopsSpend(
    one_time_usd={"data_curation": D(20000), "training_compute": D(2000), "people": D(30000)},
    recurring_usd_per_month={
        "evaluation": D(500),
        "keeping_current": D(1500),
        "versioning_storage": D(200),
        "people": D(8000),
        "tooling": D(300),
        "training_compute": D(400),
    },
)


def _realistic(**overrides) -> BreakEvenInputs:
    values = dict(
        calls_per_month=2_000_000,
        growth_per_month=D("0.05"),
        frontier_cost_per_call_usd=frontier_cost_per_call_usd(1500, 200, D("2.5"), D(10)),
        self_hosted_cost_per_call_usd=D(4) / D(72_000),  # $4 an hour / (50 calls/s × 3,600 s × 0.4),
        spend=REALISTIC_SPEND,
    )
    return BreakEvenInputs(**{**values, **overrides})


def test_naive_breaks_even_earlier_than_fully_loaded():
    # compute only: month 1 frontier 2M × 0.00575 = $11,500 vs 2M × 0.0000556 + 400 + 2,000 ≈ $2,511.
    # fully loaded: ~$11,389 saved on calls, grows 5%, less $10,900 a month and $52,000 once →
    # Σ 11,389 × 1.05^k - 10,900m - 52,000 turns positive in month 13.
    naive, full = naive_vs_fully_loaded(_realistic())
    assert naive.break_even_month == 1
    assert full.break_even_month == 13
    assert naive.cumulative_saving_at_horizon_usd > full.cumulative_saving_at_horizon_usd > 0
    assert full.inputs.one_time_usd == 52000 and full.inputs.recurring_mlops_usd_per_month == 10900
    assert naive.inputs.one_time_usd == 2000 and naive.inputs.recurring_mlops_usd_per_month == 400


def test_naive_view_needs_the_breakdown():
    with pytest.raises(ValueError, match="needs the spend by category"):
        naive_vs_fully_loaded(_flat())


# --- sensitivity ---------------------------------------------------------------------------


def test_sensitivity_hand_table():
    # the flat case with its $4 a month as people's time and the $20 set-up as curation.
    # volume ×2: 16 - 4 = 12 net a month → 12m ≥ 20 in month 2; ×0.5: 4 - 4 = 0 → never.
    # frontier price ×2: 1000 × 0.02 - 2 - 4 = 14 → month 2; ×0.5: 5 - 6 = -1 → never.
    # retrain frequency: nothing recurring is retraining here → month 5 at every factor.
    # people ×2: recurring 8 → net 0 → never; ×0.5: 2 → net 6 → 6m ≥ 20 in month 4.
    inputs = _flat(
        one_time_usd=None,
        recurring_mlops_usd_per_month=None,
        spend=MlopsSpend({"data_curation": D(20)}, {"people": D(4)}),
    )
    months = {
        (r.parameter, r.factor): r.break_even_month for r in sensitivity(inputs, factors=(D("0.5"), 1, 2))
    }
    assert months == {
        ("volume", D("0.5")): None,
        ("volume", 1): 5,
        ("volume", 2): 2,
        ("frontier_price", D("0.5")): None,
        ("frontier_price", 1): 5,
        ("frontier_price", 2): 2,
        ("retrain_frequency", D("0.5")): 5,
        ("retrain_frequency", 1): 5,
        ("retrain_frequency", 2): 5,
        ("people_time", D("0.5")): 4,
        ("people_time", 1): 5,
        ("people_time", 2): None,
    }


def test_retrain_frequency_scales_recurring_retraining_only():
    # set-up $20 of training compute; $2 keeping current + $2 people a month; $8 saved on calls a month.
    # retrain ×2: recurring 4 + 2 = 6 → net 2 → 2m ≥ 20 in month 10 (the set-up is not retrained);
    # retrain ×0.5: recurring 1 + 2 = 3 → net 5 → month 4.
    inputs = _flat(
        one_time_usd=None,
        recurring_mlops_usd_per_month=None,
        horizon_months=12,
        spend=MlopsSpend({"training_compute": D(20)}, {"keeping_current": D(2), "people": D(2)}),
    )
    rows = sensitivity(inputs, factors=(D("0.5"), D(2)), parameters=["retrain_frequency"])
    assert [r.break_even_month for r in rows] == [4, 10]


def _order(month):  # never = later than any month
    return float("inf") if month is None else month


@pytest.mark.parametrize(
    "parameter, earlier_when_larger",
    [
        ("volume", True),
        ("frontier_price", True),
        ("retrain_frequency", False),
        ("people_time", False),
    ],
)
def test_sensitivity_is_monotone(parameter, earlier_when_larger):
    factors = (D("0.25"), D("0.5"), D(1), D(2), D(4))
    rows = sensitivity(_realistic(), factors=factors, parameters=[parameter])
    months = [_order(r.break_even_month) for r in rows]
    savings = [r.cumulative_saving_at_horizon_usd for r in rows]
    if earlier_when_larger:
        assert months == sorted(months, reverse=True) and savings == sorted(savings)
    else:
        assert months == sorted(months) and savings == sorted(savings, reverse=True)
    assert len(set(months)) > 1  # the parameter moved the answer, so the test can fail


def test_sensitivity_rejects_unknown_parameter_and_missing_breakdown():
    with pytest.raises(ValueError, match="unknown sensitivity parameter 'latency'"):
        sensitivity(_realistic(), parameters=["latency"])
    with pytest.raises(
        ValueError, match="varying retrain_frequency and people_time needs the spend by category"
    ):
        sensitivity(_flat())
    assert len(sensitivity(_flat(), parameters=["volume", "frontier_price"])) == 6


# --- properties ----------------------------------------------------------------------------

money = st.decimals(min_value=0, max_value=100_000, places=2)
per_call = st.decimals(min_value=0, max_value=1, places=6)


@settings(max_examples=60, deadline=None)
@given(
    calls=st.integers(0, 10_000_000),
    growth=st.decimals(min_value="-0.2", max_value="0.3", places=2),
    one_time=money,
    recurring=money,
    self_hosted=per_call,
    low=per_call,
    high=per_call,
)
def test_saving_is_monotone_in_frontier_price(calls, growth, one_time, recurring, self_hosted, low, high):
    low, high = sorted((low, high))
    common = dict(
        calls_per_month=calls,
        growth_per_month=growth,
        self_hosted_cost_per_call_usd=self_hosted,
        one_time_usd=one_time,
        recurring_mlops_usd_per_month=recurring,
    )
    cheap = break_even(BreakEvenInputs(frontier_cost_per_call_usd=low, **common))
    dear = break_even(BreakEvenInputs(frontier_cost_per_call_usd=high, **common))
    assert dear.cumulative_saving_at_horizon_usd >= cheap.cumulative_saving_at_horizon_usd
    assert _order(dear.break_even_month) <= _order(cheap.break_even_month)


@settings(max_examples=60, deadline=None)
@given(recurring=money, frontier=per_call, self_hosted=per_call)
def test_break_even_volume_is_the_smallest_that_covers_recurring(recurring, frontier, self_hosted):
    inputs = BreakEvenInputs(
        calls_per_month=1,
        growth_per_month=0,
        frontier_cost_per_call_usd=frontier,
        self_hosted_cost_per_call_usd=self_hosted,
        one_time_usd=0,
        recurring_mlops_usd_per_month=recurring,
    )
    calls = break_even(inputs).break_even_calls_per_month
    if frontier <= self_hosted:
        assert calls is None
        return
    saving_per_call = frontier - self_hosted
    assert calls * saving_per_call >= recurring
    assert calls == 0 or (calls - 1) * saving_per_call < recurring
    # with no set-up, that steady volume breaks even in month 1
    assert break_even(replace(inputs, calls_per_month=calls)).break_even_month == 1


# --- the verdict ---------------------------------------------------------------------------


def _constraints(**overrides) -> Constraints:
    values = dict(
        p99_latency_ms=250,
        sla_ms=300,
        monthly_cost_usd=D(8000),
        monthly_budget_usd=D(10000),
        availability=0.9995,
        availability_target=0.999,
        proprietary_data=True,
        inference_cost_is_budget_line=True,
    )
    return Constraints(**{**values, **overrides})


BREAKS_EVEN = break_even(_flat())  # month 5, +$4 at month 6
NEVER = break_even(_flat(one_time_usd=D(100)))  # -$76 at month 6


@pytest.mark.parametrize(
    "overrides, result, verdict, failing, deciding",
    [
        # all inside range: stay, and say the arithmetic would have saved money
        (
            {},
            BREAKS_EVEN,
            "stay on the frontier API",
            [],
            "latency, cost and reliability are all inside range, so the case for post-training does not close, "
            "even though the arithmetic saves $4.00 over 6 months",
        ),
        # each measurement exactly at its limit is inside range
        (
            dict(
                availability=0.999,
                p99_latency_ms=300,
                monthly_cost_usd=D(10000),
                error_rate=0.01,
                error_rate_max=0.01,
            ),
            NEVER,
            "stay on the frontier API",
            [],
            "latency, cost and reliability are all inside range, so the case for post-training does not close",
        ),
        (
            {},
            NEVER,
            "stay on the frontier API",
            [],
            "latency, cost and reliability are all inside range, so the case for post-training does not close",
        ),
        # latency fails, proprietary data, breaks even → pays
        (
            dict(p99_latency_ms=3120),
            BREAKS_EVEN,
            "post-training pays from month 5",
            ["latency"],
            "latency fails on the frontier API and the fully loaded cost breaks even in month 5",
        ),
        # latency fails, but nothing proprietary and the spend is not a budget line → stay
        (
            dict(p99_latency_ms=3120, proprietary_data=False, inference_cost_is_budget_line=False),
            BREAKS_EVEN,
            "stay on the frontier API",
            ["latency"],
            "latency fails, but with no proprietary data and inference cost not a budget line "
            "a general provider remains the right call",
        ),
        # cost fails and is a budget line (no proprietary data), but never breaks even → stay
        (
            dict(monthly_cost_usd=D(12000), proprietary_data=False),
            NEVER,
            "stay on the frontier API",
            ["cost"],
            "post-training does not break even within 6 months",
        ),
        # availability below target → reliability fails → pays
        (
            dict(availability=0.995),
            BREAKS_EVEN,
            "post-training pays from month 5",
            ["reliability"],
            "reliability fails on the frontier API and the fully loaded cost breaks even in month 5",
        ),
        # error rate alone fails reliability
        (
            dict(error_rate=0.02, error_rate_max=0.01),
            BREAKS_EVEN,
            "post-training pays from month 5",
            ["reliability"],
            "reliability fails on the frontier API and the fully loaded cost breaks even in month 5",
        ),
        (
            dict(p99_latency_ms=400, monthly_cost_usd=D(12000), availability=0.99),
            NEVER,
            "stay on the frontier API",
            ["latency", "cost", "reliability"],
            "post-training does not break even within 6 months",
        ),
        (
            dict(
                p99_latency_ms=400,
                monthly_cost_usd=D(12000),
                availability=0.99,
                proprietary_data=False,
                inference_cost_is_budget_line=False,
            ),
            BREAKS_EVEN,
            "stay on the frontier API",
            ["latency", "cost", "reliability"],
            "latency, cost and reliability fail, but with no proprietary data and "
            "inference cost not a budget line a general provider remains the right call",
        ),
    ],
)
def test_verdict_table(overrides, result, verdict, failing, deciding):
    decision = decide(_constraints(**overrides), result)
    assert decision.verdict == verdict
    assert decision.post_training_pays == verdict.startswith("post-training pays")
    assert decision.constraints_failing == failing
    assert decision.reasons[0] == deciding


def test_reasons_state_their_numbers():
    decision = decide(
        _constraints(
            p99_latency_ms=3120,
            monthly_cost_usd=D(12000),
            availability=0.995,
            error_rate=0.02,
            error_rate_max=0.01,
        ),
        BREAKS_EVEN,
        naive_result=break_even(_flat(one_time_usd=0, recurring_mlops_usd_per_month=0)),
    )
    assert decision.reasons[1:] == [
        "p99 latency 3,120 ms exceeds the 300 ms SLA by 940%",
        "monthly cost $12,000 exceeds the $10,000 budget by 20%",
        "availability 99.50% is below the 99.90% target",
        "error rate 2.00% exceeds the 1.00% maximum",
        "the use case touches proprietary data",
        "inference cost ($12,000 a month) is a budget line",
        "fully loaded, post-training breaks even in month 5 and saves $4.00 over 6 months",
        "counting compute only, it breaks even in month 1 and saves $48.00 over 6 months",
    ]


def test_shrinking_volume_can_cross_and_fall_back():
    # calls halve monthly: 1000, 500, 250, 125, 62.5 → 62, 31.25 → 31; $0.008 saved a call, $3 recurring,
    # no set-up: net 5, 1, -1, -2, -2.504, -2.752; cumulative 5, 6, 5, 3, 0.496, -2.256 → crosses in
    # month 1, $2.26 behind by month 6.
    result = break_even(_flat(growth_per_month=D("-0.5"), one_time_usd=0, recurring_mlops_usd_per_month=D(3)))
    assert result.break_even_month == 1 and result.cumulative_saving_at_horizon_usd < 0
    decision = decide(_constraints(p99_latency_ms=900), result)
    assert decision.verdict == "stay on the frontier API"
    assert decision.reasons[0] == "post-training breaks even in month 1 but is $2.26 behind by month 6"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(sla_ms=0), "sla_ms=0 and monthly_budget_usd=10000 must be > 0"),
        (dict(monthly_budget_usd=0), "sla_ms=300 and monthly_budget_usd=0 must be > 0"),
        (dict(availability=99.9), "availability=99.9 must be a share in [0, 1]"),
        (dict(error_rate=0.01), "error_rate and error_rate_max go together"),
        (dict(monthly_budget_usd="lots"), "monthly_budget_usd='lots' is not a number"),
    ],
)
def test_constraints_reject_bad_values(overrides, message):
    with pytest.raises(ValueError) as excinfo:
        _constraints(**overrides)
    assert message in str(excinfo.value)
