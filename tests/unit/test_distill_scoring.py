"""The distill DAG's scoring step on a tiny classifier: the fp32 figures and both serving exports,
each with its accuracy cost measured on the same examples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ml.config import load_settings
from ml.evaluate.serving import candidate_variants, choose_served_variant
from ml.pipeline.distill import _score
from ml.train.student import build_student
from ml.workflows import load_workflows

LABELS = ["billing", "login", "shipping"]
TEXTS = [
    f"{w} problem, ticket {i}"
    for i, w in enumerate(["refund", "password", "parcel", "invoice", "account"] * 4)
]
Y = [i % 3 for i in range(len(TEXTS))]


@pytest.fixture(scope="module")
def scored(tiny_base_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    torch.manual_seed(0)
    model, tokenizer = build_student(tiny_base_model, LABELS)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    settings = load_settings(
        {"MLOPS_STATE_DIR": str(root / "state"), "MLOPS_DEVICE": "cpu", "MLOPS_TORCH_THREADS": "1"}
    )
    wf = next(iter(load_workflows(settings.workflows_file).values()))
    threads = torch.get_num_threads()
    try:
        return _score(settings, wf, root / "model", TEXTS, Y, LABELS, export_dir=root / "export"), root
    finally:
        torch.set_num_threads(threads)


def test_onnx_export_is_scored_next_to_the_torch_model(scored):
    report, root = scored
    onnx = report["onnx"]
    assert (root / "export" / "model.onnx").stat().st_size == onnx["file_bytes"] > 0
    assert onnx["argmax_agreement"] == 1.0 and onnx["max_abs_prob_diff"] < 1e-4
    assert onnx["macro_f1_cost"] == pytest.approx(0.0, abs=1e-9)
    assert onnx["macro_f1"] == pytest.approx(report["macro_f1"])
    assert 0 < onnx["latency_p50_ms"] <= onnx["latency_p99_ms"] and onnx["throughput_calls_per_s"] > 0
    assert "onnx_error" not in report


def test_onnx_int8_is_scored_too(scored):
    report, root = scored
    int8 = report["onnx_int8"]
    assert (
        (root / "export" / "model.int8.onnx").stat().st_size
        == int8["file_bytes"]
        < report["onnx"]["file_bytes"]
    )
    assert int8["macro_f1_cost"] == pytest.approx(report["macro_f1"] - int8["macro_f1"])
    assert 0 < int8["max_abs_prob_diff"] < 0.05  # another graph, close to the fp32 one


def test_int8_figures_and_all_export_metrics_are_numbers(scored):
    report, _ = scored
    int8 = report["int8"]
    assert int8["macro_f1_cost"] == pytest.approx(report["macro_f1"] - int8["macro_f1"])
    assert int8["weights_bytes"] < int8["fp32_weights_bytes"]
    # evaluate_and_gate logs every value of these blocks as an MLflow metric: each must be a finite number.
    for block in ("int8", "onnx", "onnx_int8"):
        numbers = {k: v for k, v in report[block].items() if k != "per_class_f1"}
        assert all(isinstance(v, (int, float)) and np.isfinite(v) for v in numbers.values()), block
    assert set(report["onnx_int8"]["per_class_f1"]) == set(
        LABELS
    )  # the gate judges a served ONNX variant on it


def variants(**figures):
    return {name: {"macro_f1_cost": cost, "latency_p99_ms": p99} for name, (cost, p99) in figures.items()}


# (variants: name -> (macro-F1 cost vs torch fp32, gate p99 ms), max_quality_cost, the one served)
CHOICES = {
    "int8 fastest and within tolerance": (
        variants(torch_fp32=(0, 3.0), onnx_fp32=(0, 1.6), onnx_int8=(0.0037, 0.8)),
        0.005,
        "onnx_int8",
    ),
    "int8 costs too much quality": (
        variants(torch_fp32=(0, 3.0), onnx_fp32=(0, 1.6), onnx_int8=(0.02, 0.8)),
        0.005,
        "onnx_fp32",
    ),
    "exactly at the tolerance": (variants(torch_fp32=(0, 3.0), onnx_int8=(0.005, 0.8)), 0.005, "onnx_int8"),
    "a variant that scores better costs nothing": (
        variants(torch_fp32=(0, 3.0), onnx_int8=(-0.01, 0.8)),
        0.0,
        "onnx_int8",
    ),
    "an unmeasured variant is never chosen": (
        variants(torch_fp32=(0, 3.0), onnx_int8=(0.0, float("nan"))),
        0.005,
        "torch_fp32",
    ),
    "torch is fastest": (variants(torch_fp32=(0, 1.0), onnx_fp32=(0, 1.6)), 0.005, "torch_fp32"),
}


@pytest.mark.parametrize("figures, tolerance, served", CHOICES.values(), ids=CHOICES.keys())
def test_the_fastest_variant_within_the_quality_cost_is_served(figures, tolerance, served):
    assert choose_served_variant(figures, tolerance) == served


def test_no_usable_variant_is_an_error_naming_the_figures():
    with pytest.raises(ValueError, match="no serving variant"):
        choose_served_variant(variants(onnx_int8=(0.5, 1.0)), 0.005)


@pytest.mark.parametrize(
    "declared, device, expected",
    [
        (("auto",), "cpu", ["torch_fp32", "onnx_fp32", "onnx_int8"]),
        (("auto",), "cuda", ["torch_fp32", "onnx_fp32", "onnx_int8", "torch_bf16"]),
        (("onnx_int8", "torch_fp32"), "cpu", ["onnx_int8", "torch_fp32"]),
    ],
)
def test_candidate_variants(declared, device, expected):
    assert candidate_variants(declared, device) == expected


def test_the_served_variant_and_its_figures_become_version_tags_and_description():
    from ml.pipeline.distill import _served_description, _served_tags

    method = "separate process, 1 thread pinned to 1 CPU, batch 1; best round's p99"
    candidates = {
        "torch_fp32": {"macro_f1_cost": 0.0, "latency_p99_ms": 3.1},
        "onnx_int8": {"macro_f1_cost": 0.0037, "latency_p99_ms": 0.9},
    }
    served = {
        "variant": "onnx_int8",
        "macro_f1": 0.8123,
        "macro_f1_cost": 0.0037,
        "latency_p50_ms": 0.76,
        "latency_p99_ms": 0.9,
        "method": method,
    }
    evaluation = {"variants": candidates, "max_quality_cost": 0.005}
    tags = _served_tags(served, evaluation)
    assert tags["served_variant"] == "onnx_int8" and tags["latency_method"] == method
    assert (tags["served_latency_p50_ms"], tags["served_macro_f1_cost"]) == ("0.76", "0.0037")
    assert json.loads(tags["serving_candidates"])["torch_fp32"] == {
        "macro_f1_cost": 0.0,
        "latency_p99_ms": 3.1,
    }
    description = _served_description(served, evaluation)
    assert description.startswith("Serves onnx_int8: macro-F1 0.8123 (-0.0037 vs torch fp32, allowed 0.005)")
    assert "p99 0.90 ms" in description and method in description and "torch_fp32 p99 3.10 ms" in description
