"""The data gate: one Great Expectations suite, built in code from a workflow's labels and rules.

validate_batch() runs the gate on one normalised batch (columns of ml.data.contract) and returns a
ValidationReport: the verdict, one Failure per failed check with a one-line fix, and, when a
docs_dir is given, GX Data Docs for the run.

Most checks are real GX expectations (see gate_expectations). Two have no GX 1.x expectation and
run beside the suite, reported in the same Failure shape:

- ``label_min_per_class``: every known label has at least rules.min_per_class rows in the set the
  batch joins: the batch's own rows plus existing_label_counts (the training set so far), so a
  day's call log without a rare intent is not quarantined once the training set has enough of it
  (a custom check; GX has no "value count of each value" expectation).
- ``label_distribution_drift``: a chi-square test of homogeneity (scipy's chi2_contingency) of
  the batch's label counts against reference_label_counts; drift when p < rules.drift_p_value.
  A test of homogeneity rather than goodness of fit, because the reference is itself a sample.

GX runs in an ephemeral context (in-memory stores, nothing written to the repository); the only
files it writes are Data Docs, into docs_dir. Each call builds its own context, so docs_dir's
index lists this batch only: give each batch its own docs_dir to keep them all.

great_expectations and scipy are imported inside the functions that use them: importing GX takes
seconds, and DAG files and the CLI import this module at parse time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pandas as pd

from ml.data.contract import LABEL, REQUIRED, TEXT
from ml.workflows import Validation

log = logging.getLogger(__name__)

SUITE_NAME = "batch_gate"
DOCS_SITE = "batch_gate_docs"
WORKFLOWS_FILE = "dags/workflows.yaml"  # where a user changes labels and rules; named in fixes
# SUMMARY keeps counts and a few example rows; COMPLETE would copy every bad text into the result.
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}
# A 10 MB text must never be copied whole into a report line, a task log or a Data Docs page.
SHOWN_CHARS = 80
DOCS_VALUE_CHARS = 200

# Levels decide what still runs when a column is broken (see build_suite).
EXISTS, STRUCTURE, CONTENT = "exists", "structure", "content"


@dataclass(frozen=True)
class Failure:
    expectation: str = field(metadata={"help": "GX expectation type, or the name of a custom check."})
    column: str | None = field(metadata={"help": "The column checked; None for table-level checks."})
    observed: str = field(metadata={"help": "What the batch holds, short (long values are cut)."})
    fix: str = field(metadata={"help": "One line telling a person what to change."})


@dataclass
class ValidationReport:
    batch_id: str
    success: bool
    failures: list[Failure]
    row_count: int
    statistics: dict = field(
        metadata={"help": "Evaluated/successful counts, skipped checks, label counts, drift test."}
    )
    docs_index: Path | None = field(
        default=None, metadata={"help": "GX Data Docs index.html, when docs_dir was given."}
    )

    def to_dict(self) -> dict:
        return {
            "batch_id": self.batch_id,
            "success": self.success,
            "row_count": self.row_count,
            "failures": [dataclasses.asdict(f) for f in self.failures],
            "statistics": _json_safe(self.statistics),
            "docs_index": None if self.docs_index is None else str(self.docs_index),
        }

    def summary(self) -> str:
        evaluated = self.statistics.get("evaluated_expectations", 0)
        if self.success:
            head = f"batch {self.batch_id}: PASSED - {evaluated} checks, {self.row_count} rows"
        else:
            head = (
                f"batch {self.batch_id}: FAILED - {len(self.failures)} of {evaluated} checks failed, "
                f"{self.row_count} rows"
            )
        lines = [head]
        for f in self.failures:
            where = f" [{f.column}]" if f.column else ""
            lines.append(f"  FAIL {f.expectation}{where}: {f.observed} -> fix: {f.fix}")
        for skipped in self.statistics.get("skipped", []):
            lines.append(f"  skipped {skipped}")
        if self.docs_index is not None:
            lines.append(f"  data docs: {self.docs_index}")
        return "\n".join(lines)


# --- the suite -------------------------------------------------------------------------------


def tag(expectation, check: str, level: str, **words):
    """The expectation with its meta: "check" names it for fixes, "level" says whether it still
    makes sense when its column is missing (exists) or holds no strings (structure); a task's own
    check adds "what" (its failing rows, in words) and "fix" (one line)."""
    expectation.meta = {"check": check, "level": level, **words}
    return expectation


def text_checks(rules: Validation) -> dict:
    """The checks every task's gate makes of its text column and row count, by check name (tagged)."""
    import great_expectations.expectations as gxe

    return {
        "text_exists": tag(gxe.ExpectColumnToExist(column=TEXT), "text_exists", EXISTS),
        "text_is_string": tag(
            gxe.ExpectColumnValuesToBeOfType(column=TEXT, type_="str"), "text_is_string", STRUCTURE
        ),
        "text_not_null": tag(gxe.ExpectColumnValuesToNotBeNull(column=TEXT), "text_not_null", STRUCTURE),
        "row_count": tag(
            gxe.ExpectTableRowCountToBeBetween(min_value=rules.min_rows), "row_count", STRUCTURE
        ),
        # \S anywhere: rejects "" and whitespace-only texts, which a length floor alone lets through.
        "text_not_blank": tag(
            gxe.ExpectColumnValuesToMatchRegex(column=TEXT, regex=r"\S"), "text_not_blank", CONTENT
        ),
        # duplicate ratio = 1 - distinct/rows, so "ratio <= max" is "unique proportion >= 1 - max".
        "text_duplicates": tag(
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
                column=TEXT, min_value=1.0 - rules.max_duplicate_ratio
            ),
            "text_duplicates",
            CONTENT,
        ),
    }


def gate_expectations(labels: Sequence[str], rules: Validation) -> list:
    """Every GX expectation of the classification gate, tagged (see tag)."""
    import great_expectations.expectations as gxe

    text = text_checks(rules)
    return [
        text["text_exists"],
        tag(gxe.ExpectColumnToExist(column=LABEL), "label_exists", EXISTS),
        text["text_is_string"],
        tag(gxe.ExpectColumnValuesToBeOfType(column=LABEL, type_="str"), "label_is_string", STRUCTURE),
        text["text_not_null"],
        tag(gxe.ExpectColumnValuesToNotBeNull(column=LABEL), "label_not_null", STRUCTURE),
        text["row_count"],
        text["text_not_blank"],
        tag(gxe.ExpectColumnValuesToBeInSet(column=LABEL, value_set=list(labels)), "label_known", CONTENT),
        text["text_duplicates"],
        # Two expectations rather than one, so that "too short" and "too long" get their own fix.
        tag(
            gxe.ExpectColumnValueLengthsToBeBetween(column=TEXT, min_value=rules.min_text_chars),
            "text_min_chars",
            CONTENT,
        ),
        tag(
            gxe.ExpectColumnValueLengthsToBeBetween(column=TEXT, max_value=rules.max_text_chars),
            "text_max_chars",
            CONTENT,
        ),
    ]


def build_suite(
    labels: Sequence[str],
    rules: Validation,
    *,
    missing_columns: Sequence[str] = (),
    unusable_columns: Sequence[str] = (),
    expectations: Sequence | None = None,
):
    """The gate as a GX ExpectationSuite (`expectations`: a task's own list, else gate_expectations).

    A missing column keeps only its existence check: GX cannot evaluate the others and fails them
    with messages like "list index out of range". A column that exists but holds no strings (or
    only nulls) keeps its type and null checks and loses its content checks, whose verdicts on
    numbers or nulls would only repeat the same problem in worse words.
    """
    import great_expectations as gx

    def runs(e) -> bool:
        column = getattr(e, "column", None)
        if column in missing_columns:
            return e.meta["level"] == EXISTS
        if column in unusable_columns:
            return e.meta["level"] != CONTENT
        return True

    if expectations is None:
        expectations = gate_expectations(labels, rules)
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=[e for e in expectations if runs(e)])


# --- validate one batch ----------------------------------------------------------------------


def validate_batch(
    df: pd.DataFrame,
    *,
    labels: Sequence[str],
    rules: Validation,
    reference_label_counts: Mapping[str, int] | None,
    batch_id: str,
    docs_dir: Path | None = None,
    existing_label_counts: Mapping[str, int] | None = None,
) -> ValidationReport:
    """Run the gate on one batch. Bad data gives a failed report, never an exception; a bad
    argument (no labels, impossible rules, a broken reference) raises ValueError naming the fix."""
    labels = [str(label) for label in labels]
    _check_arguments(labels, rules, reference_label_counts, batch_id)
    run = run_gate(
        df,
        gate_expectations(labels, rules),
        required=REQUIRED,
        batch_id=batch_id,
        docs_dir=docs_dir,
        explain=lambda result: _gx_failure(result, df, labels, rules),
    )
    if isinstance(run, ValidationReport):
        return run
    row_count, failures, skipped = run.row_count, run.failures, run.skipped
    evaluated, successful, missing, unusable = run.evaluated, run.successful, run.missing, run.unusable

    custom: dict[str, Any] = {}
    label_counts: dict[str, int] = {}
    if LABEL in missing or LABEL in unusable:
        why = _why(LABEL, missing, unusable)
        skipped += [
            f"label_min_per_class [label]: column {why}",
            f"label_distribution_drift [label]: column {why}",
        ]
    else:
        label_counts = {str(k): int(v) for k, v in df[LABEL].value_counts(dropna=True).items()}
        per_class = _min_per_class(label_counts, labels, rules.min_per_class, existing_label_counts or {})
        custom["label_min_per_class"] = per_class["statistics"]
        evaluated += 1
        if per_class["failure"] is None:
            successful += 1
        else:
            failures.append(per_class["failure"])
        if reference_label_counts is None:
            skipped.append("label_distribution_drift [label]: no reference_label_counts given")
        else:
            drift = _label_drift(label_counts, labels, reference_label_counts, rules.drift_p_value)
            custom["label_distribution_drift"] = drift["statistics"]
            evaluated += 1
            if drift["failure"] is None:
                successful += 1
            else:
                failures.append(drift["failure"])

    statistics = {
        **run.statistics(evaluated, successful),
        "custom_checks": custom,
        "skipped": skipped,
        "label_counts": label_counts,
    }
    return ValidationReport(batch_id, not failures, failures, row_count, statistics, run.docs_index)


@dataclass
class GateRun:
    """What the GX suite found in one batch; a task's gate adds its own checks and makes the report."""

    row_count: int
    failures: list[Failure]
    evaluated: int
    successful: int
    skipped: list[str]
    missing: set[str]
    unusable: dict[str, str]
    gx_statistics: dict
    docs_index: Path | None

    def statistics(self, evaluated: int | None = None, successful: int | None = None) -> dict:
        evaluated = self.evaluated if evaluated is None else evaluated
        successful = self.successful if successful is None else successful
        return {
            "evaluated_expectations": evaluated,
            "successful_expectations": successful,
            "unsuccessful_expectations": evaluated - successful,
            "success_percent": round(100.0 * successful / evaluated, 2) if evaluated else None,
            "great_expectations": self.gx_statistics,
        }

    def report(self, batch_id: str, **extra_statistics) -> ValidationReport:
        statistics = {**self.statistics(), "skipped": self.skipped, **extra_statistics}
        return ValidationReport(
            batch_id, not self.failures, self.failures, self.row_count, statistics, self.docs_index
        )


def run_gate(
    df: pd.DataFrame,
    expectations: Sequence,
    *,
    required: Sequence[str],
    batch_id: str,
    docs_dir: Path | None,
    explain,
) -> GateRun | ValidationReport:
    """Run a task's expectations (tagged as gate_expectations tags them) on one batch.

    `required`: the contract columns whose absence or lack of strings skips the checks that need
    them; `explain(result) -> Failure` words a failed expectation. A batch with repeated column
    names gets its failed ValidationReport at once (every check would be about the wrong column).
    """
    row_count = int(len(df))
    repeated = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if repeated:
        # df["text"] would be a DataFrame, and every check below would be about the wrong thing.
        failure = Failure(
            "unique_column_names",
            None,
            f"columns appear more than once: {repeated}",
            "rename or drop the repeated columns, then re-submit the batch",
        )
        return ValidationReport(
            batch_id,
            False,
            [failure],
            row_count,
            {
                "evaluated_expectations": 1,
                "successful_expectations": 0,
                "unsuccessful_expectations": 1,
                "skipped": ["every other check: repeated columns"],
            },
        )

    missing, unusable = _column_problems(df, required)
    suite = build_suite(
        (),
        None,
        missing_columns=sorted(missing),
        unusable_columns=sorted(unusable),
        expectations=expectations,
    )
    ran = {e.meta["check"] for e in suite.expectations}
    skipped = [
        f"{e.meta['check']} [{e.column}]: column {_why(e.column, missing, unusable)}"
        for e in expectations
        if e.meta["check"] not in ran
    ]

    failures: list[Failure] = []
    evaluated = successful = 0
    gx_statistics: dict = {}
    docs_index = None
    try:
        results, ctx = _run_suite(df, suite, batch_id, docs_dir)
        gx_statistics = dict(results.statistics)
        for result in results.results:
            evaluated += 1
            if result.success:
                successful += 1
            else:
                failures.append(explain(result))
        if docs_dir is not None:
            docs_index = _build_docs(ctx, results)
    except Exception as exc:  # GX itself broke: report it like any other failure, keep the trace in the log
        log.exception("great_expectations failed on batch %s", batch_id)
        evaluated += 1
        failures.append(
            Failure(
                "great_expectations",
                None,
                _short_text(f"the suite could not run: {type(exc).__name__}: {exc}", 300),
                "fix the other failures of this batch; if there are none, report a bug "
                "with the batch attached",
            )
        )
    return GateRun(
        row_count, failures, evaluated, successful, skipped, missing, unusable, gx_statistics, docs_index
    )


def _check_arguments(labels, rules, reference, batch_id) -> None:
    if not isinstance(batch_id, str) or not batch_id.strip():
        raise ValueError("batch_id must be a non-empty string naming the batch (e.g. its file name).")
    if not labels:
        raise ValueError(f"The workflow declares no labels; add `labels: [...]` to it in {WORKFLOWS_FILE}.")
    problems = []
    if rules.min_rows < 0 or rules.min_per_class < 0:
        problems.append("min_rows and min_per_class must be >= 0")
    if not 0.0 <= rules.max_duplicate_ratio <= 1.0:
        problems.append(f"max_duplicate_ratio {rules.max_duplicate_ratio} must be between 0 and 1")
    if not 0 <= rules.min_text_chars <= rules.max_text_chars:
        problems.append(
            f"need 0 <= min_text_chars ({rules.min_text_chars}) <= max_text_chars ({rules.max_text_chars})"
        )
    if not 0.0 < rules.drift_p_value < 1.0:
        problems.append(f"drift_p_value {rules.drift_p_value} must be between 0 and 1")
    if problems:
        raise ValueError(
            f"Invalid validation rules: {'; '.join(problems)}. Fix them under validation: in {WORKFLOWS_FILE}."
        )
    if reference is not None:
        bad = {
            k: v
            for k, v in reference.items()
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0
        }
        if bad:
            raise ValueError(f"reference_label_counts must map labels to counts >= 0; got {bad}.")
        if sum(reference.values()) == 0:
            raise ValueError(
                "reference_label_counts sums to 0; pass None to skip the drift test, "
                "or the label counts of the current training set."
            )


def _column_problems(df: pd.DataFrame, required: Sequence[str] = REQUIRED) -> tuple[set[str], dict[str, str]]:
    """Required columns that are missing, and those present but holding no strings to check."""
    missing = {c for c in required if c not in df.columns}
    unusable = {}
    for column in sorted(set(required) - missing):
        values = df[column]
        if len(values) == 0:
            unusable[column] = "is empty (the batch has no rows)"
        elif values.isna().all():
            unusable[column] = "holds only nulls"
        else:
            kind = pd.api.types.infer_dtype(values, skipna=True)
            if kind != "string":
                unusable[column] = f"holds {kind} values, not strings"
    return missing, unusable


def _why(column, missing, unusable) -> str:
    return "is missing" if column in missing else unusable.get(column, "is unusable")


def _run_suite(df, suite, batch_id, docs_dir: Path | None):
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    sites = {}
    if docs_dir is not None:
        sites = {
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        data_docs_sites=sites,
        analytics_enabled=False,
        # The default draws tqdm bars into the task log on every metric.
        progress_bars=ProgressBarsConfig(globally=False),
    )
    ctx = gx.get_context(mode="ephemeral", project_config=config)
    # batch_id becomes a path component of the Data Docs pages.
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", batch_id)[:100]
    batch_definition = (
        ctx.data_sources.add_pandas("ingest")
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("whole_batch")
    )
    suite = ctx.suites.add(suite)
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=SUITE_NAME, data=batch_definition, suite=suite)
    )
    results = definition.run(
        batch_parameters={"dataframe": df}, result_format=RESULT_FORMAT, run_id=RunIdentifier(run_name=name)
    )
    return results, ctx


def _build_docs(ctx, results) -> Path:
    # The stored result holds example values of failing rows, a 10 MB text among them; cut them
    # before the site builder renders them into HTML. The report was built from the uncut result.
    for result in results.results:
        result.result = _cut_long_strings(result.result)
    store = ctx.validation_results_store
    for key in store.list_keys():  # one key: this run
        store.set(key, results)
    urls = ctx.build_data_docs(site_names=[DOCS_SITE])
    return Path(unquote(urlparse(urls[DOCS_SITE]).path))


# --- turning results into failures with fixes -------------------------------------------------


def _gx_failure(result, df: pd.DataFrame, labels: list[str], rules: Validation) -> Failure:
    config = result.expectation_config
    check = (config.meta or {}).get("check", config.type)
    column = config.kwargs.get("column")
    error = _exception_message(result)
    if error is not None:
        return Failure(
            config.type,
            column,
            _short_text(f"could not be evaluated: {error}", 300),
            "fix the other failures reported for this column; if there are none, report a bug "
            "with the batch attached",
        )
    r = dict(result.result or {})
    total = r.get("element_count", len(df))
    bad = r.get("unexpected_count", 0)
    rows = r.get("partial_unexpected_index_list") or []
    examples = r.get("partial_unexpected_list") or []
    rows_note = f" (rows {rows})" if rows else ""

    if check in ("text_exists", "label_exists"):
        observed = f"column {column!r} is missing; the batch has {[str(c) for c in df.columns]}"
        fix = (
            f"map your {column} column to '{column}' ({column}_column in the workflow in "
            f"{WORKFLOWS_FILE}, or --{column}-col) and re-ingest"
        )
    elif check in ("text_is_string", "label_is_string"):
        if "observed_value" in r:
            observed = f"column dtype is {r['observed_value']}, not strings"
        else:
            observed = f"{bad} of {total} values are not strings, e.g. {_short(examples)}{rows_note}"
        fix = (
            "make every text a string (or drop the rows that are not text) and re-submit"
            if column == TEXT
            else "labels must be strings naming the workflow's labels: map codes to names "
            f"(e.g. 0 -> {labels[0]!r}) before ingesting"
        )
    elif check == "text_not_null":
        observed = (
            f"every text is null ({total} rows)"
            if bad == total
            else f"{bad} of {total} texts are null{rows_note}"
        )
        fix = "drop the rows without text or fill them in, then re-submit"
    elif check == "label_not_null":
        observed = (
            f"every label is null ({total} rows)"
            if bad == total
            else f"{bad} of {total} rows have no label{rows_note}"
        )
        fix = "label these rows or drop them, then re-submit"
    elif check == "row_count":
        observed = f"{r.get('observed_value')} rows, fewer than min_rows={rules.min_rows}"
        fix = (
            f"send at least {rules.min_rows} rows per batch (merge small drops) or lower "
            f"validation.min_rows in {WORKFLOWS_FILE}"
        )
    elif check == "text_not_blank":
        observed = f"{bad} of {total} texts are empty or whitespace only{rows_note}"
        fix = "drop or fill the empty texts, then re-submit"
    elif check == "label_known":
        values = df[LABEL]
        unknown = values[values.notna() & ~values.isin(labels)].astype(str).value_counts()
        names = sorted(unknown.index)
        shown = names if len(names) <= 10 else names[:10] + [f"... {len(names) - 10} more"]
        observed = f"labels not in the known set: {shown} (rows: {int(unknown.sum())})"
        fix = f"add them to the workflow's labels in {WORKFLOWS_FILE} or fix the rows (known: {labels})"
    elif check == "text_duplicates":
        ratio = 1.0 - float(r.get("observed_value") or 0.0)
        repeats = int(df[TEXT].dropna().duplicated().sum())
        observed = (
            f"duplicate-text ratio {ratio:.3f} > max {rules.max_duplicate_ratio:.3f} "
            f"({repeats} of {len(df)} texts repeat an earlier one)"
        )
        fix = (
            f"drop repeated texts (keep one row per text) or raise validation.max_duplicate_ratio "
            f"in {WORKFLOWS_FILE}"
        )
    elif check == "text_min_chars":
        lengths = [len(str(v)) for v in examples]
        observed = f"{bad} of {total} texts are shorter than {rules.min_text_chars} chars{rows_note}, e.g. lengths {lengths}"
        fix = (
            f"drop or complete texts under {rules.min_text_chars} chars, or lower validation.min_text_chars "
            f"in {WORKFLOWS_FILE}"
        )
    elif check == "text_max_chars":
        lengths = [len(str(v)) for v in examples]
        observed = f"{bad} of {total} texts are longer than {rules.max_text_chars} chars{rows_note}, e.g. lengths {lengths}"
        fix = (
            f"truncate or split texts over {rules.max_text_chars} chars, or raise validation.max_text_chars "
            f"in {WORKFLOWS_FILE}"
        )
    elif (config.meta or {}).get("fix"):  # a task's own check words itself: meta "what" and "fix"
        if "observed_value" in r and not bad:
            observed = f"{config.meta.get('what', check)}: observed {_short_text(str(r['observed_value']))}"
        else:
            observed = f"{bad} of {total} {config.meta.get('what', 'rows fail ' + check)}{rows_note}, e.g. {_short(examples)}"
        fix = config.meta["fix"]
    else:  # an expectation added to gate_expectations without a message here
        observed = _short_text(str(r), 300)
        fix = "see the Data Docs page of this batch"
    return Failure(config.type, column, _short_text(observed, 400), fix)


def _exception_message(result) -> str | None:
    """GX puts one {raised_exception, exception_message} dict here, or one per metric."""
    info = result.exception_info or {}
    candidates = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for item in candidates:
        if item.get("raised_exception"):
            return str(item.get("exception_message") or "unknown error")
    return None


# --- checks GX has no expectation for --------------------------------------------------------


def _min_per_class(
    label_counts: dict[str, int], labels: list[str], min_per_class: int, existing: Mapping[str, int]
) -> dict:
    counts = {label: label_counts.get(label, 0) + int(existing.get(label, 0)) for label in labels}
    below = {label: n for label, n in counts.items() if n < min_per_class}
    failure = None
    if below:
        where = "this batch plus the training set so far" if existing else "this batch"
        failure = Failure(
            "label_min_per_class",
            LABEL,
            _short_text(f"classes below min_per_class={min_per_class} in {where}: {below}", 400),
            f"add labelled rows for these classes, or remove them from the workflow's labels in {WORKFLOWS_FILE}",
        )
    return {
        "statistics": {
            "min_per_class": min_per_class,
            "counts": counts,
            "below": below,
            "existing_counted": bool(existing),
        },
        "failure": failure,
    }


def _label_drift(
    label_counts: dict[str, int], labels: list[str], reference: Mapping[str, int], p_value_threshold: float
) -> dict:
    from scipy.stats import chi2_contingency

    # Known labels plus any the reference still has; unknown batch labels already fail label_known.
    categories = list(labels) + [str(k) for k in reference if str(k) not in labels]
    ref = {str(k): int(v) for k, v in reference.items()}
    table = [(c, label_counts.get(c, 0), ref.get(c, 0)) for c in categories]
    table = [row for row in table if row[1] + row[2] > 0]  # an all-zero column has no expected count
    batch_total = sum(row[1] for row in table)
    ref_total = sum(row[2] for row in table)
    stats: dict[str, Any] = {
        "test": "chi-square test of homogeneity (scipy.stats.chi2_contingency)",
        "p_value_threshold": p_value_threshold,
        "batch_counts": {c: b for c, b, _ in table},
        "reference_counts": {c: r for c, _, r in table},
    }
    if batch_total == 0:
        stats.update(
            chi2=None,
            dof=None,
            p_value=None,
            drifted=False,
            note="no known labels in the batch; label_known reports it",
        )
        return {"statistics": stats, "failure": None}
    if len(table) < 2:
        chi2, p_value, dof = 0.0, 1.0, 0  # one class on both sides: nothing can have shifted
    else:
        outcome = chi2_contingency([[row[1] for row in table], [row[2] for row in table]])
        chi2, p_value, dof = float(outcome.statistic), float(outcome.pvalue), int(outcome.dof)
    drifted = p_value < p_value_threshold
    stats.update(chi2=chi2, dof=dof, p_value=p_value, drifted=drifted)
    failure = None
    if drifted:
        shifts = sorted(
            ((b / batch_total - r / ref_total, c, r / ref_total, b / batch_total) for c, b, r in table),
            key=lambda s: -abs(s[0]),
        )
        _, name, ref_share, batch_share = shifts[0]
        failure = Failure(
            "label_distribution_drift",
            LABEL,
            f"label mix differs from the reference (chi-square {chi2:.1f}, dof {dof}, p={p_value:.2g} < "
            f"{p_value_threshold}); largest shift: {name!r} {ref_share:.1%} -> {batch_share:.1%}",
            "check where this batch came from; if the new mix is real, validate against an updated reference "
            f"or lower validation.drift_p_value in {WORKFLOWS_FILE}",
        )
    return {"statistics": stats, "failure": failure}


# --- small helpers ---------------------------------------------------------------------------


def _short_text(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...({len(text)} chars)"


def _short(values: list) -> str:
    return "[" + ", ".join(_short_text(repr(v)) for v in values) + "]"


def _cut_long_strings(value):
    if isinstance(value, str):
        return _short_text(value, DOCS_VALUE_CHARS)
    if isinstance(value, dict):
        return {k: _cut_long_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cut_long_strings(v) for v in value]
    return value


def _json_safe(value):
    """numpy scalars, Paths and non-finite floats into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, int):
        return value
    return str(value)
