"""Classification: one label per text, from a declared (or discovered) label set.

The task's functions behind the seam (ml/tasks/__init__.py names them). The bodies live where
they always have (ml/data/contract.py, ml/validation/suite.py, ml/teachers.py, ml/train/,
ml/evaluate/metrics.py, ml/export.py, ml/serving_model.py); this module names them with the
seam's common names, so a caller asks `task_module(wf.task)` and never which task it is.
Heavy imports (torch, transformers, Great Expectations) happen inside the functions: this
module is read when the workflows file loads.
"""

from __future__ import annotations

from collections.abc import Sequence

from ml.data.contract import LABEL, TEXT
from ml.workflows import Gate, MetricRule, Workflow

# What `gate.metrics` may judge (all higher-is-better shares), name → the words of a gate reason.
METRICS = {"macro_f1": "macro-F1", "accuracy": "accuracy", "per_class_f1": "class F1"}
PER_PART_METRICS = ("per_class_f1",)  # {label: F1}: the gate judges the worst class and names it

REQUIRED_COLUMNS = (TEXT, LABEL)
SERVING_INPUT = (TEXT,)
SERVING_OUTPUT = ("label", "score", "probs")  # the label, its probability, every label's (JSON)


def default_gate_metrics(gate: Gate) -> tuple[MetricRule, ...]:
    """Today's gate, from the workflow's min_macro_f1, max_macro_f1_drop and per_class_f1_floor."""
    return (
        MetricRule(
            "macro_f1", min=gate.min_macro_f1, max_drop=gate.max_macro_f1_drop, what=METRICS["macro_f1"]
        ),
        MetricRule("per_class_f1", min=gate.per_class_f1_floor, what=METRICS["per_class_f1"], per_part=True),
    )


# Data ---------------------------------------------------------------------------------------


def normalise(df, wf: Workflow, *, source: str = "gold", origin: str = "file"):
    """The user's file with its text and label columns renamed to the contract (ml/data/contract.py)."""
    from ml.data.contract import normalise_labelled

    return normalise_labelled(
        df, text_col=wf.text_column, label_col=wf.label_column, source=source, origin=origin
    )


def expectations(wf: Workflow, labels: Sequence[str]) -> list:
    """The batch gate's Great Expectations suite for these labels (ml/validation/suite.py)."""
    from ml.validation.suite import gate_expectations

    return gate_expectations(labels, wf.validation)


def validate_batch(df, wf: Workflow, *, labels: Sequence[str], **kwargs):
    """The batch gate on one batch: a ValidationReport, never an exception for bad data."""
    from ml.validation import suite

    return suite.validate_batch(df, labels=labels, rules=wf.validation, **kwargs)


# Training -----------------------------------------------------------------------------------


def teacher_targets(wf: Workflow, df, label_names: Sequence[str], **kwargs):
    """The student's (N, C) targets from the workflow's teacher (ml/teachers.py)."""
    from ml.teachers import teacher_targets as targets

    return targets(wf.teacher.kind, wf.teacher.model, df, label_names, **kwargs)


def build_student(base_dir, label_names: Sequence[str], student_layers: int = 0):
    """A sequence classifier on the base encoder and its tokenizer (ml/train/student.py)."""
    from ml.train.student import build_student as build

    return build(base_dir, label_names, student_layers)


def loss(student_logits, teacher_probs, hard_labels, **kwargs):
    """The distillation loss: soft KL at a temperature plus hard cross-entropy (ml/train/loss.py)."""
    from ml.train.loss import distillation_loss

    return distillation_loss(student_logits, teacher_probs, hard_labels, **kwargs)


# Evaluation and serving ---------------------------------------------------------------------


def evaluate(probs, y_true: Sequence[int], label_names: Sequence[str]) -> dict:
    """The named metrics (METRICS: macro_f1, accuracy, per_class_f1 for the class floor) and beside
    them ece, n_examples and the confusion matrix; NaN figures for a diverged model (ml/evaluate/metrics.py)."""
    from ml.evaluate.metrics import classification_report

    return classification_report(probs, y_true, label_names)


def export_onnx(model, tokenizer, path):
    from ml.export import export_onnx as export

    return export(model, tokenizer, path)


def quantize_int8(model):
    from ml.export import quantize_int8 as quantize

    return quantize(model)


def log_served_model(
    variant: str, model_dir, artifact, *, max_length: int, name: str = "model", step: int = 0
):
    """Log the served variant as the MLflow pyfunc of ml/serving_model.py in the active run."""
    from ml.export import log_served_model as log

    return log(variant, model_dir, artifact, max_length=max_length, name=name, step=step)


def score(model_dir, texts: Sequence[str], *, max_length: int = 64, threads: int = 0):
    """The served answer for each text (SERVING_OUTPUT columns), by the served code on the torch weights."""
    import pandas as pd

    from ml.serving_model import StudentClassifier, TorchScorer

    served = StudentClassifier()
    served.scorer = TorchScorer(model_dir, max_length=max_length, threads=threads)
    served.labels = served.scorer.labels
    return served.predict(None, pd.DataFrame({TEXT: list(texts)}))
