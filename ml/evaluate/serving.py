"""Inference and serving figures for a saved model directory, measured in one process.

The same `predict_probs` scores the evaluation set and times the serving path, so the
latency the gate checks is the latency of the model that was scored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def load_classifier(model_dir: Path, device: str = "cpu"):
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return model.to(device).eval(), tokenizer


@torch.inference_mode()
def predict_probs(model, tokenizer, texts: Sequence[str], *, max_length: int = 64,
                  batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(list(texts[start:start + batch_size]), truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt").to(device)
        out.append(torch.softmax(model(**batch).logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels))


def dir_size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def measure_serving(model, tokenizer, texts: Sequence[str], *, max_length: int = 64, device: str = "cpu",
                    n_single: int = 200, n_batches: int = 5, batch_size: int = 32) -> dict:
    """p50/p95/p99 latency at batch 1 and throughput at batch 32, after a warm-up."""
    texts = list(texts) or ["warm-up text"]
    predict_probs(model, tokenizer, texts[:batch_size], max_length=max_length, device=device)  # warm-up
    latencies_ms = []
    for i in range(n_single):
        t0 = time.perf_counter()
        predict_probs(model, tokenizer, [texts[i % len(texts)]], max_length=max_length, device=device)
        latencies_ms.append((time.perf_counter() - t0) * 1000)
    batch = [texts[i % len(texts)] for i in range(batch_size)]
    t0 = time.perf_counter()
    for _ in range(n_batches):
        predict_probs(model, tokenizer, batch, max_length=max_length, batch_size=batch_size, device=device)
    elapsed_s = time.perf_counter() - t0
    p50, p95, p99 = np.percentile(latencies_ms, [50, 95, 99])
    return {
        "latency_p50_ms": float(p50),
        "latency_p95_ms": float(p95),
        "latency_p99_ms": float(p99),
        "throughput_calls_per_s": float(n_batches * batch_size / elapsed_s),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }


def quantize_int8(model):
    """Dynamic int8 quantization of the Linear layers (CPU serving); the caller measures its accuracy cost."""
    import copy

    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu(), {torch.nn.Linear}, dtype=torch.qint8)


def state_dict_bytes(model) -> int:
    """Serialized size of a model's weights (what an int8 export would put on disk)."""
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes
