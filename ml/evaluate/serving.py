"""Inference figures for a saved model directory, and the choice of the variant that is served.

`predict_probs` scores the evaluation set; `measure_latency` gives in-process throughput (the
cost model's calls per second). The latency the gate judges is not taken here but by
ml/evaluate/latency.py (a separate process, robust to a busy host), for every candidate variant;
`choose_served_variant` then picks the fastest within the workflow's quality tolerance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ml.evaluate.latency import percentile_ms


def load_classifier(model_dir: Path, device: str = "cpu"):
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return model.to(device).eval(), tokenizer


@torch.inference_mode()
def predict_probs(
    model, tokenizer, texts: Sequence[str], *, max_length: int = 64, batch_size: int = 64, device: str = "cpu"
) -> np.ndarray:
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        ).to(device)
        out.append(torch.softmax(model(**batch).logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels))


def dir_size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def measure_latency(
    predict: Callable[[list[str]], object],
    texts: Sequence[str],
    *,
    n_single: int = 200,
    n_batches: int = 5,
    batch_size: int = 32,
) -> dict:
    """p50/p95/p99 latency at batch 1 and throughput at batch 32 of any `predict(texts)`, after a warm-up.

    One function for torch, int8 and ONNX models, so their figures are measured the same way.
    """
    texts = list(texts) or ["warm-up text"]
    predict(texts[:batch_size])  # warm-up: first-call allocations and kernel selection
    latencies_ms = []
    for i in range(n_single):
        t0 = time.perf_counter()
        predict([texts[i % len(texts)]])
        latencies_ms.append((time.perf_counter() - t0) * 1000)
    batch = [texts[i % len(texts)] for i in range(batch_size)]
    t0 = time.perf_counter()
    for _ in range(n_batches):
        predict(batch)
    elapsed_s = time.perf_counter() - t0
    return {
        "latency_p50_ms": percentile_ms(latencies_ms, 0.50),
        "latency_p95_ms": percentile_ms(latencies_ms, 0.95),
        "latency_p99_ms": percentile_ms(latencies_ms, 0.99),
        "throughput_calls_per_s": float(n_batches * batch_size / elapsed_s),
    }


def measure_serving(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    max_length: int = 64,
    device: str = "cpu",
    n_single: int = 200,
    n_batches: int = 5,
    batch_size: int = 32,
) -> dict:
    """measure_latency of a torch classifier, plus its parameter count."""

    def predict(batch: list[str]):
        return predict_probs(
            model, tokenizer, batch, max_length=max_length, batch_size=len(batch), device=device
        )

    figures = measure_latency(predict, texts, n_single=n_single, n_batches=n_batches, batch_size=batch_size)
    figures["n_parameters"] = int(sum(p.numel() for p in model.parameters()))
    return figures


def candidate_variants(declared: Sequence[str], device: str) -> list[str]:
    """The variants that compete to be served: `auto` is every one the device runs (bf16 only on CUDA)."""
    if tuple(declared) == ("auto",):
        return ["torch_fp32", "onnx_fp32", "onnx_int8"] + (["torch_bf16"] if device == "cuda" else [])
    return list(declared)


def choose_served_variant(variants: dict[str, dict], max_quality_cost: float) -> str:
    """The fastest variant (lowest gate p99) whose macro-F1 is within max_quality_cost of torch fp32.

    variants: {name: {"macro_f1_cost", "latency_p99_ms", ...}}; a variant without a finite
    figure cannot be chosen. torch fp32 (cost 0) is the fallback, so there is always an answer
    when it was scored. Ties go to the variant listed first.
    """

    def usable(figures: dict) -> bool:
        cost, p99 = figures.get("macro_f1_cost"), figures.get("latency_p99_ms")
        return (
            isinstance(cost, (int, float))
            and np.isfinite(cost)
            and cost <= max_quality_cost + 1e-12
            and isinstance(p99, (int, float))
            and np.isfinite(p99)
        )

    eligible = [name for name, figures in variants.items() if usable(figures)]
    if not eligible:
        raise ValueError(
            f"no serving variant has finite figures within a macro-F1 cost of {max_quality_cost}: "
            f"{ {n: (f.get('macro_f1_cost'), f.get('latency_p99_ms')) for n, f in variants.items()} }"
        )
    return min(eligible, key=lambda name: variants[name]["latency_p99_ms"])
