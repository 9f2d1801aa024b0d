"""A registered MLflow model as the student's base, on a real SQLite registry in tmp_path.

The version is logged the way the platform registers students (ml/serving_model.py as a
models-from-code pyfunc, the save_pretrained() folder as its `model_dir` artifact).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from safetensors.torch import load_file

from ml.train.loop import train_student
from ml.train.student import build_student, resolve_base_model
from ml.workflows import Training

LABELS = ["billing", "login", "shipping"]
SERVING_MODEL = Path(__file__).resolve().parents[2] / "ml" / "serving_model.py"


@pytest.fixture(scope="module")
def registry(tiny_base_model, tmp_path_factory):
    """A SQLite registry holding `ticket_base` v1 (@champion): a tiny classifier on LABELS."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    torch.manual_seed(3)
    model, tokenizer = build_student(tiny_base_model, LABELS)
    folder = root / "classifier"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    experiment = mlflow.create_experiment("bases", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVING_MODEL),
            artifacts={"model_dir": str(folder)},
            registered_model_name="ticket_base",
            pip_requirements=[],
        )
    MlflowClient().set_registered_model_alias("ticket_base", "champion", "1")
    yield {"folder": folder, "root": root}
    mlflow.set_tracking_uri(before[0])  # process-wide: leave them as other modules found them
    mlflow.set_registry_uri(before[1])


@pytest.mark.parametrize("spec", ["models:/ticket_base@champion", "models:/ticket_base/1"])
def test_a_registered_version_resolves_to_its_hugging_face_folder(registry, tmp_path, spec):
    path = resolve_base_model(spec, cache_dir=tmp_path)
    assert path.is_relative_to(tmp_path) and (path / "config.json").is_file()
    expected = load_file(registry["folder"] / "model.safetensors")
    got = load_file(path / "model.safetensors")
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)

    # Downloaded once per version: a second resolve reuses the folder.
    marker = tmp_path / "ticket_base" / "1" / ".complete"
    stamp = marker.stat().st_mtime_ns
    assert resolve_base_model(spec, cache_dir=tmp_path) == path
    assert marker.stat().st_mtime_ns == stamp


def test_a_half_downloaded_version_is_fetched_again(registry, tmp_path):
    leftover = tmp_path / "ticket_base" / "1"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{}")  # no .complete: a download that was killed
    path = resolve_base_model("models:/ticket_base/1", cache_dir=tmp_path)
    assert (tmp_path / "ticket_base" / "1" / ".complete").is_file()
    assert (path / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("models:/ticket_base@nobody", FileNotFoundError, "no such model version or alias.*set the alias"),
        ("models:/ticket_base/9", FileNotFoundError, "no such model version or alias"),
        ("models:/no_such_model/1", FileNotFoundError, "register the model"),
        ("models:/ticket_base", ValueError, r"write models:/NAME@ALIAS"),
        ("models:/a/b/c", ValueError, r"or models:/NAME/VERSION"),
    ],
)
def test_bad_registered_specs_name_the_fix(registry, tmp_path, spec, error, message):
    with pytest.raises(error, match=message):
        resolve_base_model(spec, cache_dir=tmp_path)


def test_the_student_trains_from_a_registered_base(registry, tmp_path):
    base = resolve_base_model("models:/ticket_base@champion", cache_dir=tmp_path / "cache")
    texts = [f"{w} problem {i}" for i, w in enumerate(["refund", "password", "parcel"] * 8)]
    hard = np.array([i % 3 for i in range(len(texts))])
    result = train_student(
        base_dir=base,
        texts=texts,
        teacher_probs=np.eye(3)[hard],
        hard_labels=hard,
        label_names=LABELS,
        cfg=Training(max_epochs=1, batch_size=8, max_length=16, learning_rate=1e-3),
        out_dir=tmp_path / "run",
        device="cpu",
        seed=1,
        threads=1,
        log=lambda m: None,
    )
    assert result.steps == 3
    trained = load_file(result.model_dir / "model.safetensors")
    base_weights = load_file(base / "model.safetensors")
    layer = "bert.encoder.layer.0.attention.self.query.weight"
    assert trained[layer].shape == base_weights[layer].shape and not torch.equal(
        trained[layer], base_weights[layer]
    )


def test_a_registered_classifier_keeps_its_head_only_for_the_same_labels(registry, tmp_path):
    base = resolve_base_model("models:/ticket_base/1", cache_dir=tmp_path)
    trained_head = load_file(base / "model.safetensors")["classifier.weight"]
    torch.manual_seed(0)
    same, _ = build_student(base, LABELS)
    assert torch.equal(same.classifier.weight, trained_head)  # a warm start from the registered classifier

    torch.manual_seed(0)
    reordered, _ = build_student(
        base, ["login", "billing", "shipping"]
    )  # rows would map to the wrong classes
    assert not torch.equal(reordered.classifier.weight, trained_head)
    assert reordered.config.id2label == {0: "login", 1: "billing", 2: "shipping"}

    more, _ = build_student(base, [*LABELS, "spam"])  # another number of labels: a fresh, bigger head
    assert more.classifier.weight.shape == (4, trained_head.shape[1])
    torch.testing.assert_close(
        more.bert.encoder.layer[0].output.dense.weight, same.bert.encoder.layer[0].output.dense.weight
    )
