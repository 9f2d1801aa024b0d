"""The DVC-versioned dataset of a workflow, with a real DVC repository and a local remote."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from ml.data import contract
from ml.data.ingest import read_batch
from ml.data.versioning import DatasetError, DatasetStore


def batch_file(path: Path, texts: list[str], labels: list[str] | None = None) -> Path:
    labels = labels or ["billing"] * len(texts)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path


@pytest.fixture
def store(tmp_path) -> DatasetStore:
    return DatasetStore(tmp_path / "data" / "tickets", str(tmp_path / "remote"))


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    drop = tmp_path / "drop"
    drop.mkdir()
    return {
        "train1": batch_file(
            drop / "train1.csv", ["my parcel is late", "refund please"], ["shipping", "billing"]
        ),
        "train2": batch_file(drop / "train2.csv", ["refund please", "cannot log in"], ["billing", "login"]),
        "gold": batch_file(
            drop / "gold.csv", ["where is my parcel", "reset my password"], ["shipping", "login"]
        ),
        "gold2": batch_file(drop / "gold2.csv", ["another gold row", "and one more"]),
    }


def dvc_md5(store: DatasetStore, role: str) -> str:
    return yaml.safe_load(store.path(role).with_suffix(".parquet.dvc").read_text())["outs"][0]["md5"]


def remote_object(remote: Path, md5: str) -> Path:
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def test_load_before_any_data_says_how_to_add_some(store):
    assert store.versions() == [] and store.current() is None
    with pytest.raises(DatasetError, match=r"no accepted train data yet.*mlops data import PATH`"):
        store.load("train")
    with pytest.raises(DatasetError, match=r"no accepted eval data yet.*--as eval"):
        store.load("eval")


def test_accept_train_then_eval_versions_pushes_and_records_both(tmp_path, store, files):
    train = store.accept(read_batch(files["train1"]))
    evaluation = store.accept(read_batch(files["gold"]), role="eval")

    for record, role in ((train, "train"), (evaluation, "eval")):
        assert record["role"] == role and record["rows"] == 2
        assert record["version"] == dvc_md5(store, role)  # the version is DVC's content hash
        assert remote_object(tmp_path / "remote", record["version"]).is_file()  # pushed
    assert train["batch"] == "train1.csv" and train["batch_sha256"] == read_batch(files["train1"]).sha256
    assert store.versions() == [train, evaluation]
    assert store.versions("eval") == [evaluation] and store.current("train") == train

    loaded = store.load("train")
    assert list(loaded.columns) == list(contract.COLUMNS)
    assert loaded[contract.TEXT].tolist() == ["my parcel is late", "refund please"]
    assert store.load("eval")[contract.LABEL].tolist() == ["shipping", "login"]


def test_batches_merge_without_duplicates_and_versions_stay_in_order(tmp_path, store, files):
    first = store.accept(read_batch(files["train1"]))
    second = store.accept(read_batch(files["train2"]))
    assert second["rows"] == 3 and second["batch_rows"] == 2  # "refund please / billing" was there already
    assert second["version"] != first["version"] == store.versions("train")[0]["version"]
    assert [v["batch"] for v in store.versions()] == ["train1.csv", "train2.csv"]
    assert store.current("train")["version"] == second["version"] == dvc_md5(store, "train")
    assert store.load("train")[contract.TEXT].tolist() == [
        "my parcel is late",
        "refund please",
        "cannot log in",
    ]
    for record in (first, second):  # every version stays retrievable from the remote
        assert remote_object(tmp_path / "remote", record["version"]).is_file()


def test_the_same_batch_twice_is_accepted_once(tmp_path, store, files):
    first = store.accept(read_batch(files["train1"]))
    copy = batch_file(
        tmp_path / "renamed_copy.csv", ["my parcel is late", "refund please"], ["shipping", "billing"]
    )
    for again in (read_batch(files["train1"]), read_batch(copy)):  # same bytes under another name too
        record = store.accept(again)
        assert record["already_accepted"] is True and record["version"] == first["version"]
    assert len(store.versions()) == 1
    # ... whatever role it is offered as: the bytes were accepted as training data
    assert store.accept(read_batch(files["train1"]), role="eval")["role"] == "train"
    assert store.current("eval") is None


def test_the_evaluation_set_is_frozen(store, files):
    frozen = store.accept(read_batch(files["gold"]), role="eval")
    with pytest.raises(
        DatasetError, match=f"evaluation set is frozen \\(version {frozen['version'][:12]}\\)"
    ):
        store.accept(read_batch(files["gold2"]), role="eval")
    assert store.versions() == [frozen]
    assert store.load("eval")[contract.TEXT].tolist() == ["where is my parcel", "reset my password"]
    assert store.accept(read_batch(files["gold"]), role="eval")["already_accepted"]  # a retry is not an error


def test_an_unknown_role_is_refused(store, files):
    with pytest.raises(DatasetError, match="role 'test' is not one of"):
        store.accept(read_batch(files["train1"]), role="test")
    assert store.versions() == []


def test_extra_record_fields_are_kept(store, files):
    record = store.accept(read_batch(files["train1"]), extra={"dag_run": "manual__1"})
    assert store.current()["dag_run"] == "manual__1" == record["dag_run"]
