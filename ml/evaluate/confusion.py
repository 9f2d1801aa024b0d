"""The confusion matrix as a model owner reads it: counts, the row-normalised view, and per class
precision, recall and F1 (an MLflow table artifact beside the image).

Counts show a handful of misroutes that a colour scale alone hides; the row-normalised view
shows what share of each true class goes where, so a rare class is read at its own scale.
F1 is metrics.per_class_f1 (the gate's figure), precision and recall are its two halves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml.evaluate.metrics import per_class_f1

TABLE_ARTIFACT = "eval/per_class.json"  # mlflow.log_table: the UI's artifact view shows it as a table
IMAGE_ARTIFACT = "confusion_matrix.png"


def row_normalised(cm) -> np.ndarray:
    """Each true class's row as shares of its examples; a class with no examples stays all 0."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def per_class_table(cm, labels: Sequence[str]) -> dict[str, list]:
    """Columns of one row per class: support (true examples), predicted, correct, precision, recall, F1.

    Precision of a class never predicted, or recall of one never present, is 0 (not NaN), as F1 is.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (len(labels), len(labels)):
        raise ValueError(
            f"confusion matrix of shape {cm.shape} for {len(labels)} labels; expected a square "
            "matrix with one row and column per label."
        )
    tp = np.diag(cm).astype(float)
    predicted, support = cm.sum(axis=0).astype(float), cm.sum(axis=1).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    return {
        "label": [str(x) for x in labels],
        "support": support.astype(int).tolist(),
        "predicted": predicted.astype(int).tolist(),
        "correct": tp.astype(int).tolist(),
        "precision": [round(float(v), 6) for v in precision],
        "recall": [round(float(v), 6) for v in recall],
        "f1": [round(float(v), 6) for v in per_class_f1(cm)],
    }


def save_png(cm, labels: Sequence[str], path: Path) -> Path:
    """Two panels: counts (every non-zero cell written out) and the row-normalised shares (%)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.int64)
    shares = row_normalised(cm)
    n = len(labels)
    shown = [str(label).replace("$", r"\$") for label in labels]  # "$5 refund" is not mathtext
    side = max(5.0, 0.45 * n + 2.5)
    font = max(5, min(10, int(120 / max(n, 1))))
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    # Both panels are coloured by share, so one misroute in a class of five shows as plainly as
    # fifty in a class of five hundred; the left panel writes the counts on top.
    for ax, title, text in (
        (axes[0], "counts", lambda i, j: str(cm[i, j])),
        (axes[1], "share of the true class (row-normalised)", lambda i, j: f"{100 * shares[i, j]:.0f}%"),
    ):
        ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        text(i, j),
                        ha="center",
                        va="center",
                        fontsize=font,
                        color="white" if shares[i, j] > 0.5 else ("#b00020" if i != j else "black"),
                    )
        ax.set_xticks(range(n), shown, rotation=90, fontsize=font)
        ax.set_yticks(range(n), shown, fontsize=font)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true (gold)")
        ax.set_title(title)
    fig.suptitle(
        f"{int(cm.sum())} examples, {int(cm.sum() - np.trace(cm))} misrouted (off the diagonal, in red)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def log_to_mlflow(cm, labels: Sequence[str], image_path: Path) -> None:
    """Into the active MLflow run: the image and the per-class table."""
    import mlflow

    mlflow.log_artifact(str(image_path))
    mlflow.log_table(per_class_table(cm, labels), TABLE_ARTIFACT)
