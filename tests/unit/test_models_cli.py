"""`mlops models show`: every number the gate saw, formatted so none reads as zero when it is not."""

from __future__ import annotations

import math

import pytest

from ml.cli.models import _number, _numbers_lines


@pytest.mark.parametrize(
    "value, shown",
    [
        (None, "-"),
        (True, "True"),
        (80, "80"),
        (4716732, "4,716,732"),
        (0.0, "0.0000"),
        (0.91234, "0.9123"),
        (9.69e-06, "9.69e-06"),  # a cost per call: never "0.0000"
        (-0.9874, "-0.9874"),
        (2889.4, "2,889"),
        (math.nan, "nan"),  # shown as what it is: the gate failed on it
        (math.inf, "inf"),
        ("abc", "abc"),
    ],
)
def test_number(value, shown):
    assert _number(value) == shown


EVALUATION = {
    "eval_version": "2a5adf77",
    "challenger": {
        "macro_f1": 0.91,
        "latency_p99_ms": 9.6,
        "cost_per_1k_calls_usd": 9.69e-06,
        "n_examples": 80,
        "per_class_f1": {"billing": 0.95, "shipping": math.nan},
        "confusion_matrix": [[1, 0], [0, 1]],
        "int8": {"macro_f1_cost": 0.004},
    },
    "champion": {
        "macro_f1": 0.88,
        "latency_p99_ms": 11.5,
        "cost_per_1k_calls_usd": 1.27e-05,
        "n_examples": 80,
        "per_class_f1": {"billing": 0.9, "shipping": 0.86},
    },
    "decision": {"champion_version": "3"},
    "frontier_cost_per_1k_calls_usd": 0.935,
}


def test_numbers_lines_show_challenger_and_champion_side_by_side():
    lines = _numbers_lines(EVALUATION)
    text = "\n".join(lines)
    assert "frozen eval set 2a5adf77" in lines[0] and "champion v3" in lines[1]
    row = {
        line.split()[0]
        if not line.strip().startswith(("F1", "int8", "frontier"))
        else " ".join(line.split()[:2]): line.split()[-2:]
        for line in lines[2:]
    }
    assert row["macro_f1"] == ["0.9100", "0.8800"]
    assert row["latency_p99_ms"] == ["9.6000", "11.5000"]
    assert row["cost_per_1k_calls_usd"] == ["9.69e-06", "1.27e-05"]
    assert row["F1 billing"] == ["0.9500", "0.9000"] and row["F1 shipping"] == ["nan", "0.8600"]
    assert "int8 macro_f1_cost" in text and "0.935" in text
    assert "confusion_matrix" not in text  # a matrix is a PNG artifact, not a row


def test_without_a_champion_its_column_is_empty():
    lines = _numbers_lines({**EVALUATION, "champion": None, "decision": {"champion_version": None}})
    assert lines[1].split()[-1] == "champion"
    assert [ln.split()[-2:] for ln in lines if ln.split()[0] == "macro_f1"] == [["0.9100", "-"]]
