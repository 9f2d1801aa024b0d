"""The confusion matrix with counts and a row-normalised view, and the per-class table in MLflow."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from ml.evaluate import confusion
from ml.evaluate.metrics import classification_report, confusion_matrix, per_class_f1

LABELS = ["billing", "login", "shipping", "$5 fraud"]  # "$…$" would be read as mathtext
# 100 billing (3 misrouted to fraud), 20 login (1 to billing), 5 shipping (all right), no fraud at all.
CM = np.array([[97, 0, 0, 3], [1, 19, 0, 0], [0, 0, 5, 0], [0, 0, 0, 0]])


def test_row_normalised_rows_are_shares_of_the_true_class():
    shares = confusion.row_normalised(CM)
    assert shares[0].tolist() == pytest.approx([0.97, 0, 0, 0.03])
    assert shares[1].tolist() == pytest.approx([0.05, 0.95, 0, 0])
    assert shares[3].tolist() == [0, 0, 0, 0]  # no fraud examples: zeros, not NaN


def test_per_class_table_precision_recall_f1_and_counts():
    table = confusion.per_class_table(CM, LABELS)
    assert table["label"] == LABELS
    assert table["support"] == [100, 20, 5, 0] and table["predicted"] == [98, 19, 5, 3]
    assert table["correct"] == [97, 19, 5, 0]
    assert table["precision"] == pytest.approx([97 / 98, 1.0, 1.0, 0.0])
    assert table["recall"] == pytest.approx([0.97, 0.95, 1.0, 0.0])
    # F1 is the gate's own figure, and the harmonic mean of the two columns beside it.
    assert table["f1"] == pytest.approx(per_class_f1(CM).tolist(), abs=1e-6)
    p, r = table["precision"][0], table["recall"][0]
    assert table["f1"][0] == pytest.approx(2 * p * r / (p + r), abs=1e-6)
    with pytest.raises(ValueError, match="one row and column per label"):
        confusion.per_class_table(CM, LABELS[:3])


def test_the_table_matches_a_report_from_probabilities():
    y = [0, 0, 1, 2, 2, 2]
    probs = np.eye(3)[[0, 1, 1, 2, 2, 0]]
    report = classification_report(probs, y, ["a", "b", "c"])
    table = confusion.per_class_table(report["confusion_matrix"], ["a", "b", "c"])
    assert table["f1"] == pytest.approx(list(report["per_class_f1"].values()), abs=1e-6)
    assert np.array_equal(report["confusion_matrix"], confusion_matrix(y, probs.argmax(1), 3))


def test_png_and_table_land_in_the_mlflow_run(tmp_path):
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment(
            "confusion", artifact_location=(tmp_path / "artifacts").as_uri()
        )
        image = confusion.save_png(CM, LABELS, tmp_path / confusion.IMAGE_ARTIFACT)
        with mlflow.start_run(experiment_id=experiment) as run:
            confusion.log_to_mlflow(CM, LABELS, image)
        names = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        assert {"confusion_matrix.png", "eval"} <= names
        table = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{confusion.TABLE_ARTIFACT}")
        assert table["columns"] == ["label", "support", "predicted", "correct", "precision", "recall", "f1"]
        assert [row[0] for row in table["data"]] == LABELS and [row[1] for row in table["data"]] == [
            100,
            20,
            5,
            0,
        ]
        # The run says it holds a table, which is what the MLflow UI's evaluation view lists.
        assert confusion.TABLE_ARTIFACT in mlflow.get_run(run.info.run_id).data.tags.get(
            "mlflow.loggedArtifacts", ""
        )
    finally:
        mlflow.set_tracking_uri(before)
    from PIL import Image

    with Image.open(image) as png:
        width, height = png.size
    assert width > 1.8 * height  # two panels side by side
