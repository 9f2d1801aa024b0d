"""The task seam: one module per task type, each exposing the same plain functions.

A workflow declares `task: classification | extraction` (ml/workflows.py); the platform asks
`task_module(wf.task)` for that task's module and calls the function it needs. There is no base
class and no registration step: the module is the contract ("standardize, don't abstract").
Everything else (registry, costs, break-even, DAGs, Assets, upstream watching, the listener,
the pages) stays task-agnostic and never learns a task's name.

Every task module exposes, under these names:

Gate (read when the workflows file loads, so at DAG parse time: the module must be cheap to
import; torch, transformers and Great Expectations are imported inside the functions):
- `METRICS: dict[str, str]`: the named metrics `evaluate` returns that a workflow's
  `gate.metrics` may judge (all higher-is-better shares in [0, 1]), name → the words a gate
  reason uses ("macro-F1").
- `PER_PART_METRICS: tuple[str, ...]`: those of METRICS whose value is a mapping
  {part: value} (per class, per field); the gate judges the worst part and names it.
- `default_gate_metrics(gate) -> tuple[ml.workflows.MetricRule, ...]`: what the gate judges
  when the workflow declares no `gate.metrics`.

Data:
- `REQUIRED_COLUMNS`: the data contract's columns (ml/data/contract.py's names).
- `normalise(df, wf, *, source, origin) -> DataFrame`: the user's file renamed to the contract.
- `expectations(wf) -> list`: the Great Expectations suite of the batch gate.
- `validate_batch(df, wf, **kwargs) -> ValidationReport`: the batch gate (quarantine on failure).

Training:
- `teacher_targets(wf, df, names, **kwargs)`: the student's targets from the call log, the
  labels in the data, a local model or a live API (a `Targets`: probabilities, hard targets,
  the teacher's description).
- `build_student(base_dir, names, student_layers) -> (model, tokenizer)`.
- `loss(student_logits, teacher_targets, hard_targets, **kwargs) -> scalar tensor`.

Evaluation and serving:
- `evaluate(predictions, truth, names) -> dict`: the named metrics (METRICS) plus the detail
  reports keep beside them (confusion matrix, calibration, counts); the gate (ml/evaluate/gate.py)
  reads the declared names from it, for the challenger and the champion alike.
- `export_onnx(model, tokenizer, path)`, `quantize_int8(model)`: the serving exports.
- `log_served_model(variant, model_dir, artifact, *, max_length)`: the served artifact (MLflow
  models from code, safetensors or ONNX; loading never unpickles).
- `SERVING_INPUT`, `SERVING_OUTPUT`: the serving signature's columns; `score(model_dir, texts,
  **kwargs)`: the served answers for a list of inputs.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASK_TYPES = ("classification", "extraction")
# The names above, every task module's: tests/unit/test_tasks_seam.py checks each module has them all.
SEAM = (
    "METRICS",
    "PER_PART_METRICS",
    "default_gate_metrics",
    "REQUIRED_COLUMNS",
    "normalise",
    "expectations",
    "validate_batch",
    "teacher_targets",
    "build_student",
    "loss",
    "evaluate",
    "export_onnx",
    "quantize_int8",
    "log_served_model",
    "SERVING_INPUT",
    "SERVING_OUTPUT",
    "score",
)


def task_module(name: str) -> ModuleType:
    """The module of task type `name` (imported on first use). Unknown names raise ValueError naming the allowed ones."""
    if name not in TASK_TYPES:
        raise ValueError(f"unknown task {name!r}; allowed: {', '.join(TASK_TYPES)}.")
    return importlib.import_module(f"ml.tasks.{name}")
