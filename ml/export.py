"""Serving exports of a trained classifier: ONNX (run by onnxruntime) and dynamic int8 (torch).

Each export changes the numbers a little, so its accuracy cost is measured, never assumed:
the caller scores the export on the same frozen evaluation set as the fp32 model (see
ml/pipeline/distill.py `_score` and benchmarks/distill_vs_finetune.py).

- ONNX: the fp32 graph with dynamic batch and sequence axes, written by torch's dynamo
  exporter and run by onnxruntime on the CPU. A scoring host then needs neither torch nor
  transformers' modelling code, only onnxruntime and the tokenizer.
- int8: dynamic quantization of the Linear layers / MatMuls (weights int8, activations
  quantized per call), either of the torch model (torch.ao) or of the ONNX graph
  (onnxruntime.quantization). CPU only. The ONNX one serves fastest at batch 1, because
  onnxruntime has none of eager PyTorch's per-module Python overhead
  (benchmarks/distill_vs_finetune.py measures all four side by side).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what BERT-family tokenizers give
ONNX_OPSET = 18  # the dynamo exporter's own default; onnxruntime >= 1.16 runs it


class ExportError(RuntimeError):
    """The model could not be exported, or the export does not compute what the model computes."""


def export_onnx(model: torch.nn.Module, tokenizer, path: Path) -> Path:
    """Write `model` as an ONNX file at `path` (atomically: a reader never sees half a file).

    The model is copied to the CPU in fp32 eval mode first, so a model in use on a GPU is
    left as it was. Batch and sequence length are dynamic; one file serves any batch.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).cpu().float().eval()
    # Two rows of different length, so the exporter sees padding and a batch > 1 (torch.export
    # would otherwise specialise a size-1 axis to a constant).
    sample = tokenizer(["a sample support ticket for the export", "hi"], padding=True, return_tensors="pt")
    inputs = {name: sample[name] for name in ONNX_INPUTS if name in sample}
    if "input_ids" not in inputs:
        raise ExportError(
            f"the tokenizer gives {sorted(sample)}; ONNX export needs input_ids (a BERT-style "
            "tokenizer). Serve this model with torch instead."
        )
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim(
        "sequence", max=int(getattr(cpu_model.config, "max_position_embeddings", 512))
    )
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        with _quiet_exporter():
            torch.onnx.export(
                cpu_model,
                (),
                str(tmp),
                kwargs=inputs,
                input_names=list(inputs),
                output_names=["logits"],
                dynamic_shapes={n: {0: batch, 1: sequence} for n in inputs},
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(
            f"ONNX export of {type(model).__name__} failed: {str(exc).splitlines()[0][:300]}; "
            "serve the model with torch, or report the model type."
        ) from exc
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def _quiet_exporter():
    # The exporter prints progress lines and warns about renamed dynamic axes; in a task log
    # that is noise around the figures that matter. Errors still raise.
    # onnxscript's optimizer and onnx_ir log each pass at INFO ("Skipping constant folding ...").
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class OnnxClassifier:
    """An exported classifier under onnxruntime (CPU), with the tokenizer it was trained with."""

    def __init__(self, path: Path, tokenizer, *, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        # By default onnxruntime's idle threads spin for a while after each call, burning the
        # cores that torch, the tokenizer or a neighbour process needs next (on 2 cores it
        # doubled the latency of the torch model timed after it). Serving code sleeps instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer = tokenizer

    def logits(self, texts: Sequence[str], *, max_length: int = 64, batch_size: int = 64) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            batch = self.tokenizer(
                list(texts[start : start + batch_size]),
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="np",
            )
            feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.input_names}
            out.append(self.session.run(["logits"], feed)[0].astype(np.float32))
        return (
            np.concatenate(out) if out else np.zeros((0, self.session.get_outputs()[0].shape[-1]), np.float32)
        )

    def predict_probs(
        self, texts: Sequence[str], *, max_length: int = 64, batch_size: int = 64
    ) -> np.ndarray:
        logits = self.logits(texts, max_length=max_length, batch_size=batch_size).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)  # softmax without overflow
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def n_parameters(self) -> int:
        """Numbers stored as graph initializers: the weights, less a few the exporter folded into constants."""
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        return int(sum(np.prod(t.dims, dtype=np.int64) for t in graph.initializer))


class _QuietQuantizer(logging.Filter):
    # onnxruntime's quantizer logs on the root logger with logging.info: a line per tensor
    # ("Quantization parameters for tensor ... not specified", "Ignore MatMul due to non constant
    # B") and a hint to run pre-processing (its shape inference adds nothing for a BERT encoder).
    # Hundreds of lines in a task log around the figures that matter; its warnings still show.
    def filter(self, record: logging.LogRecord) -> bool:
        if "/onnxruntime/" not in record.pathname.replace("\\", "/"):
            return True
        return (
            record.levelno >= logging.WARNING
            and "pre-processing before quantization" not in record.getMessage()
        )


def quantize_onnx_int8(onnx_path: Path, out_path: Path) -> Path:
    """Dynamic int8 quantization of an exported ONNX graph (onnxruntime.quantization), written atomically."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out_path = Path(out_path)
    tmp = out_path.with_name(f".tmp-{out_path.name}-{os.getpid()}")
    quiet, root, named = _QuietQuantizer(), logging.getLogger(), logging.getLogger("onnxruntime")
    level = named.level
    root.addFilter(quiet)
    named.setLevel(logging.WARNING)
    try:
        quantize_dynamic(str(onnx_path), str(tmp), weight_type=QuantType.QInt8)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(
            f"int8 quantization of {onnx_path} failed: {str(exc).splitlines()[0][:300]}; "
            "serve the fp32 ONNX file or the torch int8 model instead."
        ) from exc
    finally:
        root.removeFilter(quiet)
        named.setLevel(level)
    os.replace(tmp, out_path)
    return out_path


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantization of the Linear layers, on a CPU copy (the model itself is left alone)."""
    with warnings.catch_warnings():
        # torch 2.13 announces that torch.ao's quantized tensors will move to torchao; they
        # still work, and torchao is not a dependency of this platform (yet).
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).cpu().float().eval(), {torch.nn.Linear}, dtype=torch.qint8
        )


def state_dict_bytes(model: torch.nn.Module) -> int:
    """Serialized size of a model's weights (what an int8 export would put on disk)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


# The served artifact: what the registry holds for a version is the variant the gate judged.

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".ckpt")


def _requirements(variant: str) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["mlflow", "pandas", "numpy"] + (
        ["onnxruntime", "tokenizers"] if variant.startswith("onnx") else ["torch", "transformers"]
    )
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned


def log_served_model(
    variant: str, model_dir: Path, artifact: Path, *, max_length: int, name: str = "model", step: int = 0
):
    """Log `variant` of a trained classifier as the MLflow pyfunc model (ml/serving_model.py) in the active run.

    `step` is the training step that produced the model. MLflow copies the run's metrics logged at
    that step onto the LoggedModel without their dataset; at step 0 that copied every eval.* and
    train.* scalar, a second time beside the eval.* figures distill links to the evaluation set.

    torch variants carry the safetensors model folder; ONNX variants carry the graph and the
    tokenizer files only (the scoring host then needs onnxruntime and `tokenizers`, not torch),
    and the run keeps the safetensors weights under `weights/` for lineage and re-scoring
    (ml.registry.download_weights finds them there). Returns MLflow's ModelInfo.
    """
    import shutil
    import tempfile

    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from ml.serving_model import ONNX_VARIANTS

    model_dir = Path(model_dir)
    example = pd.DataFrame({"text": ["my card was charged twice for the same order"]})
    signature = infer_signature(example, pd.DataFrame({"label": ["x"], "score": [0.5], "probs": ["{}"]}))
    code = Path(__file__).resolve().parent / "serving_model.py"
    with tempfile.TemporaryDirectory(prefix="mlops-served-") as tmp:
        if variant in ONNX_VARIANTS:
            tokenizer_dir = Path(tmp) / "tokenizer"
            tokenizer_dir.mkdir()
            for path in model_dir.iterdir():
                if path.is_file() and not path.name.endswith(_WEIGHT_SUFFIXES):
                    shutil.copy2(path, tokenizer_dir / path.name)
            if not (tokenizer_dir / "tokenizer.json").exists():
                raise ExportError(
                    f"{model_dir} has no tokenizer.json (a fast tokenizer); the ONNX variant needs it. "
                    "Serve torch_fp32 (serving: {variants: [torch_fp32]})."
                )
            artifacts = {"onnx_model": str(artifact), "tokenizer_dir": str(tokenizer_dir)}
            mlflow.log_artifacts(str(model_dir), artifact_path="weights")
        else:
            artifacts = {"model_dir": str(model_dir)}
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            pip_requirements=_requirements(variant),
            model_config={"max_length": max_length, "variant": variant, "threads": 0},
            step=step,
        )


def log_served_extractor(
    variant: str, model_dir: Path, artifact: Path, *, max_length: int, name: str = "model", step: int = 0
):
    """Log a trained extraction tagger as the MLflow pyfunc of ml/serving_extractor.py in the active run.

    torch_fp32 only: the safetensors model folder and its tokenizer travel as `model_dir`.
    Returns MLflow's ModelInfo.
    """
    import json

    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from ml.tasks.extraction import stride_for

    if variant != "torch_fp32":
        raise ExportError(f"variant {variant!r}: an extraction model is served as torch_fp32 only.")
    example = pd.DataFrame({"text": ["This Agreement is made between Acme Inc. and Beta LLC."]})
    signature = infer_signature(example, pd.DataFrame({"fields": [json.dumps({})]}))
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(Path(__file__).resolve().parent / "serving_extractor.py"),
        artifacts={"model_dir": str(model_dir)},
        signature=signature,
        input_example=example,
        pip_requirements=_requirements(variant),
        model_config={
            "task": "extraction",
            "variant": variant,
            "max_length": max_length,
            "stride": stride_for(max_length),
            "threads": 0,
        },
        step=step,
    )
