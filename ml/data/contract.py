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


# Beyond these, a "column name" is more likely a line of something that is not a table.
SHOWN_COLUMNS, SHOWN_COLUMN_CHARS = 20, 40


def describe_columns(df: pd.DataFrame) -> str:
    """The file's column names for an error message, only when the file parsed as a table.

    A file that is not a table (a key file, a password-hash file, prose) parses as one column
    whose "name" is its first line: echoing it would print that line into logs and terminals.
    """
    names = [str(c) for c in df.columns]
    if len(names) < 2 or any(len(n) > SHOWN_COLUMN_CHARS or not n.isprintable() for n in names):
        return (
            f"the file has {len(names)} column(s) and does not look like a table with a header row "
            "(column names not shown)"
        )
    shown = names[:SHOWN_COLUMNS] + (
        [f"... {len(names) - SHOWN_COLUMNS} more"] if len(names) > SHOWN_COLUMNS else []
    )
    return f"the file has {shown}"


def normalise_labelled(
    df: pd.DataFrame, *, text_col: str, label_col: str, source: str = "gold", origin: str = "file"
) -> pd.DataFrame:
    """Rename the user's columns to the contract and keep only contract columns.

    Missing columns are a ContractError that lists the columns the file does have, so the
    fix (`--text-col` / `--label-col`, or the workflow's text_column / label_column) is obvious.
    """
    missing = [c for c in (text_col, label_col) if c not in df.columns]
    if missing:
        raise ContractError(
            f"{origin}: missing column(s) {missing}; {describe_columns(df)}. "
            "Pass --text-col/--label-col or set text_column/label_column in the workflow."
        )
    out = pd.DataFrame(
        {
            TEXT: df[text_col],
            LABEL: df[label_col],
            SOURCE: source,
            TEACHER_VERSION: df[TEACHER_VERSION] if TEACHER_VERSION in df.columns else "",
            TEACHER_PROBS: df[TEACHER_PROBS] if TEACHER_PROBS in df.columns else "",
        }
    )
    return out.reset_index(drop=True)
