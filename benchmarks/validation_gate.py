"""The data gate's cost: the Great Expectations suite vs plain pandas checks of the same rules.

One run, the same batch, interleaved rounds (a noisy neighbour slows both alike). The pandas side
implements every rule of ml/validation/suite.py by hand — columns, string types, nulls, row count,
blank texts, known labels, duplicate ratio, length bounds, per-class minimum and the chi-square
drift test — and must reach the same verdict as the suite on a good batch and on a bad one before
anything is timed. The ratio is what GX's reporting (named failures, Data Docs-ready results) costs
over the bare arithmetic; the issue's aim is at most 5x.

Data Docs are not built in the timed runs (the DAG builds them once per batch; their cost does not
grow with the rows, as the page holds a summary).
Run: `make bench` or `.venv/bin/python benchmarks/validation_gate.py [--rows 1000000 --rounds 3]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ml.data.contract import LABEL, TEXT
from ml.demo_data import LABELS, make_tickets
from ml.validation.suite import gate_expectations, validate_batch
from ml.workflows import Validation

RULES = Validation(
    min_rows=50,
    min_per_class=3,
    max_duplicate_ratio=0.2,
    min_text_chars=3,
    max_text_chars=2000,
    drift_p_value=0.001,
)


def make_batch(rows: int, seed: int) -> pd.DataFrame:
    """rows tickets: demo texts made distinct by a ticket number, in the demo's label mix."""
    rng = random.Random(seed)
    pool = make_tickets(rng, 5000)
    picks = np.random.default_rng(seed).integers(0, len(pool), rows)
    texts = [f"{pool[i].text} (ticket {n})" for n, i in enumerate(picks)]
    return pd.DataFrame({TEXT: texts, LABEL: [pool[i].label for i in picks]})


def pandas_gate(
    df: pd.DataFrame, labels: list[str], rules: Validation, reference: dict[str, int]
) -> list[str]:
    """The suite's rules in plain pandas; returns the names of the failed checks (the suite's names)."""
    from scipy.stats import chi2_contingency

    failed = []
    for col, name in ((TEXT, "text_exists"), (LABEL, "label_exists")):
        if col not in df.columns:
            failed.append(name)
    if failed:
        return failed
    text, label = df[TEXT], df[LABEL]
    present_text, present_label = text.dropna(), label.dropna()
    if not present_text.map(type).eq(str).all():
        failed.append("text_is_string")
    if not present_label.map(type).eq(str).all():
        failed.append("label_is_string")
    if text.isna().any():
        failed.append("text_not_null")
    if label.isna().any():
        failed.append("label_not_null")
    if len(df) < rules.min_rows:
        failed.append("row_count")
    if not present_text.str.contains(r"\S", regex=True).all():
        failed.append("text_not_blank")
    if not present_label.isin(labels).all():
        failed.append("label_known")
    if len(present_text) and present_text.nunique() / len(present_text) < 1.0 - rules.max_duplicate_ratio:
        failed.append("text_duplicates")
    lengths = present_text.str.len()
    if (lengths < rules.min_text_chars).any():
        failed.append("text_min_chars")
    if (lengths > rules.max_text_chars).any():
        failed.append("text_max_chars")
    counts = present_label.value_counts()
    if any(counts.get(lab, 0) < rules.min_per_class for lab in labels):
        failed.append("label_min_per_class")
    table = [(counts.get(c, 0), reference.get(c, 0)) for c in labels]
    table = [row for row in table if sum(row) > 0]
    if len(table) >= 2 and chi2_contingency(np.array(table).T).pvalue < rules.drift_p_value:
        failed.append("label_distribution_drift")
    return sorted(failed)


def gx_gate(df: pd.DataFrame, labels: list[str], rules: Validation, reference: dict[str, int]) -> list[tuple]:
    report = validate_batch(
        df, labels=labels, rules=rules, reference_label_counts=reference, batch_id="bench"
    )
    return sorted((f.expectation, f.column) for f in report.failures)


def as_reported(checks: list[str], labels: list[str], rules: Validation) -> list[tuple]:
    """The pandas side's check names as the suite reports them: (GX expectation type, column)."""
    by_check = {
        e.meta["check"]: (e.expectation_type, getattr(e, "column", None))
        for e in gate_expectations(labels, rules)
    }
    by_check.update({c: (c, LABEL) for c in ("label_min_per_class", "label_distribution_drift")})
    return sorted(by_check[c] for c in checks)


def spoil(df: pd.DataFrame) -> pd.DataFrame:
    """The same batch with an unknown label, a null text and one too-long text."""
    bad = df.copy()
    bad.loc[0, LABEL] = "not_a_label"
    bad.loc[1, TEXT] = None
    bad.loc[2, TEXT] = "x" * (RULES.max_text_chars + 1)
    return bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/validation_gate.json")
    args = parser.parse_args()

    labels = list(LABELS)
    t0 = time.perf_counter()
    batch = make_batch(args.rows, args.seed)
    reference = dict(Counter(make_batch(20_000, args.seed + 1)[LABEL]))
    print(f"{args.rows:,} rows generated in {time.perf_counter() - t0:.1f} s")

    # Same verdicts first, on a small good and a small bad batch: timing two different gates would mean nothing.
    sample = batch.head(5000).reset_index(drop=True)
    for name, df in (("good", sample), ("bad", spoil(sample))):
        gx = gx_gate(df, labels, RULES, reference)
        pd_ = as_reported(pandas_gate(df, labels, RULES, reference), labels, RULES)
        if gx != pd_:
            raise SystemExit(f"the two gates disagree on the {name} batch: GX {gx} vs pandas {pd_}")
        print(f"{name} batch: both gates fail {gx or 'nothing'}")

    seconds = {"great_expectations": [], "pandas": []}
    for round_ in range(args.rounds):
        for name, gate in (("great_expectations", gx_gate), ("pandas", pandas_gate)):
            t = time.perf_counter()
            failed = gate(batch, labels, RULES, reference)
            seconds[name].append(time.perf_counter() - t)
            if failed:
                raise SystemExit(f"{name} failed the benchmark batch: {failed}")
        print(
            f"round {round_ + 1}: GX {seconds['great_expectations'][-1]:.2f} s, pandas {seconds['pandas'][-1]:.2f} s"
        )

    median = {k: statistics.median(v) for k, v in seconds.items()}
    report = {
        "benchmark": "validation_gate",
        "rows": args.rows,
        "rounds": args.rounds,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
        "median_seconds": median,
        "all_seconds": seconds,
        "rows_per_second": {k: args.rows / v for k, v in median.items()},
        "gx_vs_pandas_ratio": median["great_expectations"] / median["pandas"],
        "aim_ratio_at_most": 5.0,
    }
    print(json.dumps({k: report[k] for k in ("rows_per_second", "gx_vs_pandas_ratio")}, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
