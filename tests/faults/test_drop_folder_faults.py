"""The drop folder under unsafe entries and copied data (issue 16.3, 16.4, 16.10).

Each test runs the ingest_validate steps as the DAG's tasks call them, on a state folder of its
own: a link or a FIFO in the drop folder is set aside and never blocks the good batch beside it,
a hidden file is reported, a batch that is mostly exact copies is rejected, and a file that is
not a table never has its first line echoed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
WF = "ticket_routing"


@pytest.fixture
def drop(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(ROOT / "dags" / "workflows.yaml"))
    from ml.config import load_settings
    from ml.pipeline.ingest_validate import drop_dir_for
    from ml.workflows import get_workflow

    settings = load_settings()
    settings.ensure_dirs()
    return drop_dir_for(settings, get_workflow(settings.workflows_file, WF)), settings


def quarantined(settings) -> list:
    from ml.validation.quarantine import list_quarantined

    return list_quarantined(settings.quarantine_dir / WF)


def test_a_link_in_the_drop_folder_is_set_aside_and_the_good_batch_is_listed(drop, tmp_path):
    from ml.pipeline.ingest_validate import list_new_batches

    folder, settings = drop
    secret = tmp_path / "outside.csv"
    secret.write_text("text,label\nnot yours,billing_refund\n")
    (folder / "leak.csv").symlink_to(secret)
    (folder / "good.csv").write_text("text,label\nrefund please,billing_refund\n")
    said: list[str] = []
    assert list_new_batches(WF, echo=said.append) == ["good.csv"]
    [entry] = quarantined(settings)
    assert entry.file_name == "leak.csv" and "link" in entry.reason and entry.status == "quarantined"
    assert not (folder / "leak.csv").is_symlink() and secret.exists()  # the link moved, its target untouched
    assert any("set aside leak.csv" in line for line in said)
    assert list_new_batches(WF, echo=said.append) == ["good.csv"]  # the next run is not blocked either
    from ml.validation.quarantine import QuarantineError, release

    with pytest.raises(QuarantineError, match="not a regular file"):  # releasing it would only loop
        release(settings.quarantine_dir / WF, entry.id, folder)


def test_a_fifo_is_set_aside_without_being_read(drop):
    from ml.pipeline.ingest_validate import list_new_batches

    folder, settings = drop
    os.mkfifo(folder / "pipe.csv")  # opening it for reading would block for ever
    assert list_new_batches(WF, echo=lambda m: None) == []
    [entry] = quarantined(settings)
    assert entry.file_name == "pipe.csv" and "not a regular file" in entry.reason


def test_a_hidden_file_is_reported_each_run_not_ignored_silently(drop):
    from ml.pipeline.ingest_validate import list_new_batches

    folder, _ = drop
    (folder / ".upload.csv").write_text("text,label\nrefund please,billing_refund\n")
    said: list[str] = []
    assert list_new_batches(WF, echo=said.append) == []
    assert any(".upload.csv" in line and "rename it" in line for line in said)
    assert (folder / ".upload.csv").exists()  # a partial upload is left where it is


def test_a_link_swapped_in_after_listing_is_quarantined_not_retried(drop, tmp_path):
    from ml.pipeline.ingest_validate import BatchRejected, ingest_batch

    folder, settings = drop
    (tmp_path / "target.csv").write_text("text,label\nx,y\n")
    (folder / "late.csv").symlink_to(tmp_path / "target.csv")
    with pytest.raises(BatchRejected, match="set aside"):  # BatchRejected: the DAG never retries it
        ingest_batch(WF, "late.csv")
    assert [e.file_name for e in quarantined(settings)] == ["late.csv"]


def test_a_batch_of_mostly_exact_duplicates_is_rejected(drop):
    from ml.pipeline.ingest_validate import BatchRejected, ingest_batch
    from ml.workflows import get_workflow

    folder, settings = drop
    labels = sorted(get_workflow(settings.workflows_file, WF).labels)
    unique = [
        (f"distinct ticket number {i} about {labels[i % len(labels)]}", labels[i % len(labels)])
        for i in range(40)
    ]
    rows = unique + [unique[0]] * 360  # 400 rows, 90 % of them one repeated row
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(folder / "copies.csv", index=False)
    with pytest.raises(BatchRejected, match="duplicate-text ratio 0.900"):
        ingest_batch(WF, "copies.csv")
    [entry] = quarantined(settings)
    assert entry.file_name == "copies.csv"


def test_a_file_that_is_not_a_table_never_echoes_its_first_line(tmp_path):
    from ml.data.contract import ContractError
    from ml.data.ingest import read_batch

    hashes = tmp_path / "shadow.csv"
    hashes.write_text("root:$6$saltsalt$c2VjcmV0aGFzaA:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n")
    with pytest.raises(ContractError) as caught:
        read_batch(hashes)
    assert "c2VjcmV0aGFzaA" not in str(caught.value) and "root" not in str(caught.value)
    assert "does not look like a table" in str(caught.value)


def test_a_real_table_still_lists_its_columns(tmp_path):
    from ml.data.contract import ContractError
    from ml.data.ingest import read_batch

    table = tmp_path / "t.csv"
    table.write_text("body,category\nhello,billing\n")
    with pytest.raises(ContractError, match=r"the file has \['body', 'category'\]"):
        read_batch(table)
