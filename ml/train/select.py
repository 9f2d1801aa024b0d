"""Choices made before the weights: the student's depth, and the learning rate and epochs.

Both are optional (ml.workflows.Training); without them train_selected is one train_student run.
- `student_layers: auto`: the candidate depths are a third, half, two thirds and all of the base's
  layers (MiniLM-L6: 2, 3, 4, 6). A depth is allowed when its batch-1 p99, measured by the one
  latency method (ml.evaluate.latency, torch fp32 on CPU) on an untrained student of that depth,
  fits the workflow's latency SLA; the largest is measured first and the others only when it
  misses, since a shallower student is never slower. The largest allowed depth trains first, then
  the others from the smallest up; the first whose validation macro-F1 is within
  `student_layers_tolerance` of the largest's is kept and no deeper one is trained.
- `search: {trials, timeout_s}`: Optuna (TPE sampler seeded by the run's seed, in-memory storage)
  tries learning_rate (log scale) and max_epochs (1 to the declared max_epochs); each trial is a
  full training scored on the validation split, never on the frozen evaluation set. The declared
  settings are the first trial, so the search cannot end below them. With auto, the search runs
  at the largest allowed depth and the depths then train with its best settings.

Each training runs in its own folder under out_dir; the chosen one's model becomes out_dir/model
and the rest are deleted. What was tried, each validation score and why the winner won is in
Selection.record, which the distill task logs to MLflow. A retry starts the selection over; only
the training in progress when it stopped resumes from its checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ml.train.loop import NonFiniteLossError, TrainResult, train_student
from ml.train.student import build_student, quiet_progress_bars
from ml.workflows import ConfigurationError, Search, Training

AUTO_DEPTH_FRACTIONS = (1 / 3, 1 / 2, 2 / 3, 1)
LEARNING_RATE_RANGE = (1e-5, 1e-3)  # widened to include the declared learning_rate
LATENCY_TEXTS = 100  # training texts the latency of a depth is measured on


@dataclass(frozen=True)
class Selection:
    result: TrainResult  # the kept training; its model is out_dir/model
    cfg: Training  # the settings it was trained with: an integer depth, no search
    record: dict  # what was tried and why the kept one won ({} when nothing was chosen)

    def mlflow_fields(self) -> tuple[dict, dict, dict]:
        """(params, tags, curves) for the MLflow run; curves are {metric: [(step, value)]}."""
        params, tags, curves = {}, {}, {}
        if "auto" in self.record:
            auto = self.record["auto"]
            params |= {
                "auto.candidates": _ints(auto["candidates"]),
                "auto.allowed": _ints(auto["allowed"]),
                "auto.tried": _ints(auto["tried"]),
                "auto.chosen_layers": auto["chosen"],
            }
            tags["auto.reason"] = auto["reason"]
            curves["auto.val_macro_f1"] = [(d, auto["val_macro_f1"][d]) for d in auto["tried"]]
            curves["auto.latency_p99_ms"] = sorted(auto["latency_p99_ms"].items())
        if "search" in self.record:
            search = self.record["search"]
            params |= {
                "search.trials_run": len(search["trials"]),
                "search.learning_rate": search["learning_rate"],
                "search.max_epochs": search["max_epochs"],
            }
            tags["search.reason"] = search["reason"]
            for key in ("val_macro_f1", "learning_rate", "max_epochs"):
                curves[f"search.{key}"] = [
                    (t["trial"], t[key]) for t in search["trials"] if t[key] is not None
                ]
        return params, tags, curves


def validation_score(cfg: Training, result: TrainResult) -> float:
    """What depths and trials are compared on: the best epoch's validation macro-F1."""
    return result.best_val_macro_f1


def candidate_depths(n_base_layers: int) -> list[int]:
    """A third, half, two thirds and all of the base's layers: 6 -> [2, 3, 4, 6], 12 -> [4, 6, 8, 12]."""
    return sorted({max(1, round(n_base_layers * f)) for f in AUTO_DEPTH_FRACTIONS})


def allowed_depths(
    candidates: Sequence[int], sla_ms: float, measure: Callable[[list[int]], dict[int, float]]
) -> tuple[list[int], dict[int, float]]:
    """(depths whose p99 fits sla_ms, the p99 of each measured depth); the largest is measured first."""
    largest = max(candidates)
    p99 = dict(measure([largest]))
    if p99[largest] <= sla_ms:
        return sorted(candidates), p99
    p99.update(measure([d for d in candidates if d != largest]))
    return sorted(d for d in candidates if p99[d] <= sla_ms), p99


def measure_depth_latency(
    base_dir: Path, label_names: Sequence[str], texts: Sequence[str], max_length: int, depths: list[int]
) -> dict[int, float]:
    """Batch-1 p99 (ms) of an untrained student at each depth, by ml.evaluate.latency.measure_isolated."""
    from ml.evaluate.latency import measure_isolated

    with tempfile.TemporaryDirectory(prefix="mlops-depths-") as tmp:
        specs = {}
        for depth in depths:
            model, tokenizer = build_student(base_dir, label_names, depth)
            folder = Path(tmp) / f"layers_{depth}"
            with quiet_progress_bars():
                model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            specs[folder.name] = {
                "factory": "ml.evaluate.latency:torch_predictor",
                "kwargs": {"model_dir": str(folder), "max_length": max_length},
            }
        timing = measure_isolated(specs, list(texts)[:LATENCY_TEXTS])
    return {depth: timing[f"layers_{depth}"]["latency_p99_ms"] for depth in depths}


def pick_depth(
    allowed: Sequence[int], tolerance: float, score_of: Callable[[int], float]
) -> tuple[int, dict[int, float], str]:
    """(kept depth, score of each depth tried, why): the largest first, then the smallest up, until one
    is within tolerance of the largest; deeper ones are not tried."""
    largest = max(allowed)
    scores = {largest: score_of(largest)}
    for depth in sorted(allowed)[:-1]:
        scores[depth] = score_of(depth)
        if scores[largest] - scores[depth] <= tolerance + 1e-12:
            return (
                depth,
                scores,
                f"{depth} layers: the smallest allowed depth whose validation macro-F1 {scores[depth]:.4f} is "
                f"within {tolerance:g} of the largest ({largest} layers: {scores[largest]:.4f})"
                + _shallower(scores, depth, largest),
            )
    return (
        largest,
        scores,
        f"{largest} layers: no smaller allowed depth came within {tolerance:g} of its validation "
        f"macro-F1 {scores[largest]:.4f}" + _shallower(scores, largest + 1, largest),
    )


def search_settings(
    cfg: Training, search: Search, train_and_score: Callable[[str, Training], float], seed: int
) -> tuple[str, list[dict]]:
    """(name of the best trial, every trial's settings and validation score): an Optuna study of
    learning_rate and max_epochs around cfg; train_and_score(name, settings) trains one trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    top_epochs = max(1, math.ceil(cfg.max_epochs))
    lr_low = min(LEARNING_RATE_RANGE[0], cfg.learning_rate)
    lr_high = max(LEARNING_RATE_RANGE[1], cfg.learning_rate)
    study = optuna.create_study(
        direction="maximize",
        storage=optuna.storages.InMemoryStorage(),
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, search.trials // 2)),
    )
    study.enqueue_trial({"learning_rate": cfg.learning_rate, "max_epochs": top_epochs})

    def objective(trial) -> float:
        trial_cfg = dataclasses.replace(
            cfg,
            learning_rate=trial.suggest_float("learning_rate", lr_low, lr_high, log=True),
            max_epochs=float(trial.suggest_int("max_epochs", 1, top_epochs)),
        )
        return train_and_score(f"trial-{trial.number}", trial_cfg)

    # A learning rate that diverges fails its trial, not the search.
    study.optimize(objective, n_trials=search.trials, timeout=search.timeout_s, catch=(NonFiniteLossError,))
    trials = [
        {
            "trial": t.number,
            "learning_rate": t.params.get("learning_rate"),
            "max_epochs": t.params.get("max_epochs"),
            "val_macro_f1": t.value,
            "state": t.state.name,
        }
        for t in study.trials
    ]
    if not any(t["val_macro_f1"] is not None for t in trials):
        raise ConfigurationError(
            "training.search: every trial diverged (non-finite loss); lower training.learning_rate."
        )
    return f"trial-{study.best_trial.number}", trials


def train_selected(
    *,
    base_dir: Path,
    texts: Sequence[str],
    teacher_probs,
    hard_labels,
    label_names: Sequence[str],
    cfg: Training,
    out_dir: Path,
    latency_sla_p99_ms: float | None = None,
    seed: int = 42,
    log: Callable[[str], None] = print,
    checkpoint_root: Path | None = None,
    score: Callable[[Training, TrainResult], float] = validation_score,
    measure_latency: Callable[[list[int]], dict[int, float]] | None = None,
    **train_kwargs,
) -> Selection:
    """train_student, after choosing the depth (student_layers: auto) and settings (search) when asked.

    score(settings, result) and measure_latency(depths) -> {depth: p99 ms} are seams for tests;
    by default the validation macro-F1 and measure_depth_latency. train_kwargs go to train_student
    (device, threads, max_steps, teacher_label_names)."""
    auto, search = cfg.student_layers == "auto", cfg.search

    def train(run_cfg: Training, run_dir: Path, run_log, root: Path | None = None) -> TrainResult:
        return train_student(
            base_dir=base_dir,
            texts=texts,
            teacher_probs=teacher_probs,
            hard_labels=hard_labels,
            label_names=label_names,
            cfg=run_cfg,
            out_dir=run_dir,
            seed=seed,
            log=run_log,
            checkpoint_root=root,
            **train_kwargs,
        )

    if not auto and search is None:
        return Selection(train(cfg, out_dir, log, checkpoint_root), cfg, {})
    if not cfg.validation_fraction:
        raise ConfigurationError(
            "training.validation_fraction is 0: student_layers: auto and training.search compare trainings on "
            "the validation split; set it, e.g. 0.1."
        )
    out_dir = Path(out_dir)
    runs: dict[str, tuple[Training, TrainResult, float]] = {}

    def train_and_score(name: str, run_cfg: Training) -> float:
        result = train(run_cfg, out_dir / name, lambda m: log(f"{name}: {m}"))
        shutil.rmtree(result.checkpoint_dir, ignore_errors=True)  # only a resume would read them
        runs[name] = (run_cfg, result, score(run_cfg, result))
        log(f"{name}: validation macro-F1 {runs[name][2]:.4f}")
        return runs[name][2]

    record: dict = {}
    chosen_cfg = dataclasses.replace(cfg, search=None)
    if auto:
        n_layers = _base_layers(base_dir)
        candidates = candidate_depths(n_layers)
        measure = measure_latency or partial(
            measure_depth_latency, base_dir, label_names, texts, cfg.max_length
        )
        if latency_sla_p99_ms is None:
            raise ValueError("student_layers: auto needs latency_sla_p99_ms (the workflow's latency SLA).")
        allowed, p99 = allowed_depths(candidates, latency_sla_p99_ms, measure)
        if not allowed:
            raise ConfigurationError(
                f"training.student_layers: auto: no depth of {candidates} meets latency_sla_p99_ms="
                f"{latency_sla_p99_ms:g} (p99 ms: {json.dumps(p99)}); raise the SLA or use a smaller base_model."
            )
        log(f"student_layers: auto: depths {allowed} of {candidates} fit the {latency_sla_p99_ms:g} ms SLA")
        record["auto"] = {
            "candidates": candidates,
            "latency_p99_ms": p99,
            "sla_p99_ms": latency_sla_p99_ms,
            "allowed": allowed,
            "tolerance": cfg.student_layers_tolerance,
        }
        chosen_cfg = dataclasses.replace(chosen_cfg, student_layers=max(allowed))
    chosen = ""
    if search is not None:
        chosen, trials = search_settings(chosen_cfg, search, train_and_score, seed)
        chosen_cfg = runs[chosen][0]
        record["search"] = {
            "trials": trials,
            "learning_rate": chosen_cfg.learning_rate,
            "max_epochs": chosen_cfg.max_epochs,
            "reason": (
                f"{chosen}: the best validation macro-F1 ({runs[chosen][2]:.4f}) of {len(trials)} trials, "
                f"learning_rate {chosen_cfg.learning_rate:.3g}, max_epochs {chosen_cfg.max_epochs:g}"
            ),
        }
        log(f"search: {record['search']['reason']}")
        for name in [n for n in runs if n != chosen]:
            shutil.rmtree(out_dir / name, ignore_errors=True)
    if auto:

        def score_of(depth: int) -> float:
            if depth == chosen_cfg.student_layers and chosen:
                return runs[chosen][2]  # the search trained this depth with these settings
            return train_and_score(f"layers-{depth}", dataclasses.replace(chosen_cfg, student_layers=depth))

        depth, scores, reason = pick_depth(record["auto"]["allowed"], cfg.student_layers_tolerance, score_of)
        record["auto"] |= {"tried": list(scores), "val_macro_f1": scores, "chosen": depth, "reason": reason}
        log(f"student_layers: auto: {reason}")
        if not (depth == chosen_cfg.student_layers and chosen):
            chosen = f"layers-{depth}"
    chosen_cfg, result, _ = runs[chosen]
    model_dir = out_dir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.model_dir.replace(model_dir)
    for name in runs:
        shutil.rmtree(out_dir / name, ignore_errors=True)
    return Selection(dataclasses.replace(result, model_dir=model_dir), chosen_cfg, record)


def _base_layers(base_dir: Path) -> int:
    config = json.loads((Path(base_dir) / "config.json").read_text())
    if not isinstance(config.get("num_hidden_layers"), int):
        raise ConfigurationError(
            f"{base_dir}/config.json has no num_hidden_layers, so student_layers: auto has no depths to try; "
            "set student_layers to a number."
        )
    return config["num_hidden_layers"]


def _shallower(scores: dict[int, float], below: int, largest: int) -> str:
    tried = [f"{d} layers {s:.4f}" for d, s in sorted(scores.items()) if d < below and d != largest]
    return f"; shallower: {', '.join(tried)}" if tried else ""


def _ints(values) -> str:
    return ",".join(str(v) for v in values)
