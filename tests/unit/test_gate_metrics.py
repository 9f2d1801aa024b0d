"""The gate on declared named metrics (`gate.metrics`): min, max_drop against the champion's same
metric, a per-part metric judged on its worst part; the default declaration is today's gate."""

from __future__ import annotations

import json

import pytest

from ml.evaluate.gate import decide
from ml.workflows import Gate, MetricRule

GOOD = {
    "macro_f1": 0.8,
    "accuracy": 0.85,
    "per_class_f1": {"a": 0.7, "b": 0.9},
    "latency_p99_ms": 20.0,
    "cost_per_1k_calls_usd": 0.01,
}
DECLARED = Gate(
    metrics=(
        MetricRule("accuracy", min=0.7, max_drop=0.02, what="accuracy"),
        MetricRule("per_class_f1", min=0.5, max_drop=0.1, what="class F1", per_part=True),
    )
)


def run(gate=DECLARED, champion=None, **changes):
    return decide(
        {**GOOD, **changes},
        champion,
        gate,
        latency_sla_p99_ms=50.0,
        champion_version="4" if champion is not None else None,
    )


def failed(decision) -> set[str]:
    return {c.name for c in decision.checks if not c.passed}


def test_the_declared_metrics_are_judged_and_nothing_else():
    # macro-F1 far below classification's default floor (0.5) does not matter: it is not declared
    decision = run(macro_f1=0.1)
    assert decision.passed, decision.reasons
    assert [c.name for c in decision.checks] == ["min_accuracy", "per_class_f1_floor", "latency_sla"]


def test_with_a_champion_each_declared_max_drop_is_checked():
    decision = run(champion={"accuracy": 0.86, "per_class_f1": {"a": 0.75, "b": 0.8}})
    assert decision.passed, decision.reasons
    assert [c.name for c in decision.checks] == [
        "min_accuracy",
        "vs_champion_accuracy",
        "per_class_f1_floor",
        "vs_champion_per_class_f1",
        "latency_sla",
    ]


@pytest.mark.parametrize(
    "champion, changes, check",
    [
        ({"accuracy": 0.90, "per_class_f1": {"a": 0.7}}, {}, "vs_champion_accuracy"),  # 0.85 < 0.90 - 0.02
        # the worst class: the champion's 0.85 - 0.1 = 0.75 > the challenger's worst, 0.7
        ({"accuracy": 0.85, "per_class_f1": {"a": 0.85, "b": 0.9}}, {}, "vs_champion_per_class_f1"),
        ({"accuracy": 0.70, "per_class_f1": {"a": 0.7}}, {"accuracy": 0.69}, "min_accuracy"),  # within 0.02
        # a champion without the figure blocks automatic promotion, as for macro-F1
        ({"per_class_f1": {"a": 0.7}}, {}, "vs_champion_accuracy"),
    ],
)
def test_a_max_drop_failure_names_the_champion(champion, changes, check):
    decision = run(champion=champion, **changes)
    assert not decision.passed and failed(decision) == {check}
    if check.startswith("vs_champion"):
        assert "champion v4" in decision.reasons[0]


def test_the_worst_part_is_named_and_a_missing_metric_fails():
    decision = run(per_class_f1={"refunds": 0.2, "billing": 0.9})
    assert failed(decision) == {"per_class_f1_floor"} and "refunds" in decision.reasons[0]
    missing = {k: v for k, v in GOOD.items() if k != "accuracy"}
    assert failed(decide(missing, None, DECLARED, latency_sla_p99_ms=50.0)) == {"min_accuracy"}


def test_a_rule_with_only_max_drop_adds_no_floor():
    gate = Gate(metrics=(MetricRule("accuracy", max_drop=0.0),))
    assert [c.name for c in run(gate).checks] == ["latency_sla"]
    assert failed(run(gate, champion={"accuracy": 0.9})) == {"vs_champion_accuracy"}


@pytest.mark.parametrize(
    "challenger, champion",
    [
        (GOOD, None),
        ({**GOOD, "macro_f1": 0.55}, {"macro_f1": 0.6}),
        ({**GOOD, "per_class_f1": {"x": float("nan")}}, {"macro_f1": 0.7}),
        ({**GOOD, "per_class_f1": None, "macro_f1": None}, {}),
    ],
)
def test_the_default_declaration_is_todays_gate_written_out(challenger, champion):
    legacy = Gate(min_macro_f1=0.6, max_macro_f1_drop=0.02, per_class_f1_floor=0.3)
    written = Gate(
        metrics=(
            MetricRule("macro_f1", min=0.6, max_drop=0.02, what="macro-F1"),
            MetricRule("per_class_f1", min=0.3, what="class F1", per_part=True),
        )
    )
    assert legacy.judged_metrics == written.metrics
    one, two = (
        decide(challenger, champion, g, latency_sla_p99_ms=50.0, champion_version="2")
        for g in (legacy, written)
    )
    # as JSON: a NaN threshold (a champion without the figure) equals itself there
    assert json.dumps(one.to_dict()) == json.dumps(two.to_dict())
