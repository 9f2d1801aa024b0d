"""Ingestion: read a dropped file, curate it, and bring it to the dataset contract.

Two kinds of input arrive in a workflow's drop folder:
- frontier call logs (JSONL with `request_text` / `response_label`), as the instrumented API
  records them: failed calls are counted for the reliability report and kept out of training;
- labelled files (CSV, Parquet, JSONL) with a text and a label column of the user's naming.

Nothing here decides whether a batch is good enough; that is the validation gate's job.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ml.data import contract

SUPPORTED_SUFFIXES = (".jsonl", ".csv", ".parquet")
CALL_LOG_COLUMNS = ("request_text", "response_label", "status")

# Masked before anything is stored for training: the student must not memorise customers.
# Order matters: card numbers before phone numbers, which would otherwise match their tails.
# The email pattern only starts where a run of address characters starts: starting anywhere
# made it quadratic, so one 40 kB token without an "@" took seconds and a 10 MB one hung ingest.
# A phone is 9+ characters holding 8+ digits, and not a date: "order 1234567" and "2024-01-15" are kept.
# A workflow picks which of these apply and may add its own (`curation:` in dags/workflows.yaml).
BUILTIN_PII_RULES = {
    "email": ("<EMAIL>", re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    "card": ("<CARD>", re.compile(r"\b(?:\d[ -]?){12,18}\d\b")),
    "phone": (
        "<PHONE>",
        re.compile(
            r"(?<!\w)(?!\d{4}-\d\d-\d\d\b|\d\d?[./-]\d\d?[./-]\d{2,4}\b)"
            r"(?=\+?(?:[ ()./-]*\d){8})\+?\(?\d[\d ()./-]{7,}\d\b"
        ),
    ),
}


@dataclass(frozen=True)
class PiiMasker:
    """Replaces what looks like personal data with a token, rule by rule in order."""

    patterns: tuple[tuple[str, re.Pattern], ...]

    @classmethod
    def from_rules(cls, rules=tuple(BUILTIN_PII_RULES), extra=()) -> "PiiMasker":
        """Built-in rules by name, then the workflow's own {token: regex}. Raises ValueError naming a bad one."""
        unknown = [r for r in rules if r not in BUILTIN_PII_RULES]
        if unknown:
            raise ValueError(
                f"unknown PII rule {unknown[0]!r}; built-in rules: {', '.join(BUILTIN_PII_RULES)}"
            )
        # The built-in order whatever the listed order: a phone rule first would eat card numbers' tails.
        patterns = [BUILTIN_PII_RULES[r] for r in BUILTIN_PII_RULES if r in rules]
        for token, regex in dict(extra).items():
            try:
                patterns.append((str(token), re.compile(regex)))
            except (re.error, TypeError) as exc:
                raise ValueError(
                    f"PII pattern for {token!r} is not a valid regular expression ({exc})"
                ) from None
        return cls(tuple(patterns))

    @classmethod
    def for_workflow(cls, wf) -> "PiiMasker":
        return cls.from_rules(wf.curation.mask_pii, wf.curation.pii_patterns)

    def __call__(self, text: str) -> str:
        for token, pattern in self.patterns:
            text = pattern.sub(token, text)
        return text


DEFAULT_MASKER = PiiMasker.from_rules()


class IngestError(ValueError):
    """A dropped file cannot be read; the message names the file, the problem and the fix."""


@dataclass
class Batch:
    """One dropped file, normalised to the contract, with what curation removed."""

    path: Path
    sha256: str
    kind: str  # "call_log" or "labelled"
    frame: pd.DataFrame  # what joins the dataset: one row per (text, label)
    stats: dict = field(default_factory=dict)
    # The curated batch before exact duplicates were dropped: what the gate judges, so that a
    # batch of 90 % copies is seen as one (the duplicate ratio of `frame` is 0 by construction).
    received: pd.DataFrame | None = None
    # The dataset's columns and the key that makes a row a duplicate: the task's data contract.
    columns: tuple[str, ...] = contract.COLUMNS
    key: tuple[str, ...] = contract.REQUIRED
    # Rows curation refused, each with its `reason` and `detail`: kept beside the data, never trained on.
    refused: pd.DataFrame | None = None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_drop_path(drop_dir: Path, name: str | Path) -> Path:
    """Resolve a batch path and refuse anything that escapes the drop folder (../, absolute, symlinks)."""
    root = Path(drop_dir).resolve()
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise IngestError(
            f"{name}: paths must be relative to the drop folder {root} without '..'; "
            "use `mlops data import PATH` to copy a file in."
        )
    full = root / candidate
    if full.is_symlink() or not full.resolve().is_relative_to(root):
        raise IngestError(f"{name}: is a link or leaves the drop folder {root}; copy the file in instead.")
    if not full.is_file():
        raise IngestError(f"{name}: no such file in the drop folder {root}.")
    return full


def mask_pii(text: str, masker: PiiMasker = DEFAULT_MASKER) -> str:
    return masker(text)


def _read_raw(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise IngestError(
            f"{path.name}: unsupported file type {suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}."
        )
    if path.stat().st_size == 0:
        raise IngestError(f"{path.name}: the file is empty; re-export it from its source.")
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        raw = path.read_bytes().decode("utf-8")
        if suffix == ".csv":
            return pd.read_csv(io.StringIO(raw), dtype=str, keep_default_na=False, na_values=[""])
        return pd.read_json(io.StringIO(raw), lines=True, dtype=False)
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path.name}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 4]!r}); "
            "re-encode it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None
    except (ValueError, OSError) as exc:  # pyarrow / pandas parse errors derive from these
        raise IngestError(
            f"{path.name}: cannot be parsed as {suffix[1:]} ({str(exc).splitlines()[0][:200]}); "
            "the file may be truncated or not what its name says."
        ) from None
    except Exception as exc:  # noqa: BLE001 - e.g. pyarrow.ArrowInvalid on a truncated footer
        raise IngestError(
            f"{path.name}: cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
            "the file may be truncated; re-export it."
        ) from None


def call_log_stats(df: pd.DataFrame) -> dict:
    """What the frontier's calls cost and how they behaved, for the gate and the break-even report."""
    stats = {"calls": len(df)}
    failed = df["status"].fillna("error") != "ok"
    stats["errors"] = int((df["status"] == "error").sum())
    stats["timeouts"] = int((df["status"] == "timeout").sum())
    stats["failed_excluded"] = int(failed.sum())
    # What the frontier costs and how it behaves, kept for the gate and the break-even report.
    done = df[~failed]
    for col in ("tokens_in", "tokens_out"):
        if col in df.columns:
            stats[f"{col}_sum"] = int(pd.to_numeric(done[col], errors="coerce").fillna(0).sum())
    stats["ok_calls"] = int(len(done))
    if "model" in df.columns:
        stats["models"] = {str(k): int(v) for k, v in done["model"].value_counts().items()}
    if "latency_ms" in df.columns and len(done):
        lat = pd.to_numeric(done["latency_ms"], errors="coerce").dropna()
        stats["latency_p50_ms"], stats["latency_p99_ms"] = (float(lat.quantile(q)) for q in (0.5, 0.99))
    return stats


def _curate_call_log(df: pd.DataFrame, name: str) -> tuple[pd.DataFrame, dict]:
    stats = call_log_stats(df)
    failed = df["status"].fillna("error") != "ok"
    ok = df[~failed & df["response_label"].notna()].copy()
    probs = (
        ok["label_probs"].map(lambda p: json.dumps(p, sort_keys=True) if isinstance(p, dict) else "")
        if "label_probs" in ok.columns
        else ""
    )
    version = ok["model_version"].astype(str) if "model_version" in ok.columns else ""
    out = pd.DataFrame(
        {
            contract.TEXT: ok["request_text"],
            contract.LABEL: ok["response_label"],
            contract.SOURCE: "teacher",
            contract.TEACHER_VERSION: version,
            contract.TEACHER_PROBS: probs,
        }
    )
    return out.reset_index(drop=True), stats


def read_batch(
    path: Path,
    *,
    text_col: str = "text",
    label_col: str = "label",
    mask: bool = True,
    masker: PiiMasker = DEFAULT_MASKER,
    curate=None,
) -> Batch:
    """Read, curate and normalise one dropped file. Raises IngestError / ContractError.

    `curate(df, path=, sha256=, masker=) -> Batch`: a task's own curation of the file read (e.g.
    ml/tasks/extraction.py's curate_batch); None: classification's, below.
    """
    path = Path(path)
    df = _read_raw(path)
    if len(df) == 0:
        raise IngestError(f"{path.name}: has a header but no rows; drop a file with data.")
    if curate is not None:
        return curate(df, path=path, sha256=sha256_file(path), masker=masker if mask else None)
    if all(c in df.columns for c in CALL_LOG_COLUMNS):
        kind = "call_log"
        frame, stats = _curate_call_log(df, path.name)
    else:
        kind = "labelled"
        frame = contract.normalise_labelled(df, text_col=text_col, label_col=label_col, origin=path.name)
        stats = {"rows_read": len(df)}
    # Values are coerced to str only where present: nulls must stay null for the gate to see them.
    # A text column without a single string (numbers: most likely an ID column named by mistake)
    # is left as it is, so the gate's text_is_string check rejects it instead of training on IDs.
    text_has_strings = frame[contract.TEXT].map(lambda v: isinstance(v, str)).any()
    for col in (contract.TEXT, contract.LABEL) if text_has_strings else (contract.LABEL,):
        frame[col] = frame[col].map(
            lambda v: v if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
        )
    if mask:
        frame[contract.TEXT] = frame[contract.TEXT].map(lambda t: masker(t) if isinstance(t, str) else t)
    received = frame.reset_index(drop=True)
    frame = received.drop_duplicates(subset=[contract.TEXT, contract.LABEL]).reset_index(drop=True)
    stats["duplicates_removed"] = len(received) - len(frame)
    stats["rows"] = len(frame)
    return Batch(path=path, sha256=sha256_file(path), kind=kind, frame=frame, stats=stats, received=received)
