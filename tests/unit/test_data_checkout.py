"""`mlops data checkout VERSION --out DIR`: a dataset version's exact files back from the DVC remote
(a real DVC repository and a local remote), after the local copies are deleted."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ml.data.ingest import read_batch
from ml.data.versioning import DatasetError, DatasetStore

ROOT = Path(__file__).resolve().parents[2]


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def batch(path: Path, rows: list[tuple[str, str]]):
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return read_batch(path, text_col="text", label_col="label", mask=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two training versions and the frozen evaluation set, pushed; the bytes of each kept aside."""
    tmp = tmp_path_factory.mktemp("checkout")
    store = DatasetStore(
        tmp / "state" / "data" / "tickets", str(tmp / "state" / "dvc-remote" / "tickets")
    )  # as store_for names it
    kept = {}
    v1 = store.accept(
        batch(tmp / "b1.csv", [("my parcel is late", "shipping"), ("refund please", "billing")])
    )
    kept[v1["version"]] = store.path("train").read_bytes()
    gold = store.accept(
        batch(tmp / "gold.csv", [("where is my parcel", "shipping"), ("reset my password", "login")]),
        role="eval",
    )
    kept[gold["version"]] = store.path("eval").read_bytes()
    v2 = store.accept(batch(tmp / "b2.csv", [("cannot log in", "login"), ("charged twice", "billing")]))
    kept[v2["version"]] = store.path("train").read_bytes()
    # The local copies go: the files, their .dvc files and DVC's cache; the remote stays.
    for name in ("train.parquet", "eval.parquet", "train.parquet.dvc", "eval.parquet.dvc"):
        (store.root / name).unlink()
    shutil.rmtree(store.root / ".dvc" / "cache")
    return {
        "tmp": tmp,
        "store": store,
        "v1": v1["version"],
        "v2": v2["version"],
        "eval": gold["version"],
        "kept": kept,
    }


def test_an_older_training_version_comes_back_byte_for_byte_with_the_frozen_eval_set(world, tmp_path):
    store, out = world["store"], tmp_path / "v1"
    result = store.checkout(world["v1"][:8], out)  # a prefix, as `mlops data versions` shows it
    assert (result["version"], result["role"]) == (world["v1"], "train")
    assert sorted(p.name for p in out.iterdir()) == ["eval.parquet", "train.parquet"]  # no temporary left
    assert (out / "train.parquet").read_bytes() == world["kept"][world["v1"]]
    assert (out / "eval.parquet").read_bytes() == world["kept"][world["eval"]]
    assert md5(out / "train.parquet") == world["v1"] != world["v2"]
    assert result["files"]["train"]["rows"] == 2 and result["files"]["eval"]["version"] == world["eval"]


def test_with_the_data_folder_gone_the_model_tags_alone_restore_it(world, tmp_path):
    """A model version's dataset_version tag (the full md5) and its eval version are enough."""
    gone = DatasetStore(tmp_path / "no-data" / "tickets", world["store"].remote_url)
    out = tmp_path / "from-tags"
    result = gone.checkout(world["v2"], out, eval_version=world["eval"])
    assert (out / "train.parquet").read_bytes() == world["kept"][world["v2"]]
    assert (out / "eval.parquet").read_bytes() == world["kept"][world["eval"]]
    assert result["role"] == "train"
    with pytest.raises(DatasetError, match="give the full md5"):
        gone.checkout(world["v2"][:10], tmp_path / "prefix")


def test_nothing_is_overwritten_and_unknown_versions_name_the_fix(world, tmp_path):
    store = world["store"]
    out = tmp_path / "busy"
    out.mkdir()
    (out / "train.parquet").write_text("mine")
    with pytest.raises(DatasetError, match="exists; remove it or choose another --out"):
        store.checkout(world["v1"], out)
    assert (out / "train.parquet").read_text() == "mine"
    with pytest.raises(DatasetError, match="not a dataset version"):
        store.checkout("abc", tmp_path / "x")
    missing = "0" * 32
    with pytest.raises(DatasetError, match="could not be fetched from the DVC remote"):
        store.checkout(missing, tmp_path / "missing", eval_version=world["eval"])
    assert not any((tmp_path / "missing").glob("*.parquet"))  # nothing half written


def test_mlops_data_checkout_command(world, tmp_path):
    (tmp_path / "workflows.yaml").write_text(
        "workflows:\n  tickets:\n    labels: [billing, login, shipping]\n"
    )
    env = {
        **os.environ,
        "MLOPS_STATE_DIR": str(world["tmp"] / "state"),
        "MLOPS_WORKFLOWS_FILE": str(tmp_path / "workflows.yaml"),
    }
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "ml.cli", "data", "checkout", world["v1"][:12], "--out", str(out), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["files"]["train"]["version"] == world["v1"]
    assert md5(out / "train.parquet") == world["v1"] and md5(out / "eval.parquet") == world["eval"]
