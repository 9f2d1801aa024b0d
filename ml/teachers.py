"""Where the student's targets come from.

- call_log: the frontier model's recorded answers. Where the log holds probabilities (from
  logprobs) they are the soft target; otherwise the answer is a one-hot target.
- local_model: a larger local Hugging Face classifier scores the texts (soft targets).
- openai: a live OpenAI-compatible API. Its client arrives with the frontier proxy; until then
  the recorded log of that same API is the teacher.

Every teacher returns the same thing: an (N, C) probability matrix over the student's labels,
hard labels, and a description (kind, model, version) recorded with the model version.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ml.data import contract
from ml.train.student import TeacherMismatchError


@dataclass(frozen=True)
class Targets:
    probs: np.ndarray  # (N, C), rows sum to 1
    hard: np.ndarray  # (N,) int64: gold label where the row is gold, else the teacher's argmax
    teacher: dict  # kind, model, version


def _row_probs(label: str, probs_json: str, index: dict[str, int]) -> np.ndarray:
    row = np.zeros(len(index))
    try:
        given = json.loads(probs_json) if probs_json else {}
        if not isinstance(given, dict):
            raise ValueError("not an object")
        given = {k: float(v) for k, v in given.items() if k in index}
    except (TypeError, ValueError):
        raise TeacherMismatchError(f"teacher_probs {probs_json[:80]!r} is not a JSON object of label: probability; "
                                   "fix the call log's label_probs, or leave it empty for a one-hot target.") from None
    if not given:
        row[index[label]] = 1.0
        return row
    for k, v in given.items():
        row[index[k]] = v
    # The log keeps the top few labels only; spread the rest of the mass over the others.
    rest = max(0.0, 1.0 - row.sum())
    others = row == 0
    if others.any():
        row[others] = rest / others.sum()
    return row / row.sum()


def recorded_targets(df: pd.DataFrame, label_names: Sequence[str]) -> Targets:
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(map(str, set(df[contract.LABEL]) - set(index)))
    if unknown:
        raise TeacherMismatchError(f"the recorded teacher answers labels the student does not have: {unknown}; "
                                   "add them to the workflow's labels or re-validate the data.")
    # Parquet gives None and CSV gives NaN where a row has no probabilities: both mean one-hot.
    probs = np.stack([_row_probs(lab, p if isinstance(p, str) else "", index)
                      for lab, p in zip(df[contract.LABEL], df[contract.TEACHER_PROBS])]) \
        if len(df) else np.zeros((0, len(index)))
    hard = np.array([index[lab] for lab in df[contract.LABEL]], dtype=np.int64)
    versions = sorted({v for v in df[contract.TEACHER_VERSION] if isinstance(v, str) and v})
    return Targets(probs, hard, {"kind": "call_log", "version": ",".join(versions) or "unknown"})


def local_model_targets(df: pd.DataFrame, label_names: Sequence[str], model_dir: Path,
                        *, max_length: int = 64, device: str = "cpu") -> Targets:
    from ml.evaluate.serving import load_classifier, predict_probs
    from ml.train.student import fingerprint_model_dir

    if not (Path(model_dir) / "config.json").is_file():
        raise FileNotFoundError(f"teacher model {model_dir}: no config.json there; set teacher.model in the workflow "
                                "to a directory written by save_pretrained() of a sequence classifier.")
    model, tokenizer = load_classifier(Path(model_dir), device)
    teacher_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if sorted(teacher_labels) != sorted(label_names):
        missing = sorted(set(label_names) - set(teacher_labels))
        extra = sorted(set(teacher_labels) - set(label_names))
        raise TeacherMismatchError(f"teacher {model_dir} labels differ from the student's: missing {missing}, extra {extra}; "
                                   "use a teacher trained on the workflow's labels, or change the workflow's labels.")
    gold = (df[contract.SOURCE] == "gold").to_numpy()
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted(map(str, set(df.loc[gold, contract.LABEL]) - set(index)))
    if unknown:
        raise TeacherMismatchError(f"gold labels the student does not have: {unknown}; "
                                   "add them to the workflow's labels or re-validate the data.")
    raw = predict_probs(model, tokenizer, list(df[contract.TEXT]), max_length=max_length, device=device)
    order = [teacher_labels.index(name) for name in label_names]  # teacher column order → student's
    probs = raw[:, order]
    hard = probs.argmax(axis=1)
    hard[gold] = [index[lab] for lab in df.loc[gold, contract.LABEL]]
    return Targets(probs, hard.astype(np.int64),
                   {"kind": "local_model", "model": str(model_dir), "version": fingerprint_model_dir(Path(model_dir))[:16]})


def teacher_targets(teacher_kind: str, teacher_model: str, df: pd.DataFrame, label_names: Sequence[str],
                    **kwargs) -> Targets:
    if teacher_kind in ("call_log", "openai"):
        targets = recorded_targets(df, label_names)
        return Targets(targets.probs, targets.hard, {**targets.teacher, "model": teacher_model})
    if teacher_kind == "local_model":
        return local_model_targets(df, label_names, Path(teacher_model), **kwargs)
    raise TeacherMismatchError(f"unknown teacher kind {teacher_kind!r}; use call_log, local_model or openai.")
