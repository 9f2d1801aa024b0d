"""The served model as MLflow "models from code": this file is logged with every version.

MLflow loads it by running this file, not by unpickling an object; the weights are safetensors
(torch variants) or an ONNX graph (ONNX variants), the tokenizer its `tokenizer.json`. It imports
none of the platform, so a scoring host needs only what the variant needs:

- `onnx_fp32`, `onnx_int8`: onnxruntime, the `tokenizers` library and numpy; never torch nor
  transformers (the distill step registers one of these when it is the fastest within the
  workflow's `serving.max_quality_cost`).
- `torch_fp32`, `torch_bf16`: torch and transformers.

`model_config` names the variant (`variant`), `max_length` and `threads` (intra-op threads;
0: the runtime's default); `mlflow.pyfunc.load_model(uri, model_config={"threads": 1})`
overrides them at load. Input is a DataFrame with a `text` column; output one row per text
with the label, its probability and the full distribution (JSON). `predict` may be called from
several threads at once: an onnxruntime session and a configured `tokenizers.Tokenizer` are
safe to share; the torch path locks only its tokenizer.
"""

import json
import threading
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

ONNX_VARIANTS = ("onnx_fp32", "onnx_int8")


def read_labels(model_dir) -> list:
    """Label names in class order, from a Hugging Face config.json."""
    id2label = json.loads((Path(model_dir) / "config.json").read_text())["id2label"]
    return [id2label[str(i)] for i in range(len(id2label))]


class OnnxScorer:
    """An exported classifier under onnxruntime (CPU) with its fast tokenizer: no torch, no transformers."""

    def __init__(self, onnx_path, tokenizer_dir, *, max_length: int = 64, threads: int = 0):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # onnxruntime's idle threads spin after each call by default, burning the cores the
        # tokenizer, another request or a neighbour process needs next. Serving sleeps instead.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        tokenizer_dir = Path(tokenizer_dir)
        self.tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_length)
        pad = _pad_token(tokenizer_dir)
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id(pad), pad_token=pad)
        self.labels = read_labels(tokenizer_dir)

    def logits(self, texts: list) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feed = {name: np.asarray(columns[name], dtype=np.int64) for name in self.input_names}
        return self.session.run(["logits"], feed)[0].astype(np.float64)

    def probs(self, texts: list) -> np.ndarray:
        logits = self.logits(texts)
        logits -= logits.max(axis=1, keepdims=True)  # softmax without overflow
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)


def _pad_token(tokenizer_dir: Path) -> str:
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        path = tokenizer_dir / name
        if path.exists():
            pad = json.loads(path.read_text()).get("pad_token")
            if pad:
                return pad["content"] if isinstance(pad, dict) else str(pad)
    return "[PAD]"


class TorchScorer:
    """The Hugging Face classifier under torch (fp32, or bf16 on a GPU)."""

    def __init__(self, model_dir, *, max_length: int = 64, threads: int = 0, dtype: str = "float32"):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if threads > 0:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = "cuda" if dtype == "bfloat16" and torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
        self.model = model.to(device=self.device, dtype=getattr(torch, dtype)).eval()
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.max_length = max_length
        # A fast tokenizer called from two threads at once fails ("Already borrowed"); the model may be shared.
        self._tokenizer_lock = threading.Lock()

    def probs(self, texts: list) -> np.ndarray:
        with self._tokenizer_lock:
            batch = self.tokenizer(
                list(texts), truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
            )
        with self.torch.inference_mode():
            logits = self.model(**batch.to(self.device)).logits
            return self.torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)


class StudentClassifier(PythonModel):
    def load_context(self, context):
        config = dict(context.model_config or {})
        self.variant = config.get("variant", "torch_fp32")
        max_length, threads = int(config.get("max_length", 64)), int(config.get("threads", 0))
        if self.variant in ONNX_VARIANTS:
            self.scorer = OnnxScorer(
                context.artifacts["onnx_model"],
                context.artifacts["tokenizer_dir"],
                max_length=max_length,
                threads=threads,
            )
        else:
            self.scorer = TorchScorer(
                context.artifacts["model_dir"],
                max_length=max_length,
                threads=threads,
                dtype="bfloat16" if self.variant == "torch_bf16" else "float32",
            )
        self.labels = self.scorer.labels

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        texts = [str(t) for t in model_input["text"]]
        rows = []
        for start in range(0, len(texts), 64):
            for p in self.scorer.probs(texts[start : start + 64]):
                best = int(p.argmax())
                rows.append(
                    {
                        "label": self.labels[best],
                        "score": float(p[best]),
                        "probs": json.dumps({lab: round(float(v), 6) for lab, v in zip(self.labels, p)}),
                    }
                )
        return pd.DataFrame(rows, columns=["label", "score", "probs"])


mlflow.models.set_model(StudentClassifier())
