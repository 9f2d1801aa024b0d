"""Per-class metric names: any label text gives a name MLflow accepts, distinct per label, mapped back."""

from __future__ import annotations

import pytest
from mlflow.utils.validation import _validate_metric_name, _validate_param_name

from ml.evaluate.metrics import label_of_metric, macro_f1, metric_key, per_class_metrics

AWKWARD = [
    "billing_refund",
    "what is this?",
    "billing / invoices",
    "Réclamation",
    "UPPER case",
    "日本語",
    "..",
    "/",
    "a.b",
    "a_b",
    "a-b",
    "$5 off",
    "50%",
    "x" * 200,
    "card:lost",
    "is it?",
    "is it!",
]


@pytest.mark.parametrize("label", AWKWARD)
def test_every_label_gives_a_name_mlflow_accepts(label):
    name = "eval.f1." + metric_key(label)
    _validate_metric_name(name)
    _validate_param_name(name)
    assert len(name) <= 250  # MLflow's limit on a key


def test_names_are_distinct_stable_and_readable():
    keys = [metric_key(label) for label in AWKWARD]
    assert len(set(keys)) == len(keys)
    assert metric_key("billing_refund") == "billing_refund"  # already safe: unchanged, so old runs compare
    assert metric_key("what is this?").startswith("what_is_this_")
    assert metric_key("what is this?") == metric_key("what is this?")


def test_names_map_back_to_their_labels_for_display():
    logged = per_class_metrics("eval.f1.", {label: 0.5 for label in AWKWARD})
    assert sorted(label_of_metric(name, "eval.f1.", AWKWARD) for name in logged) == sorted(AWKWARD)
    assert label_of_metric("eval.accuracy", "eval.f1.", AWKWARD) is None


@pytest.mark.parametrize(
    "y_true, y_pred, n, expected",
    [
        ([0, 0, 1, 1], [0, 0, 1, 1], 3, 1.0),  # class 2 absent from the split: not counted as 0
        ([0, 0, 1, 1], [0, 0, 0, 0], 2, (2 / 3 + 0) / 2),
        ([], [], 2, 0.0),
    ],
)
def test_macro_f1_counts_the_classes_present(y_true, y_pred, n, expected):
    assert macro_f1(y_true, y_pred, n) == pytest.approx(expected)
