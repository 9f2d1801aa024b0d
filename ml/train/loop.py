"""Distil a teacher into the student: one training loop, readable top to bottom.

The same code runs on a laptop CPU (fp32) and on a CUDA GPU (bf16 autocast); only the
device and the autocast dtype differ. A run writes atomic checkpoints and, when started
again on the same out_dir with the same inputs, resumes from the newest complete one, so an
Airflow retry after a killed worker continues rather than restarts. On CPU a seeded run is
reproducible bit for bit, including across a resume.

Layout of out_dir:
    checkpoints/step-000050/   model.safetensors, config.json, training_state.pt,
                               progress.json, COMPLETE (written last)
    model/                     the final student and its tokenizer (save_pretrained)
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

from ml.train.loss import distillation_loss
from ml.train.student import build_student, check_teacher_compatible, fingerprint_model_dir, quiet_progress_bars
from ml.workflows import Training

LOG_EVERY_STEPS = 10
WARMUP_FRACTION = 0.06  # of all steps; BERT fine-tuning recipes use 6-10 %
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
KEEP_CHECKPOINTS = 2  # older complete checkpoints are deleted; each holds weights + Adam state
PROB_SUM_TOLERANCE = 1e-3


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; training stopped before writing a checkpoint."""


class ResumeMismatchError(ValueError):
    """out_dir holds checkpoints of a run with different inputs."""


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path  # out_dir/model: the student and its tokenizer
    steps: int  # optimizer steps completed, including those before a resume
    total_steps: int  # steps the schedule spans; steps < total_steps when max_steps stopped early
    epochs: float  # passes over the training set completed
    final_loss: float  # loss of the last step
    mean_loss_last_epoch: float  # mean step loss over the last (possibly partial) epoch
    samples_per_s: float  # examples per second in this invocation, checkpoint writes excluded (0: no step)
    train_seconds: float  # wall time in the loop, summed over the original run and resumes
    device: str  # "cpu" or "cuda"
    dtype: str  # compute dtype: "float32" on CPU, "bfloat16" autocast on CUDA
    resumed_from_step: int | None
    n_parameters: int


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
) -> TrainResult:
    """Train a student on teacher probabilities and hard labels; see the module docstring.

    teacher_probs is (N, C) with rows summing to 1, columns in label_names order.
    max_steps stops after that many steps in total (counting resumed ones) without
    shortening the learning-rate schedule, so a later run without it finishes the same
    run; it is for smoke tests and timing. teacher_label_names, when given, is checked
    against label_names before anything is trained. threads > 0 sets torch's
    process-wide CPU thread count.
    """
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    label_names = [str(n) for n in label_names]
    if teacher_label_names is not None:
        check_teacher_compatible(label_names, teacher_label_names)
    probs_np, labels_np = _validated_inputs(texts, teacher_probs, hard_labels, label_names, cfg, max_steps)
    n_examples = len(texts)

    # -- device, dtype, seeds ---------------------------------------------------------------
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not one of auto, cuda, cpu.")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA GPU; use device='auto' or 'cpu'.")
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

    steps_per_epoch = math.ceil(n_examples / cfg.batch_size)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
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
    ckpt_root = out_dir / "checkpoints"
    run_fingerprint = _run_fingerprint(base_dir, texts, probs_np, labels_np, label_names, cfg, seed)
    step, last_loss, epoch_losses, seconds_before = 0, float("nan"), [], 0.0
    resumed_from_step = None
    latest = _latest_complete_checkpoint(ckpt_root)
    if latest is not None:
        progress = json.loads((latest / "progress.json").read_text())
        if progress["run_fingerprint"] != run_fingerprint:
            raise ResumeMismatchError(
                f"{ckpt_root} holds checkpoints of a run with a different base model, data, labels, "
                "settings or seed; use a new out_dir, or delete that folder to start over."
            )
        safetensors.torch.load_model(model, latest / "model.safetensors", device=device)
        state = torch.load(latest / "training_state.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step, last_loss = progress["step"], progress["last_loss"]
        epoch_losses, seconds_before = progress["epoch_losses"], progress["train_seconds"]
        resumed_from_step = step
        log(f"resuming from {latest} (step {step}/{total_steps})")

    # -- train --------------------------------------------------------------------------------
    model.train()
    start_step, run_started = step, time.perf_counter()
    samples_run, checkpoint_seconds = 0, 0.0  # throughput leaves out disk time: it is a compute figure
    losses_since_log, order = [], None
    while step < stop_step:
        epoch, position = divmod(step, steps_per_epoch)
        if position == 0:
            epoch_losses = []
        if position == 0 or order is None:
            # The order of an epoch depends only on (seed, epoch), so a resumed run needs no
            # sampler state to see the same batches.
            order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(seed + epoch))
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
            alpha=cfg.alpha,
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
            log(f"step {step}/{total_steps} loss {mean_loss:.4f} {samples_per_s:.1f} samples/s eta {eta_s:.0f}s")
            losses_since_log = []
        # Checkpoint on schedule and where this invocation stops, so a run stopped by
        # max_steps (or finished) resumes exactly there.
        if step % cfg.checkpoint_every == 0 or step == stop_step:
            progress = {
                "step": step,
                "total_steps": total_steps,
                "run_fingerprint": run_fingerprint,
                "last_loss": last_loss,
                "epoch_losses": epoch_losses,
                "train_seconds": seconds_before + time.perf_counter() - run_started,
            }
            checkpoint_started = time.perf_counter()
            # A finite loss and gradient can still step the weights to inf (a huge learning
            # rate): such a checkpoint would be resumed from and fail on every retry.
            _check_finite_weights(model, step, cfg)
            _save_checkpoint(ckpt_root, step, model, optimizer, scheduler, progress)
            checkpoint_seconds += time.perf_counter() - checkpoint_started

    # -- the final model ----------------------------------------------------------------------
    run_seconds = time.perf_counter() - run_started
    steps_run = step - start_step
    model_dir = out_dir / "model"
    _save_model_atomically(model, tokenizer, model_dir)
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
    )


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
        raise ValueError(f"hard_labels must be {n} integer class indices, got shape {labels.shape} {labels.dtype}.")
    if labels.min() < 0 or labels.max() >= len(label_names):
        raise ValueError(f"hard_labels must lie in 0..{len(label_names) - 1} (indices into label_names).")
    for name in ("batch_size", "max_length", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"training.{name}={getattr(cfg, name)} must be at least 1.")
    if not cfg.epochs > 0 or not cfg.learning_rate > 0:
        raise ValueError("training.epochs and training.learning_rate must be positive.")
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
            raise NonFiniteLossError(_non_finite_message(f"weight {name}", step, float("nan"), cfg)
                                     .replace(" is nan at", " is not finite after"))


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
        ("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"],
         np_state["cached_gaussian"])
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
    stale_tmp = list(ckpt_root.glob(".tmp-step-*"))  # left by killed runs; ours was renamed
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
