"""Quality metrics on hand-computed tables, and the promotion gate's every branch."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ml.evaluate.gate import decide
from ml.evaluate.metrics import (
    classification_report,
    confusion_matrix,
    expected_calibration_error,
    per_class_f1,
)
from ml.workflows import Gate

# Metrics --------------------------------------------------------------------------------

# true 0 0 1 1 2 2, predicted 0 1 1 1 2 0:
#   class 0: tp 1, predicted 2, actual 2 -> F1 2*1/(2+2) = 1/2
#   class 1: tp 2, predicted 3, actual 2 -> F1 2*2/(3+2) = 4/5
#   class 2: tp 1, predicted 1, actual 2 -> F1 2*1/(1+2) = 2/3
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]


def one_hot_probs(y_pred, n_classes, confidence=0.8):
    """Probabilities whose argmax is y_pred, the rest of the mass spread evenly."""
    probs = np.full((len(y_pred), n_classes), (1 - confidence) / (n_classes - 1))
    probs[np.arange(len(y_pred)), y_pred] = confidence
    return probs


def test_confusion_matrix_rows_are_true_columns_predicted():
    assert confusion_matrix(Y_TRUE, Y_PRED, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_per_class_f1_by_hand():
    f1 = per_class_f1(confusion_matrix(Y_TRUE, Y_PRED, 3))
    assert f1 == pytest.approx([1 / 2, 4 / 5, 2 / 3])


@pytest.mark.parametrize(
    "y_true, y_pred, n, expected_f1",
    [
        ([0, 1], [0, 1], 2, [1.0, 1.0]),  # perfect
        ([0, 1], [1, 0], 2, [0.0, 0.0]),  # all wrong
        ([0, 0, 0], [0, 0, 0], 2, [1.0, 0.0]),  # class 1 never seen nor predicted: 0, not NaN
        ([0, 0, 1, 1], [0, 0, 0, 0], 2, [2 / 3, 0.0]),  # class 1 never predicted
    ],
)
def test_per_class_f1_edge_tables(y_true, y_pred, n, expected_f1):
    assert per_class_f1(confusion_matrix(y_true, y_pred, n)) == pytest.approx(expected_f1)


def test_classification_report_by_hand():
    report = classification_report(one_hot_probs(Y_PRED, 3), Y_TRUE, ["a", "b", "c"])
    assert report["n_examples"] == 6
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["macro_f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert report["per_class_f1"] == pytest.approx({"a": 1 / 2, "b": 4 / 5, "c": 2 / 3})
    assert report["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # every confidence is 0.8 (bin 8), accuracy 4/6: ECE = |4/6 - 0.8|
    assert report["ece"] == pytest.approx(abs(4 / 6 - 0.8))
    json.dumps(report, allow_nan=False)  # JSON-safe: no numpy types, no NaN


@pytest.mark.parametrize(
    "probs, y_true, expected",
    [
        # one row per bin: (|1-0.9| + |0-0.8| + |1-0.7| + |1-0.6|) / 4
        ([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], [0, 1, 1, 0], (0.1 + 0.8 + 0.3 + 0.4) / 4),
        # two rows in bin 9: accuracy 1/2, mean confidence 0.94
        ([[0.92, 0.08], [0.96, 0.04]], [0, 1], abs(0.5 - 0.94)),
        # confidence exactly 1 falls in the last bin; right and sure is perfectly calibrated
        ([[1.0, 0.0], [0.0, 1.0]], [0, 1], 0.0),
        # sure and wrong is the worst there is
        ([[1.0, 0.0], [0.0, 1.0]], [1, 0], 1.0),
        # bins weight by their share of the rows: 3/4 * |1 - 0.95| + 1/4 * |0 - 0.55|
        ([[0.95, 0.05]] * 3 + [[0.55, 0.45]], [0, 0, 0, 1], 0.75 * 0.05 + 0.25 * 0.55),
    ],
)
def test_expected_calibration_error_by_hand(probs, y_true, expected):
    assert expected_calibration_error(np.array(probs), y_true) == pytest.approx(expected)


def test_empty_inputs_score_zero_rather_than_crash():
    report = classification_report(np.zeros((0, 2)), [], ["a", "b"])
    assert (report["n_examples"], report["accuracy"], report["macro_f1"], report["ece"]) == (0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: classification_report(np.ones((2, 3)) / 3, [0, 1], ["a", "b"]),
            r"shape \(2, 3\); expected \(n, 2\)",
        ),
        (lambda: classification_report(np.ones(4) / 4, [0], ["a", "b"]), "expected"),
        (lambda: confusion_matrix([0, 1, 2], [0, 1], 3), "3 true labels but 2 predictions"),
        (lambda: confusion_matrix([0, -1], [0, 1], 2), r"outside 0..1"),  # -1 must not count as class 1
        (lambda: confusion_matrix([0, 2], [0, 1], 2), r"\[2\] are outside"),
    ],
)
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_nan_probabilities_give_nan_scores_so_the_gate_fails():
    # A diverged model: argmax of a NaN row is class 0, which would look merely mediocre.
    probs = np.full((4, 2), np.nan)
    report = classification_report(probs, [0, 0, 0, 1], ["a", "b"])
    assert math.isnan(report["macro_f1"]) and math.isnan(report["accuracy"]) and math.isnan(report["ece"])
    assert all(math.isnan(v) for v in report["per_class_f1"].values())
    decision = decide({**report, "latency_p99_ms": 1.0}, None, Gate(min_macro_f1=0.0), latency_sla_p99_ms=50)
    assert not decision.passed


# The gate -------------------------------------------------------------------------------

GATE = Gate(min_macro_f1=0.6, max_macro_f1_drop=0.02, per_class_f1_floor=0.3)
GOOD = {
    "macro_f1": 0.8,
    "per_class_f1": {"a": 0.7, "b": 0.9},
    "latency_p99_ms": 20.0,
    "cost_per_1k_calls_usd": 0.01,
}


def run(challenger=None, champion=None, *, sla=50.0, max_cost=None, **changes):
    challenger = {**(challenger or GOOD), **changes}
    return decide(
        challenger,
        champion,
        GATE,
        latency_sla_p99_ms=sla,
        max_cost_per_1k_calls_usd=max_cost,
        champion_version="3" if champion is not None else None,
    )


def failed(decision) -> set[str]:
    return {c.name for c in decision.checks if not c.passed}


def test_a_good_challenger_with_no_champion_passes_on_absolute_thresholds_only():
    decision = run()
    assert decision.passed and decision.reasons == [] and decision.champion_version is None
    assert [c.name for c in decision.checks] == ["min_macro_f1", "per_class_f1_floor", "latency_sla"]


@pytest.mark.parametrize(
    "changes, check",
    [
        ({"macro_f1": 0.59}, "min_macro_f1"),
        ({"per_class_f1": {"a": 0.29, "b": 0.9}}, "per_class_f1_floor"),
        ({"latency_p99_ms": 50.01}, "latency_sla"),
        # a figure we cannot measure fails its check
        ({"macro_f1": float("nan")}, "min_macro_f1"),
        ({"macro_f1": None}, "min_macro_f1"),
        ({"macro_f1": "0.9"}, "min_macro_f1"),
        ({"macro_f1": True}, "min_macro_f1"),
        ({"macro_f1": float("inf")}, "min_macro_f1"),
        ({"per_class_f1": {"a": float("nan"), "b": 0.9}}, "per_class_f1_floor"),
        ({"per_class_f1": {"a": None, "b": 0.9}}, "per_class_f1_floor"),
        ({"per_class_f1": {}}, "per_class_f1_floor"),
        ({"latency_p99_ms": float("nan")}, "latency_sla"),
        ({"latency_p99_ms": None}, "latency_sla"),
    ],
)
def test_each_check_fails_on_its_own(changes, check):
    decision = run(**changes)
    assert not decision.passed
    assert failed(decision) == {check}
    assert len(decision.reasons) == 1


def test_a_missing_figure_fails_its_check():
    challenger = {k: v for k, v in GOOD.items() if k != "latency_p99_ms"}
    assert failed(run(challenger)) == {"latency_sla"}


def test_the_boundaries_pass():
    decision = run(macro_f1=0.6, per_class_f1={"a": 0.3, "b": 0.9}, latency_p99_ms=50.0)
    assert decision.passed, decision.reasons


def test_the_worst_class_is_named_in_the_reason():
    decision = run(per_class_f1={"refunds": 0.1, "billing": 0.9})
    assert "refunds" in decision.reasons[0] and "0.1000" in decision.reasons[0]


@pytest.mark.parametrize(
    "champion_f1, challenger_f1, passes",
    [
        (0.80, 0.80, True),  # as good
        (0.80, 0.781, True),  # within the margin 0.02
        (0.80, 0.779, False),  # below champion - margin
        (0.70, 0.95, True),  # better
        (0.95, 0.90, False),  # better than the absolute floor, worse than the champion
    ],
)
def test_with_a_champion_the_margin_applies(champion_f1, challenger_f1, passes):
    decision = run(champion={"macro_f1": champion_f1}, macro_f1=challenger_f1)
    assert decision.passed is passes
    assert "vs_champion_macro_f1" in [c.name for c in decision.checks]
    assert decision.champion_version == "3"
    if not passes:
        assert failed(decision) == {"vs_champion_macro_f1"}
        assert "champion v3" in decision.reasons[0]


def test_the_absolute_floor_applies_even_with_a_weak_champion():
    decision = run(champion={"macro_f1": 0.4}, macro_f1=0.55)
    assert failed(decision) == {"min_macro_f1"}


@pytest.mark.parametrize("champion", [{"macro_f1": float("nan")}, {"macro_f1": None}, {}])
def test_a_champion_without_a_figure_blocks_automatic_promotion(champion):
    decision = run(champion=champion)
    assert failed(decision) == {"vs_champion_macro_f1"}


@pytest.mark.parametrize(
    "max_cost, cost, passes",
    [
        (None, 99.0, True),  # no frontier price known: the check is left out
        (0.05, 0.01, True),
        (0.05, 0.05, True),
        (0.05, 0.051, False),
        (0.05, None, False),
        (0.05, float("nan"), False),
    ],
)
def test_the_cost_check_is_optional(max_cost, cost, passes):
    decision = run(max_cost=max_cost, cost_per_1k_calls_usd=cost)
    assert decision.passed is passes
    assert ("cost_per_1k_calls" in [c.name for c in decision.checks]) is (max_cost is not None)


def test_every_failing_check_is_reported_at_once():
    decision = run(
        champion={"macro_f1": 0.9},
        max_cost=0.001,
        macro_f1=0.5,
        per_class_f1={"a": 0.0, "b": 1.0},
        latency_p99_ms=900.0,
    )
    assert failed(decision) == {
        "min_macro_f1",
        "vs_champion_macro_f1",
        "per_class_f1_floor",
        "latency_sla",
        "cost_per_1k_calls",
    }
    assert len(decision.reasons) == 5


def test_numpy_figures_are_accepted_and_the_decision_is_json():
    challenger = {
        "macro_f1": np.float32(0.8),
        "per_class_f1": {"a": np.float64(0.7), "b": np.float32(0.9)},
        "latency_p99_ms": np.float64(20.0),
        "cost_per_1k_calls_usd": np.float32(0.01),
    }
    decision = run(challenger, champion={"macro_f1": np.float32(0.79)}, max_cost=0.05)
    assert decision.passed, decision.reasons
    replayed = json.loads(json.dumps(decision.to_dict()))
    assert replayed["passed"] is True and replayed["champion_version"] == "3"
    assert {c["name"] for c in replayed["checks"]} == {
        "min_macro_f1",
        "vs_champion_macro_f1",
        "per_class_f1_floor",
        "latency_sla",
        "cost_per_1k_calls",
    }
