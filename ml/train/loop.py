"""Distil a teacher into the student: one training loop, readable top to bottom.

The recipe (settings in ml.workflows.Training):
- a stratified validation split is held out of the training set (never the frozen evaluation
  set); classes too rare to spare an example stay whole in training;
- AdamW with linear warmup then linear decay over max_epochs;
- each example is weighted by (largest class / its class) ** class_weight_power, so a long tail
  is not drowned by the head (unweighted, a small student learns never to predict rare classes);
- after every epoch the student is scored on the validation split; training stops when
  macro-F1 has not improved for `patience` epochs, and the best epoch's weights are the model.

The same code runs on a laptop CPU (fp32) and on a CUDA GPU (bf16 autocast); only the
device and the autocast dtype differ. A run writes atomic checkpoints and, when started
again with the same inputs, resumes from the newest complete one, so an Airflow retry (or a
new DAG run of the same data, settings, base model and teacher) continues rather than
restarts. On CPU a seeded run is reproducible bit for bit, including across a resume.

Layout:
    <checkpoints>/step-000050/  model.safetensors, config.json, training_state.pt,
                                progress.json, COMPLETE (written last)
    <checkpoints>/best/         the best epoch's weights so far (model.safetensors, best.json)
    out_dir/model/              the final student and its tokenizer (save_pretrained)
<checkpoints> is out_dir/checkpoints, or checkpoint_root/<fingerprint of the inputs> when a
checkpoint_root is given (how the distill DAG keys resume by inputs, not by DAG run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from ml.evaluate.metrics import confusion_matrix, macro_f1
from ml.train import progress
from ml.train.loss import distillation_loss
from ml.train.student import (
    build_student,
    check_teacher_compatible,
    fingerprint_model_dir,
    quiet_progress_bars,
)
from ml.workflows import ConfigurationError, Training

LOG_EVERY_STEPS = 10
WARMUP_FRACTION = 0.06  # of all steps; BERT fine-tuning recipes use 6-10 %
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
KEEP_CHECKPOINTS = 2  # older complete checkpoints are deleted; each holds weights + Adam state
PROB_SUM_TOLERANCE = 1e-3
# A class needs this many examples before one is held out for validation: with fewer, each
# example is worth more for learning the class than for scoring it.
MIN_CLASS_SIZE_FOR_VALIDATION = 4
VALIDATION_BATCH_SIZE = 64
FINGERPRINT_CHARS = 24  # of the hex digest, in a checkpoint folder's name
PROGRESS_TASK = "train_student"


class NonFiniteLossError(ConfigurationError, RuntimeError):
    """The loss or gradient became NaN/inf; training stopped before writing a checkpoint.
    Seeded, a retry fails the same way: the settings must change (a ConfigurationError)."""


class ResumeMismatchError(ConfigurationError):
    """The checkpoint folder holds checkpoints of a run with different inputs."""


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path  # out_dir/model: the student and its tokenizer
    steps: int  # optimizer steps completed, including those before a resume
    total_steps: int  # steps the schedule spans; fewer ran when early stopping or max_steps stopped it
    epochs: float  # passes over the training split completed
    final_loss: float  # loss of the last step
    mean_loss_last_epoch: float  # mean step loss over the last (possibly partial) epoch
    samples_per_s: float  # examples per second in this invocation, checkpoint writes excluded (0: no step)
    train_seconds: float  # wall time in the loop, summed over the original run and resumes
    device: str  # "cpu" or "cuda"
    dtype: str  # compute dtype: "float32" on CPU, "bfloat16" autocast on CUDA
    resumed_from_step: int | None
    n_parameters: int
    n_train: int = 0  # examples trained on (the training set less the validation split)
    n_validation: int = 0  # examples in the validation split
    history: tuple = ()  # one dict per validated epoch: epoch, step, val_macro_f1, val_accuracy, train_loss, lr
    best_epoch: int | None = None  # the epoch whose weights are the model (None: no validation split)
    best_val_macro_f1: float | None = None
    stop_reason: str = ""  # why training ended: early stop, epoch budget, max_steps
    checkpoint_dir: Path | None = None  # where this run's checkpoints are (safe to delete once done)


def stratified_split(hard_labels: Sequence[int], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), each sorted: about `fraction` of every class with at
    least MIN_CLASS_SIZE_FOR_VALIDATION examples is held out, at least one; rarer classes stay whole."""
    labels = np.asarray(hard_labels)
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    if fraction > 0:
        for cls in np.unique(labels):
            members = np.flatnonzero(labels == cls)
            if len(members) < MIN_CLASS_SIZE_FOR_VALIDATION:
                continue
            k = max(1, int(round(fraction * len(members))))
            held.append(rng.permutation(members)[:k])
    val = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


def class_weights(hard_labels: np.ndarray, n_classes: int, power: float) -> np.ndarray:
    """Per-class weights (largest class / class) ** power, scaled so the average example weighs 1."""
    counts = np.bincount(hard_labels, minlength=n_classes).astype(float)
    weights = np.zeros(n_classes)
    present = counts > 0
    weights[present] = (counts.max() / counts[present]) ** power
    return weights / weights[hard_labels].mean() if len(hard_labels) else weights


def train_student(
    *,
    base_dir: Path,
    texts: Sequence[str],
    teacher_probs: np.ndarray,
    hard_labels: Sequence[int],
    label_names: Sequence[str],
    cfg: Training,
    out_dir: Path,
    device: str = "auto",
    seed: int = 42,
    threads: int = 0,
    log: Callable[[str], None] = print,
    max_steps: int | None = None,
    teacher_label_names: Sequence[str] | None = None,
    checkpoint_root: Path | None = None,
) -> TrainResult:
    """Train a student on teacher probabilities and hard labels; see the module docstring.

    teacher_probs is (N, C) with rows summing to 1, columns in label_names order.
    max_steps stops after that many steps in total (counting resumed ones) without
    shortening the learning-rate schedule, so a later run without it finishes the same
    run; it is for smoke tests and timing. teacher_label_names, when given, is checked
    against label_names before anything is trained. threads > 0 sets torch's
    process-wide CPU thread count. checkpoint_root, when given, keys checkpoints by the
    fingerprint of the inputs under it and deletes other (superseded) inputs' checkpoints
    there once this run has finished.
    """
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    label_names = [str(n) for n in label_names]
    if teacher_label_names is not None:
        check_teacher_compatible(label_names, teacher_label_names)
    probs_np, labels_np = _validated_inputs(texts, teacher_probs, hard_labels, label_names, cfg, max_steps)
    # One-hot targets (human labels, a call log without probabilities) are the hard labels at any
    # temperature: the soft term would only re-weigh the same cross-entropy, so it is left out.
    one_hot = bool(len(probs_np)) and bool(
        (probs_np.max(axis=1) == 1.0).all() and (probs_np.argmax(axis=1) == labels_np).all()
    )
    alpha = 0.0 if one_hot else cfg.alpha

    # -- device, dtype, seeds ---------------------------------------------------------------
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not one of auto, cuda, cpu.")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device='cuda' was asked for but torch sees no CUDA GPU; use device='auto' or 'cpu'."
        )
    # bf16 autocast on GPU roughly doubles throughput and, unlike fp16, needs no loss scaling.
    amp_dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if threads > 0:
        torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device

    # -- model, data --------------------------------------------------------------------------
    model, tokenizer = build_student(base_dir, label_names, cfg.student_layers)
    n_parameters = sum(p.numel() for p in model.parameters())
    # Tokenise once, padded to max_length; each batch is then cut to its longest row
    # (dynamic padding), because support tickets and clauses are mostly far shorter than
    # max_length and attention cost grows with the padded width. Right padding makes the cut valid.
    tokenizer.padding_side = "right"
    encoded = tokenizer(
        list(texts), padding="max_length", truncation=True, max_length=cfg.max_length, return_tensors="pt"
    )
    encoded = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    all_probs = torch.tensor(probs_np, dtype=torch.float32)
    all_labels = torch.tensor(labels_np, dtype=torch.long)
    train_rows, val_rows = stratified_split(labels_np, cfg.validation_fraction, seed)
    train_rows_t = torch.from_numpy(train_rows)
    weights_by_class = torch.tensor(
        class_weights(labels_np[train_rows], len(label_names), cfg.class_weight_power), dtype=torch.float32
    )
    n_examples = len(train_rows)

    steps_per_epoch = math.ceil(n_examples / cfg.batch_size)
    total_steps = max(1, math.ceil(cfg.max_epochs * steps_per_epoch))
    stop_step = total_steps if max_steps is None else min(max_steps, total_steps)
    warmup_steps = max(1, int(WARMUP_FRACTION * total_steps))

    # -- optimizer: AdamW, no decay on biases and LayerNorm, linear warmup then linear decay ---
    model.to(device)
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim < 2 else decay).append(param)
    # fused: one kernel over all parameters instead of a chain of tensor ops per group. On a
    # 2-core CPU it took MiniLM-L6's AdamW step from 69 to 15 ms (benchmarks/distill_vs_finetune.py
    # reads the gain as training FLOPs utilisation); CUDA has the same kernel.
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        fused=True,
    )

    def lr_factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    # -- resume from the newest complete checkpoint, if any -------------------------------------
    run_fingerprint = _run_fingerprint(base_dir, texts, probs_np, labels_np, label_names, cfg, seed)
    ckpt_root = (
        Path(checkpoint_root) / run_fingerprint[:FINGERPRINT_CHARS]
        if checkpoint_root is not None
        else out_dir / "checkpoints"
    )
    step, last_loss, epoch_losses, seconds_before = 0, float("nan"), [], 0.0
    history: list[dict] = []
    stop_reason = ""
    resumed_from_step = None
    latest = _latest_complete_checkpoint(ckpt_root)
    if latest is not None:
        saved = json.loads((latest / "progress.json").read_text())
        if saved["run_fingerprint"] != run_fingerprint:
            raise ResumeMismatchError(
                f"{ckpt_root} holds checkpoints of a run with a different base model, data, labels, "
                "settings or seed; use a new out_dir, or delete that folder to start over."
            )
        safetensors.torch.load_model(model, latest / "model.safetensors", device=device)
        state = torch.load(latest / "training_state.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step, last_loss = saved["step"], saved["last_loss"]
        epoch_losses, seconds_before = saved["epoch_losses"], saved["train_seconds"]
        history, stop_reason = saved.get("history", []), saved.get("stop_reason", "")
        resumed_from_step = step
        log(f"resuming from {latest} (step {step}/{total_steps})")
    log(
        f"training on {n_examples} examples, validating on {len(val_rows)}; up to {cfg.max_epochs:g} epochs "
        f"({total_steps} steps), patience {cfg.patience}"
        + ("; one-hot targets: plain cross-entropy (alpha 0, no temperature)" if one_hot else "")
    )

    # -- train --------------------------------------------------------------------------------
    model.train()
    start_step, run_started = step, time.perf_counter()
    samples_run, checkpoint_seconds = 0, 0.0  # throughput leaves out disk time: it is a compute figure
    losses_since_log, order = [], None
    samples_per_s = eta_s = 0.0
    while step < stop_step and not stop_reason:
        epoch, position = divmod(step, steps_per_epoch)
        if position == 0:
            epoch_losses = []
        if position == 0 or order is None:
            # The order of an epoch depends only on (seed, epoch), so a resumed run needs no
            # sampler state to see the same batches.
            order = train_rows_t[
                torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + epoch))
            ]
        idx = order[position * cfg.batch_size : (position + 1) * cfg.batch_size]
        width = int(encoded["attention_mask"][idx].sum(dim=1).max())
        batch = {k: v[idx, :width].to(device) for k, v in encoded.items()}

        with torch.autocast(device_type=device, dtype=amp_dtype, enabled=device == "cuda"):
            logits = model(**batch).logits
        # The loss in fp32: softmax of bf16 logits loses the small probabilities that carry
        # the teacher's "dark knowledge".
        loss = distillation_loss(
            logits.float(),
            all_probs[idx].to(device),
            all_labels[idx].to(device),
            temperature=cfg.temperature,
            alpha=alpha,
            sample_weights=weights_by_class[all_labels[idx]].to(device)
            if cfg.class_weight_power > 0
            else None,
        )
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise NonFiniteLossError(_non_finite_message("loss", step + 1, loss_value, cfg))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        if not torch.isfinite(grad_norm):
            raise NonFiniteLossError(_non_finite_message("gradient norm", step + 1, float(grad_norm), cfg))
        optimizer.step()
        scheduler.step()
        step += 1
        last_loss = loss_value
        epoch_losses.append(loss_value)
        samples_run += len(idx)
        losses_since_log.append(loss_value)

        if step % LOG_EVERY_STEPS == 0 or step == stop_step:
            elapsed_s = time.perf_counter() - run_started
            samples_per_s = samples_run / max(elapsed_s - checkpoint_seconds, 1e-9)
            eta_s = (stop_step - step) * elapsed_s / (step - start_step)
            mean_loss = sum(losses_since_log) / len(losses_since_log)
            log(
                f"step {step}/{total_steps} loss {mean_loss:.4f} {samples_per_s:.1f} samples/s eta {eta_s:.0f}s"
            )
            losses_since_log = []
            progress.report(
                task=PROGRESS_TASK,
                step=step,
                total_steps=total_steps,
                epoch=step / steps_per_epoch,
                samples_per_s=round(samples_per_s, 1),
                eta_s=round(eta_s),
                val_macro_f1=history[-1]["val_macro_f1"] if history else None,
            )

        epoch_ended = step % steps_per_epoch == 0 or step == total_steps
        if epoch_ended and len(val_rows):
            stop_reason = _validate_epoch(
                model,
                encoded,
                val_rows,
                labels_np,
                label_names,
                device,
                amp_dtype,
                ckpt_root,
                history,
                step,
                steps_per_epoch,
                epoch_losses,
                scheduler.get_last_lr()[0],
                cfg,
                log,
                run_fingerprint,
            )
            progress.report(
                task=PROGRESS_TASK,
                step=step,
                total_steps=total_steps,
                epoch=step / steps_per_epoch,
                samples_per_s=round(samples_per_s, 1),
                eta_s=round(eta_s),
                val_macro_f1=history[-1]["val_macro_f1"],
            )
        # Checkpoint on schedule, at each epoch's end (its validation is in the record) and where
        # this invocation stops, so a run stopped by max_steps (or finished) resumes exactly there.
        if step % cfg.checkpoint_every == 0 or step == stop_step or epoch_ended or stop_reason:
            record = {
                "step": step,
                "total_steps": total_steps,
                "run_fingerprint": run_fingerprint,
                "last_loss": last_loss,
                "epoch_losses": epoch_losses,
                "train_seconds": seconds_before + time.perf_counter() - run_started,
                "history": history,
                "stop_reason": stop_reason,
            }
            checkpoint_started = time.perf_counter()
            # A finite loss and gradient can still step the weights to inf (a huge learning
            # rate): such a checkpoint would be resumed from and fail on every retry.
            _check_finite_weights(model, step, cfg)
            _save_checkpoint(ckpt_root, step, model, optimizer, scheduler, record)
            checkpoint_seconds += time.perf_counter() - checkpoint_started

    if not stop_reason:
        stop_reason = (
            f"max_epochs={cfg.max_epochs:g} reached"
            if step >= total_steps
            else f"max_steps={max_steps} reached"
        )

    # -- the final model: the best validated epoch, else the last weights --------------------------
    run_seconds = time.perf_counter() - run_started
    steps_run = step - start_step
    best = _best_record(ckpt_root, run_fingerprint)
    if best is not None:
        safetensors.torch.load_model(model, ckpt_root / "best" / "model.safetensors", device=device)
    model_dir = out_dir / "model"
    _save_model_atomically(model, tokenizer, model_dir)
    if checkpoint_root is not None:
        _remove_superseded(Path(checkpoint_root), keep=ckpt_root)
    return TrainResult(
        model_dir=model_dir,
        steps=step,
        total_steps=total_steps,
        epochs=step / steps_per_epoch,
        final_loss=last_loss,
        mean_loss_last_epoch=sum(epoch_losses) / len(epoch_losses) if epoch_losses else float("nan"),
        samples_per_s=samples_run / max(run_seconds - checkpoint_seconds, 1e-9) if steps_run else 0.0,
        train_seconds=seconds_before + run_seconds,
        device=device,
        dtype=str(amp_dtype).removeprefix("torch."),
        resumed_from_step=resumed_from_step,
        n_parameters=n_parameters,
        n_train=n_examples,
        n_validation=len(val_rows),
        history=tuple(history),
        best_epoch=best["epoch"] if best else None,
        best_val_macro_f1=best["val_macro_f1"] if best else None,
        stop_reason=stop_reason,
        checkpoint_dir=ckpt_root,
    )


# -- validation and early stopping ---------------------------------------------------------------


@torch.no_grad()
def predict_rows(model, encoded: dict, rows: np.ndarray, device: str, amp_dtype) -> np.ndarray:
    """Argmax class of each row, in batches cut to their longest row (as in training)."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(rows), VALIDATION_BATCH_SIZE):
        idx = torch.from_numpy(rows[start : start + VALIDATION_BATCH_SIZE])
        width = int(encoded["attention_mask"][idx].sum(dim=1).max())
        batch = {k: v[idx, :width].to(device) for k, v in encoded.items()}
        with torch.autocast(device_type=device, dtype=amp_dtype, enabled=device == "cuda"):
            preds.append(model(**batch).logits.float().argmax(dim=-1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)


def _validate_epoch(
    model,
    encoded,
    val_rows,
    labels_np,
    label_names,
    device,
    amp_dtype,
    ckpt_root: Path,
    history: list,
    step: int,
    steps_per_epoch: int,
    epoch_losses: list,
    lr: float,
    cfg: Training,
    log,
    run_fingerprint: str,
) -> str:
    """Score the epoch on the validation split, keep its weights when they are the best so far;
    returns why training stops now ("" to go on)."""
    y_true = labels_np[val_rows]
    y_pred = predict_rows(model, encoded, val_rows, device, amp_dtype)
    cm = confusion_matrix(y_true, y_pred, len(label_names))
    present = cm.sum(axis=1) > 0
    entry = {
        "epoch": math.ceil(step / steps_per_epoch),
        "step": step,
        "val_macro_f1": macro_f1(y_true, y_pred, len(label_names)),
        "val_accuracy": float(np.trace(cm) / max(1, cm.sum())),
        # Classes in the validation split that the student never predicted there.
        "val_never_predicted": int((present & (cm.sum(axis=0) == 0)).sum()),
        "train_loss": float(np.mean(epoch_losses)) if epoch_losses else float("nan"),
        "lr": float(lr),
    }
    history.append(entry)
    best = max(history, key=lambda h: h["val_macro_f1"])  # ties: the earlier epoch
    if best is entry:
        _save_best(ckpt_root, model, {**entry, "run_fingerprint": run_fingerprint})
    epochs_since_best = entry["epoch"] - best["epoch"]
    log(
        f"epoch {entry['epoch']}: validation macro-F1 {entry['val_macro_f1']:.4f} accuracy "
        f"{entry['val_accuracy']:.4f} (best {best['val_macro_f1']:.4f} at epoch {best['epoch']}; "
        f"{entry['val_never_predicted']} classes never predicted)"
    )
    if cfg.patience > 0 and epochs_since_best >= cfg.patience:
        return (
            f"early stop: no better validation macro-F1 for {epochs_since_best} epochs "
            f"(patience {cfg.patience}); best epoch {best['epoch']}"
        )
    return ""


def _save_best(ckpt_root: Path, model, entry: dict) -> None:
    """The best epoch's weights, replaced atomically (a killed write leaves the previous best)."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp = ckpt_root / f".tmp-best-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
    (tmp / "best.json").write_text(json.dumps(entry))
    _fsync_dir_files(tmp)
    final = ckpt_root / "best"
    if final.exists():
        old = ckpt_root / f".old-best-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _best_record(ckpt_root: Path, run_fingerprint: str) -> dict | None:
    try:
        record = json.loads((ckpt_root / "best" / "best.json").read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("run_fingerprint") == run_fingerprint else None


def _remove_superseded(checkpoint_root: Path, keep: Path) -> None:
    """Checkpoints of other inputs under checkpoint_root: a finished run supersedes them."""
    for other in checkpoint_root.iterdir():
        if other.is_dir() and other.resolve() != keep.resolve():
            shutil.rmtree(other, ignore_errors=True)


# -- inputs --------------------------------------------------------------------------------------


def _validated_inputs(texts, teacher_probs, hard_labels, label_names, cfg, max_steps):
    n = len(texts)
    if n == 0:
        raise ValueError("texts is empty; there is nothing to train on. Check the dataset split.")
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()), None)
    if bad is not None:
        raise ValueError(f"texts[{bad}] is {texts[bad]!r}; every example needs non-empty text.")
    probs = np.asarray(teacher_probs, dtype=np.float64)
    if probs.shape != (n, len(label_names)):
        raise ValueError(
            f"teacher_probs has shape {probs.shape}, expected ({n}, {len(label_names)}): one row per "
            "text and one column per label, in label_names order."
        )
    rows_bad = ~np.isfinite(probs).all(axis=1) | (probs < 0).any(axis=1)
    rows_bad |= np.abs(probs.sum(axis=1) - 1.0) > PROB_SUM_TOLERANCE
    if rows_bad.any():
        row = int(np.flatnonzero(rows_bad)[0])
        raise ValueError(
            f"teacher_probs row {row} is {probs[row].tolist()}; each row must be finite, non-negative "
            f"and sum to 1 ({int(rows_bad.sum())} bad rows). Exponentiate logprobs and renormalise, "
            "or drop the example."
        )
    labels = np.asarray(hard_labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"hard_labels must be {n} integer class indices, got shape {labels.shape} {labels.dtype}."
        )
    if labels.min() < 0 or labels.max() >= len(label_names):
        raise ValueError(f"hard_labels must lie in 0..{len(label_names) - 1} (indices into label_names).")
    for name in ("batch_size", "max_length", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"training.{name}={getattr(cfg, name)} must be at least 1.")
    if not cfg.max_epochs > 0 or not cfg.learning_rate > 0:
        raise ValueError("training.max_epochs and training.learning_rate must be positive.")
    if isinstance(cfg.student_layers, str) or cfg.search is not None:
        raise ValueError(
            "train_student trains one depth with one set of settings; student_layers: auto and training.search "
            "are resolved by ml.train.select.train_selected."
        )
    if not 0.0 <= cfg.validation_fraction < 1.0:
        raise ValueError(f"training.validation_fraction={cfg.validation_fraction} must be in [0, 1).")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps={max_steps} must be at least 1, or None for the whole schedule.")
    return probs, labels.astype(np.int64)


def _run_fingerprint(base_dir, texts, probs, labels, label_names, cfg, seed) -> str:
    # Everything that decides the weights; a checkpoint is resumed only by the same run.
    digest = hashlib.sha256()
    digest.update(fingerprint_model_dir(base_dir).encode())
    for text in texts:
        encoded = text.encode()
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
    digest.update(np.ascontiguousarray(probs).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(json.dumps([label_names, dataclasses.asdict(cfg), seed], sort_keys=True).encode())
    return digest.hexdigest()


def _non_finite_message(what: str, step: int, value: float, cfg: Training) -> str:
    return (
        f"{what} is {value} at step {step}; training stopped and no checkpoint was written for it. "
        f"Lower training.learning_rate (now {cfg.learning_rate:g}) or check the inputs "
        "(teacher probabilities, empty texts)."
    )


def _check_finite_weights(model, step: int, cfg: Training) -> None:
    for name, param in model.named_parameters():
        if not torch.isfinite(param).all():
            raise NonFiniteLossError(
                _non_finite_message(f"weight {name}", step, float("nan"), cfg).replace(
                    " is nan at", " is not finite after"
                )
            )


# -- checkpoints ---------------------------------------------------------------------------------


def _complete_checkpoints(ckpt_root: Path) -> list[Path]:
    """Checkpoint folders with the COMPLETE marker, oldest first; half-written ones do not count."""
    found = [p for p in ckpt_root.glob("step-*") if p.name[5:].isdigit() and (p / "COMPLETE").is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))  # by number: step-1000000 follows step-999999


def _latest_complete_checkpoint(ckpt_root: Path) -> Path | None:
    complete = _complete_checkpoints(ckpt_root)
    return complete[-1] if complete else None


def _rng_state() -> dict:
    # Tensors, lists and numbers only, so torch.load(weights_only=True) can read it back.
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_state[0], "internal": list(py_state[1]), "gauss_next": py_state[2]},
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["internal"]), py_state["gauss_next"]))


def _save_checkpoint(ckpt_root: Path, step: int, model, optimizer, scheduler, progress: dict) -> None:
    """Write into a temp dir, mark it COMPLETE, then rename: a reader sees all of it or nothing."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:06d}"
    tmp = ckpt_root / f".tmp-step-{step:06d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_progress_bars():
        model.save_pretrained(tmp)  # safetensors; transformers 5 writes nothing else
    torch.save(
        {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state()},
        tmp / "training_state.pt",
    )
    (tmp / "progress.json").write_text(json.dumps(progress, indent=2))
    _fsync_dir_files(tmp)
    (tmp / "COMPLETE").write_text(f"step {step}\n")
    if final.exists():  # an incomplete leftover of a killed run, or this step from a rerun
        shutil.rmtree(final)
    os.replace(tmp, final)

    # Checkpoints are written under .tmp-* names, so a step-* folder without COMPLETE is never
    # in progress: it is debris (copied in by hand, or from before this layout) and goes.
    complete = _complete_checkpoints(ckpt_root)
    incomplete = [p for p in ckpt_root.glob("step-*") if p not in complete]
    stale_tmp = [
        p
        for pattern in (".tmp-step-*", ".tmp-best-*", ".old-best-*")  # left by killed runs
        for p in ckpt_root.glob(pattern)
    ]
    for old in complete[:-KEEP_CHECKPOINTS] + incomplete + stale_tmp:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir_files(folder: Path) -> None:
    # Without this a power loss after the rename can leave COMPLETE pointing at empty files.
    for file in folder.iterdir():
        if file.is_file():
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())


def _save_model_atomically(model, tokenizer, model_dir: Path) -> None:
    tmp = model_dir.with_name(f".tmp-{model_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_progress_bars():
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _fsync_dir_files(tmp)
    if model_dir.exists():
        old = model_dir.with_name(f".old-{model_dir.name}-{os.getpid()}")
        os.replace(model_dir, old)
        os.replace(tmp, model_dir)
        shutil.rmtree(old)
    else:
        os.replace(tmp, model_dir)
