"""The dataset contract: what every batch looks like after ingestion.

Whatever a user drops (frontier call log JSONL, labelled CSV / Parquet / JSONL with their own
column names), ingestion normalises it to these columns before anything validates or trains.
"""

from __future__ import annotations

import pandas as pd

TEXT = "text"
LABEL = "label"
# Where a row came from: "teacher" (a frontier call's answer) or "gold" (a human label).
SOURCE = "source"
# The teacher's probabilities over the label set, as JSON, where the call log held logprobs.
TEACHER_PROBS = "teacher_probs"
TEACHER_VERSION = "teacher_version"

COLUMNS = (TEXT, LABEL, SOURCE, TEACHER_VERSION, TEACHER_PROBS)
REQUIRED = (TEXT, LABEL)


class ContractError(ValueError):
    """An input cannot be brought to the contract; the message names the column and the fix."""


def normalise_labelled(df: pd.DataFrame, *, text_col: str, label_col: str, source: str = "gold",
                       origin: str = "file") -> pd.DataFrame:
    """Rename the user's columns to the contract and keep only contract columns.

    Missing columns are a ContractError that lists the columns the file does have, so the
    fix (`--text-col` / `--label-col`, or the workflow's text_column / label_column) is obvious.
    """
    missing = [c for c in (text_col, label_col) if c not in df.columns]
    if missing:
        raise ContractError(
            f"{origin}: missing column(s) {missing}; the file has {list(df.columns)}. "
            "Pass --text-col/--label-col or set text_column/label_column in the workflow."
        )
    out = pd.DataFrame({
        TEXT: df[text_col],
        LABEL: df[label_col],
        SOURCE: source,
        TEACHER_VERSION: df[TEACHER_VERSION] if TEACHER_VERSION in df.columns else "",
        TEACHER_PROBS: df[TEACHER_PROBS] if TEACHER_PROBS in df.columns else "",
    })
    return out.reset_index(drop=True)
