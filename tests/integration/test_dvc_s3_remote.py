"""The production DVC remote: an S3-compatible object store (MinIO in docker-compose).

A real S3 HTTP server (moto's, on 127.0.0.1) stands in for MinIO; DVC (dvc-s3) pushes to it and
pulls back from it with the same AWS_* environment docker-compose sets, and the storage meter
measures the bytes kept there.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from ml.data.ingest import read_batch
from ml.data.versioning import DatasetStore
from ml.pipeline.cost_report import stored_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "test-key",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        client = boto3.client("s3")
        client.create_bucket(Bucket="dvc")
        yield client
    server.stop()


def keys(s3, prefix: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket="dvc", Prefix=prefix).get("Contents", [])]


def test_an_accepted_batch_is_pushed_to_the_s3_remote_and_pulls_back_byte_for_byte(s3, tmp_path):
    drop = tmp_path / "drop.csv"
    pd.DataFrame({"text": ["my parcel is late", "refund please"], "label": ["shipping", "billing"]}).to_csv(
        drop, index=False
    )
    store = DatasetStore(tmp_path / "data" / "tickets", "s3://dvc/datasets/tickets")
    record = store.accept(read_batch(drop))

    version = record["version"]
    assert keys(s3, "datasets/tickets/") == [f"datasets/tickets/files/md5/{version[:2]}/{version[2:]}"]
    original = store.path("train").read_bytes()

    # A fresh machine: no local copy, no cache. The version is restored from the object store alone.
    store.path("train").unlink()
    shutil.rmtree(store.root / ".dvc" / "cache")
    from dvc.repo import Repo

    Repo(str(store.root)).pull()
    assert store.path("train").read_bytes() == original


def test_the_storage_meter_measures_what_the_s3_remote_keeps(s3, tmp_path):
    store = DatasetStore(tmp_path / "data" / "metered", "s3://dvc/datasets/metered")
    drop = tmp_path / "drop.csv"
    pd.DataFrame({"text": ["cannot log in", "reset my password"], "label": ["login", "login"]}).to_csv(
        drop, index=False
    )
    store.accept(read_batch(drop))
    sizes = [o["Size"] for o in s3.list_objects_v2(Bucket="dvc", Prefix="datasets/metered/")["Contents"]]
    assert stored_bytes("s3://dvc/datasets/metered") == sum(sizes) > 0
    assert stored_bytes("s3://dvc/datasets/nothing-here") is None
    assert stored_bytes("gs://elsewhere/data") is None  # not metered here: booked by hand


def test_local_locations_are_measured_and_missing_ones_skipped(tmp_path):
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "a.bin").write_bytes(b"x" * 1234)
    assert stored_bytes(str(tmp_path / "kept")) == 1234
    assert stored_bytes(str(tmp_path / "absent")) is None


def test_mlops_data_checkout_restores_a_version_from_the_s3_remote_alone(s3, tmp_path):
    """`DatasetStore.checkout` (`mlops data checkout`) with the data folder gone: the md5s of a
    model's tags and the S3 remote are all it needs."""
    remote = "s3://dvc/checkout/tickets"
    store = DatasetStore(tmp_path / "data" / "tickets", remote)
    rows = {
        "train": [("my parcel is late", "shipping"), ("refund please", "billing")],
        "eval": [("where is my parcel", "shipping"), ("charged twice", "billing")],
    }
    kept = {}
    for role, pairs in rows.items():
        drop = tmp_path / f"{role}.csv"
        pd.DataFrame(pairs, columns=["text", "label"]).to_csv(drop, index=False)
        version = store.accept(read_batch(drop), role=role)["version"]
        kept[role] = (version, store.path(role).read_bytes())
    shutil.rmtree(store.root)
    gone = DatasetStore(tmp_path / "elsewhere" / "tickets", remote)
    result = gone.checkout(kept["train"][0], tmp_path / "out", eval_version=kept["eval"][0])
    assert result["files"]["train"]["path"] == str(tmp_path / "out" / "train.parquet")
    for role, (_, data) in kept.items():
        assert (tmp_path / "out" / f"{role}.parquet").read_bytes() == data
