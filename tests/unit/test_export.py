"""Serving exports: the ONNX file computes what the torch model computes; int8 leaves the model alone."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from ml.evaluate.serving import measure_latency
from ml.export import OnnxClassifier, export_onnx, quantize_int8, quantize_onnx_int8
from ml.train.student import build_student

LABELS = ["billing", "login", "shipping"]
TEXTS = [
    "I was charged twice for order 1234567, please refund me.",
    "reset password",
    "Where is my parcel? The tracking page has said 'in transit' since Monday and nobody answers.",
    "x",
]


@pytest.fixture(scope="module")
def classifier(tiny_base_model):
    torch.manual_seed(0)
    model, tokenizer = build_student(tiny_base_model, LABELS)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def exported(classifier, tmp_path_factory):
    model, tokenizer = classifier
    path = export_onnx(model, tokenizer, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return OnnxClassifier(path, tokenizer, threads=1)


def torch_logits(model, tokenizer, texts, max_length=64):
    with torch.no_grad():
        batch = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        return model(**batch).logits.numpy()


@pytest.mark.parametrize(
    "texts", [TEXTS[:1], TEXTS[3:], TEXTS], ids=["batch 1", "one token", "mixed lengths"]
)
def test_onnxruntime_logits_match_torch(classifier, exported, texts):
    model, tokenizer = classifier
    expected = torch_logits(model, tokenizer, texts)
    got = exported.logits(texts)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # A different batch size and a truncation length other than the export sample's.
    np.testing.assert_allclose(
        exported.logits(texts, max_length=8, batch_size=1),
        torch_logits(model, tokenizer, texts, max_length=8),
        rtol=1e-4,
        atol=1e-4,
    )


def test_onnx_probabilities_and_parameter_count(classifier, exported):
    model, _ = classifier
    probs = exported.predict_probs(TEXTS)
    assert probs.shape == (len(TEXTS), len(LABELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    # The weights are in the file; the exporter folds a few small ones (LayerNorm, biases) into constants.
    n_torch = sum(p.numel() for p in model.parameters())
    assert abs(exported.n_parameters() - n_torch) <= 0.01 * n_torch


def test_export_writes_atomically_and_replaces_an_old_file(classifier, tmp_path):
    model, tokenizer = classifier
    path = tmp_path / "model.onnx"
    path.write_bytes(b"an older, broken export")
    export_onnx(model, tokenizer, path)
    assert path.read_bytes()[:2] != b"an"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp file left


def test_int8_quantizes_a_copy(classifier):
    model, tokenizer = classifier
    before = model.classifier.weight.detach().clone()
    quantized = quantize_int8(model)
    assert isinstance(model.classifier, torch.nn.Linear) and torch.equal(model.classifier.weight, before)
    assert not isinstance(quantized.classifier, torch.nn.Linear)  # replaced by the dynamic int8 Linear
    with torch.no_grad():
        q_logits = quantized(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.numpy()
    assert np.isfinite(q_logits).all() and q_logits.shape == (len(TEXTS), len(LABELS))


def test_measure_latency_reports_percentiles_in_order():
    calls = []
    figures = measure_latency(
        lambda batch: calls.append(len(batch)), ["a", "b", "c"], n_single=20, n_batches=2
    )
    assert figures["latency_p50_ms"] <= figures["latency_p95_ms"] <= figures["latency_p99_ms"]
    assert figures["throughput_calls_per_s"] > 0
    assert calls == [3] + [1] * 20 + [32, 32]  # warm-up, batch-1 calls, batch-32 calls


def test_onnx_int8_is_smaller_and_close_to_the_fp32_graph(classifier, exported, tmp_path, caplog):
    _, tokenizer = classifier
    with caplog.at_level(logging.DEBUG):
        logging.getLogger().info("a line of the caller's own")
        path = quantize_onnx_int8(exported.path, tmp_path / "model.int8.onnx")
    # The quantizer's per-tensor info lines stay out of task logs; the caller's own lines do not.
    assert [r.getMessage() for r in caplog.records if r.levelno < logging.WARNING] == [
        "a line of the caller's own"
    ]
    assert logging.getLogger().filters == [] and logging.getLogger("onnxruntime").level == logging.NOTSET
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]
    assert path.stat().st_size < 0.5 * exported.path.stat().st_size  # int8 weights, the embeddings' too
    int8 = OnnxClassifier(path, tokenizer, threads=1)
    fp32_logits, int8_logits = exported.logits(TEXTS), int8.logits(TEXTS)
    assert not np.array_equal(int8_logits, fp32_logits)  # it really is another graph
    np.testing.assert_allclose(int8_logits, fp32_logits, atol=0.05)
