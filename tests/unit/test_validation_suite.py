"""The data gate, run with real Great Expectations: one good batch, then one broken thing at a time."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from ml.validation.suite import ValidationReport, build_suite, validate_batch
from ml.workflows import Validation

LABELS = ("billing", "bug", "account", "other")
RULES = Validation(
    min_rows=50,
    min_per_class=3,
    max_duplicate_ratio=0.2,
    min_text_chars=3,
    max_text_chars=2000,
    drift_p_value=0.001,
)
ROWS = 200  # 50 per label


def good_batch(rows: int = ROWS) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"ticket {i}: customer writes about order {i * 7}" for i in range(rows)],
            "label": [LABELS[i % len(LABELS)] for i in range(rows)],
            "source": "gold",
            "teacher_version": "",
            "teacher_probs": "",
        }
    )


def run(df, *, reference=None, rules=RULES, docs_dir=None, batch_id="batch-001") -> ValidationReport:
    return validate_batch(
        df, labels=LABELS, rules=rules, reference_label_counts=reference, batch_id=batch_id, docs_dir=docs_dir
    )


def found(report: ValidationReport) -> set[tuple[str, str | None]]:
    return {(f.expectation, f.column) for f in report.failures}


def with_text(df, rows, value):
    df = df.copy()
    df["text"] = df["text"].astype(object)
    for row in rows:
        df.at[row, "text"] = value
    return df


def relabel(df, mask, label):
    df = df.copy()
    df.loc[mask, "label"] = label
    return df


def test_good_batch_passes():
    report = run(good_batch(), reference={label: 1000 for label in LABELS})
    assert report.success, report.summary()
    assert report.failures == []
    assert report.row_count == ROWS
    stats = report.statistics
    assert stats["evaluated_expectations"] == stats["successful_expectations"] == 14  # 12 GX + 2 custom
    assert stats["skipped"] == []
    assert stats["label_counts"] == {label: 50 for label in LABELS}
    assert "PASSED" in report.summary().splitlines()[0]


def _few_other(df):
    # 'other' keeps 2 rows, below min_per_class=3; the rest become 'billing'
    other = df.index[df["label"] == "other"]
    return relabel(df, other[2:], "billing")


# (case, broken batch, [(expectation, column, words the observed value must contain)])
FAILING = [
    (
        "unknown labels",
        lambda df: relabel(df, df.index[:5], "foo"),
        [("expect_column_values_to_be_in_set", "label", "['foo']")],
    ),
    ("too few rows", lambda df: df.head(20), [("expect_table_row_count_to_be_between", None, "20 rows")]),
    ("class below min_per_class", _few_other, [("label_min_per_class", "label", "'other': 2")]),
    (
        "duplicate ratio too high",
        lambda df: with_text(df, range(60), "same complaint, again"),
        [("expect_column_proportion_of_unique_values_to_be_between", "text", "ratio 0.295")],
    ),
    (
        "empty text",
        lambda df: with_text(df, [3], ""),
        [
            ("expect_column_values_to_match_regex", "text", "empty or whitespace"),
            ("expect_column_value_lengths_to_be_between", "text", "shorter than 3"),
        ],
    ),
    (
        "whitespace-only text",
        lambda df: with_text(df, [3, 4], " \t \n "),
        [("expect_column_values_to_match_regex", "text", "2 of 200 texts are empty or whitespace")],
    ),
    (
        "null text",
        lambda df: with_text(df, [7], None),
        [("expect_column_values_to_not_be_null", "text", "1 of 200 texts are null (rows [7])")],
    ),
    (
        "null label",
        lambda df: relabel(df, df.index[:2], None),
        [("expect_column_values_to_not_be_null", "label", "2 of 200 rows have no label")],
    ),
    (
        "text too short",
        lambda df: with_text(df, [9], "ok"),
        [("expect_column_value_lengths_to_be_between", "text", "shorter than 3 chars (rows [9])")],
    ),
    (
        "text too long (10 MB)",
        lambda df: with_text(df, [0], "x" * 10_000_000),
        [
            (
                "expect_column_value_lengths_to_be_between",
                "text",
                "longer than 2000 chars (rows [0]), e.g. lengths [10000000]",
            )
        ],
    ),
]


@pytest.mark.parametrize("case, breaker, expected", FAILING, ids=[c[0] for c in FAILING])
def test_each_broken_rule_fails_with_its_own_failure(case, breaker, expected):
    report = run(breaker(good_batch()))
    assert not report.success
    assert len(report.failures) == len(expected), report.summary()
    for expectation, column, words in expected:
        matching = [
            f
            for f in report.failures
            if f.expectation == expectation and f.column == column and words in f.observed
        ]
        assert matching, f"{case}: no {expectation}[{column}] with {words!r} in\n{report.summary()}"
        assert all(f.fix for f in matching)
    # The report never carries a long text whole: observed values are cut.
    assert all(len(f.observed) <= 500 for f in report.failures)


def test_unknown_label_fix_names_the_labels_and_the_workflows_file():
    report = run(relabel(good_batch(), list(range(5)), "refund"))
    (failure,) = report.failures
    assert failure.observed == "labels not in the known set: ['refund'] (rows: 5)"
    assert "dags/workflows.yaml" in failure.fix


# (case, reference label counts, drifted?)
DRIFT = [
    ("same distribution", {label: 1000 for label in LABELS}, False),
    ("same distribution, small reference", {label: 40 for label in LABELS}, False),
    ("shifted towards billing", {"billing": 900, "bug": 50, "account": 25, "other": 25}, True),
    ("reference has a retired label", {**{label: 100 for label in LABELS}, "legacy": 300}, True),
]


@pytest.mark.parametrize("case, reference, drifted", DRIFT, ids=[c[0] for c in DRIFT])
def test_label_distribution_drift(case, reference, drifted):
    report = run(good_batch(), reference=reference)
    drift = report.statistics["custom_checks"]["label_distribution_drift"]
    assert drift["drifted"] is drifted
    assert (drift["p_value"] < RULES.drift_p_value) is drifted
    assert report.success is not drifted, report.summary()
    if drifted:
        (failure,) = report.failures
        assert (failure.expectation, failure.column) == ("label_distribution_drift", "label")
        assert "chi-square" in failure.observed


def test_drift_is_skipped_without_a_reference():
    report = run(good_batch(), reference=None)
    assert "label_distribution_drift" not in report.statistics["custom_checks"]
    assert any(s.startswith("label_distribution_drift") for s in report.statistics["skipped"])


def _duplicated_columns(df):
    out = df[["text", "label"]]
    out.columns = ["text", "text"]
    return out


# Batches GX cannot check as they are: a failed report naming the problem, never an exception.
STRUCTURAL = [
    (
        "missing text column",
        lambda df: df.drop(columns=["text"]),
        ("expect_column_to_exist", "text", "column 'text' is missing"),
    ),
    (
        "missing label column",
        lambda df: df.drop(columns=["label"]),
        ("expect_column_to_exist", "label", "column 'label' is missing"),
    ),
    (
        "all-null text column",
        lambda df: df.assign(text=None),
        ("expect_column_values_to_not_be_null", "text", "every text is null (200 rows)"),
    ),
    (
        "all-NaN text column",
        lambda df: df.assign(text=np.nan),
        ("expect_column_values_to_be_of_type", "text", "dtype is float64"),
    ),
    (
        "numeric label column",
        lambda df: df.assign(label=np.arange(len(df)) % 4),
        ("expect_column_values_to_be_of_type", "label", "dtype is int64"),
    ),
    (
        "one number among the texts",
        lambda df: with_text(df, [11], 12345),
        ("expect_column_values_to_be_of_type", "text", "1 of 200 values are not strings"),
    ),
    ("no rows", lambda df: df.head(0), ("expect_table_row_count_to_be_between", None, "0 rows")),
    ("repeated column names", _duplicated_columns, ("unique_column_names", None, "['text']")),
]


@pytest.mark.parametrize("case, breaker, expected", STRUCTURAL, ids=[c[0] for c in STRUCTURAL])
def test_structural_problems_give_a_failed_report(case, breaker, expected):
    report = run(breaker(good_batch()))
    assert not report.success
    expectation, column, words = expected
    assert any(
        f.expectation == expectation and f.column == column and words in f.observed for f in report.failures
    ), report.summary()
    # Checks that cannot mean anything on a broken column are skipped and said so, not run into errors.
    assert not any("could not be evaluated" in f.observed for f in report.failures), report.summary()
    assert not any(f.expectation == "great_expectations" for f in report.failures), report.summary()
    json.dumps(report.to_dict())


def test_missing_column_skips_its_content_checks_and_says_so():
    report = run(good_batch().drop(columns=["label"]))
    assert found(report) == {("expect_column_to_exist", "label")}
    skipped = report.statistics["skipped"]
    assert {s.split(" ")[0] for s in skipped} == {
        "label_is_string",
        "label_not_null",
        "label_known",
        "label_min_per_class",
        "label_distribution_drift",
    }
    assert all("column is missing" in s for s in skipped)


def test_report_round_trips_through_json():
    df = relabel(with_text(good_batch(), [0], "x" * 5000), [1], "foo")
    report = run(df, reference={"billing": 10, "bug": 10, "account": 10, "other": 10})
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["success"] is False
    stats = as_dict["statistics"]
    assert stats["unsuccessful_expectations"] == len(as_dict["failures"]) == 2
    assert (
        stats["evaluated_expectations"]
        == stats["successful_expectations"] + stats["unsuccessful_expectations"]
    )


def test_summary_has_one_line_per_failure():
    report = run(with_text(relabel(good_batch(), [0], "foo"), [5], "ok"))
    lines = report.summary().splitlines()
    # 12 GX expectations + label_min_per_class; drift is skipped without a reference
    assert lines[0] == "batch batch-001: FAILED - 2 of 13 checks failed, 200 rows"
    fails = [line for line in lines if line.startswith("  FAIL ")]
    assert len(fails) == 2
    assert all(" -> fix: " in line for line in fails)


def test_data_docs_are_built_into_docs_dir_only(tmp_path, monkeypatch):
    # GX writes relative to the working directory when misconfigured; nothing may land there.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    docs_dir = tmp_path / "docs"
    report = run(
        with_text(good_batch(), [0], "y" * 10_000_000), docs_dir=docs_dir, batch_id="drop/2024-05-01.csv"
    )
    assert report.docs_index == docs_dir.resolve() / "index.html"
    assert report.docs_index.is_file()
    pages = list((docs_dir / "validations").rglob("*.html"))
    assert len(pages) == 1 and "drop_2024-05-01.csv" in str(pages[0])
    # The 10 MB text is cut before it is rendered into HTML, and the cut value is on the page.
    assert "...(10000000 chars)" in pages[0].read_text(encoding="utf-8")
    assert max(p.stat().st_size for p in docs_dir.rglob("*.html")) < 1_000_000
    assert list(cwd.iterdir()) == []
    assert report.to_dict()["docs_index"] == str(report.docs_index)


def test_no_docs_without_docs_dir():
    assert run(good_batch()).docs_index is None


# --- the suite as code -------------------------------------------------------------------------


def test_suite_is_built_from_labels_and_rules():
    rules = replace(RULES, min_rows=7, max_duplicate_ratio=0.25, min_text_chars=4, max_text_chars=99)
    suite = build_suite(LABELS, rules)
    by_check = {e.meta["check"]: e for e in suite.expectations}
    assert len(by_check) == len(suite.expectations) == 12
    assert by_check["label_known"].value_set == list(LABELS)
    assert by_check["row_count"].min_value == 7
    assert by_check["text_duplicates"].min_value == pytest.approx(0.75)
    assert (by_check["text_min_chars"].min_value, by_check["text_max_chars"].max_value) == (4, 99)


def test_suite_keeps_only_existence_checks_of_a_missing_column():
    suite = build_suite(LABELS, RULES, missing_columns=["text"])
    text_checks = {e.meta["check"] for e in suite.expectations if getattr(e, "column", None) == "text"}
    assert text_checks == {"text_exists"}


# Mistakes in the arguments (a workflow file problem) raise, naming the fix.
BAD_ARGUMENTS = [
    ("no labels", dict(labels=()), "no labels"),
    ("min > max chars", dict(rules=replace(RULES, min_text_chars=10, max_text_chars=5)), "min_text_chars"),
    ("duplicate ratio > 1", dict(rules=replace(RULES, max_duplicate_ratio=1.5)), "max_duplicate_ratio"),
    ("p-value of 0", dict(rules=replace(RULES, drift_p_value=0.0)), "drift_p_value"),
    ("empty reference", dict(reference_label_counts={"billing": 0}), "sums to 0"),
    ("negative reference", dict(reference_label_counts={"billing": -1}), "counts >= 0"),
    ("blank batch id", dict(batch_id=" "), "batch_id"),
]


@pytest.mark.parametrize("case, override, words", BAD_ARGUMENTS, ids=[c[0] for c in BAD_ARGUMENTS])
def test_bad_arguments_raise_naming_the_fix(case, override, words):
    kwargs = dict(labels=LABELS, rules=RULES, reference_label_counts=None, batch_id="b", docs_dir=None)
    kwargs.update(override)
    with pytest.raises(ValueError, match=words):
        validate_batch(good_batch(), **kwargs)


def test_the_per_class_minimum_counts_the_training_set_the_batch_joins():
    # A day's batch with only 1 'other' row: rejected on its own, accepted when the training set has 2 already.
    batch = relabel(good_batch(), good_batch()["label"].eq("other") & (good_batch().index > 3), "billing")
    assert batch["label"].value_counts()["other"] == 1
    alone = run(batch)
    assert ("label_min_per_class", "label") in found(alone) and "in this batch:" in alone.summary()
    joined = validate_batch(
        batch,
        labels=LABELS,
        rules=RULES,
        reference_label_counts=None,
        batch_id="b",
        existing_label_counts={"other": 2, "billing": 40},
    )
    assert joined.success, joined.summary()
    assert joined.statistics["custom_checks"]["label_min_per_class"]["counts"]["other"] == 3
    short = validate_batch(
        batch,
        labels=LABELS,
        rules=RULES,
        reference_label_counts=None,
        batch_id="b",
        existing_label_counts={"other": 1},
    )
    assert "'other': 2" in short.summary() and "plus the training set so far" in short.summary()
