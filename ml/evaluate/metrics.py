"""Quality metrics on the frozen evaluation set: pure functions of labels and probabilities."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

import numpy as np

# What MLflow accepts on every platform and store (file store included: a name is a path there):
# ASCII letters, digits, _ and -. Dots stay out so a label can never form "." or "..".
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]+")
_KEY_STEM_CHARS = 60


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Rows are the true class, columns the predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"{len(y_true)} true labels but {len(y_pred)} predictions; score the whole evaluation set."
        )
    # A -1 ("unknown") would silently count as the last class through numpy's negative indexing.
    bad = sorted({int(v) for v in np.concatenate([y_true, y_pred]) if not 0 <= v < n_classes})
    if bad:
        raise ValueError(
            f"class indices {bad[:5]} are outside 0..{n_classes - 1}; map every label to the label set first."
        )
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per class; a class never predicted and never present scores 0 (not NaN) so it is visible."""
    tp = np.diag(cm).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    actual = cm.sum(axis=1).astype(float)
    denom = predicted + actual
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def expected_calibration_error(probs: np.ndarray, y_true: Sequence[int], n_bins: int = 10) -> float:
    """ECE: the confidence-weighted gap between confidence and accuracy, over equal-width bins."""
    probs = np.asarray(probs, dtype=float)
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return 0.0
    if not np.isfinite(probs).all():
        return float("nan")  # a diverged model has no calibration to measure
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def classification_report(probs: np.ndarray, y_true: Sequence[int], label_names: Sequence[str]) -> dict:
    """Every quality figure the gate and the model card use, JSON-safe."""
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2 or probs.shape[1] != len(label_names):
        raise ValueError(f"probs has shape {probs.shape}; expected (n, {len(label_names)}).")
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, len(label_names))
    f1 = per_class_f1(cm)
    n = int(cm.sum())
    report = {
        "n_examples": n,
        "accuracy": float(np.trace(cm) / n) if n else 0.0,
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        "ece": expected_calibration_error(probs, y_true),
        "per_class_f1": {name: float(v) for name, v in zip(label_names, f1)},
        "confusion_matrix": cm.tolist(),
    }
    if not np.isfinite(probs).all():
        # A diverged model outputs NaN, and argmax of NaN is class 0: its scores would look
        # merely poor. NaN figures fail every gate check instead, so it is never promoted.
        nan = float("nan")
        report.update(accuracy=nan, macro_f1=nan, ece=nan, per_class_f1={name: nan for name in label_names})
    return report


def metric_key(label: str) -> str:
    """The MLflow metric/param name fragment for a label: the label itself where it is already safe,
    else a readable ASCII stem plus a short hash of the label, so two labels never share a key.

    "billing_refund" → "billing_refund"; "what is this?" → "what_is_this_1b2c3d4e".
    """
    label = str(label)
    stem = _UNSAFE_KEY_CHARS.sub("_", label).strip("_")[:_KEY_STEM_CHARS]
    if stem == label:
        return label
    digest = hashlib.sha256(label.encode("utf-8")).hexdigest()[:8]
    return f"{stem}_{digest}" if stem else f"label_{digest}"


def per_class_metrics(prefix: str, values: Mapping[str, float]) -> dict[str, float]:
    """{prefix + metric_key(label): value}; read the label back with label_of_metric."""
    return {prefix + metric_key(label): value for label, value in values.items()}


def label_of_metric(name: str, prefix: str, label_names: Sequence[str]) -> str | None:
    """The label a per-class metric name stands for (for display), or None when it is not one of them."""
    if not name.startswith(prefix):
        return None
    by_key = {metric_key(label): label for label in label_names}
    return by_key.get(name[len(prefix) :])


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Mean F1 over the classes present in y_true (a held-out split may miss the rarest)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    present = cm.sum(axis=1) > 0
    return float(per_class_f1(cm)[present].mean()) if present.any() else 0.0
