"""The quarantine on a real filesystem: moves keep every byte, nothing is deleted, ids are checked."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from ml.validation.quarantine import (
    ID_RE,
    QuarantineError,
    list_quarantined,
    quarantine,
    release,
    show,
)

REPORT = {
    "batch_id": "tickets.csv",
    "success": False,
    "failures": [
        {
            "expectation": "expect_column_values_to_be_in_set",
            "column": "label",
            "observed": "labels not in the known set: ['foo']",
            "fix": "add them",
        }
    ],
}
# Every byte value, CRLFs and a NUL: a text-mode copy or re-encoding would change the hash.
PAYLOAD = b'text,label\r\n"caf\xc3\xa9 \x00 refund",billing\n' + bytes(range(256)) * 64


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sha256_of_payload() -> str:
    return hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def dirs(tmp_path):
    drop, quarantined = tmp_path / "drop", tmp_path / "quarantine"
    drop.mkdir()
    batch = drop / "tickets.csv"
    batch.write_bytes(PAYLOAD)
    return batch, drop, quarantined


def test_quarantine_moves_the_file_byte_for_byte(dirs):
    batch, _, qdir = dirs
    before = sha256(batch)
    qid = quarantine(batch, REPORT, qdir, reason="validation failed: 1 check")
    assert ID_RE.match(qid) and qid.endswith(before[:8])
    assert not batch.exists()  # moved, not copied
    entry = qdir / qid
    assert sha256(entry / "tickets.csv") == before
    assert json.loads((entry / "report.json").read_text()) == REPORT
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["original_path"] == str(batch.resolve())
    assert (meta["sha256"], meta["size_bytes"], meta["reason"]) == (
        before,
        len(PAYLOAD),
        "validation failed: 1 check",
    )
    assert meta["quarantined_at"].endswith("+00:00")
    # Temp files were all renamed into place.
    assert sorted(p.name for p in entry.iterdir()) == ["meta.json", "report.json", "tickets.csv"]


def test_list_show_release_round_trip(dirs):
    batch, drop, qdir = dirs
    assert list_quarantined(qdir) == []
    first = quarantine(batch, REPORT, qdir, reason="bad labels")
    second_file = drop / "later.jsonl"
    second_file.write_bytes(b'{"text": "x", "label": "y"}\n')
    second = quarantine(second_file, {"success": False}, qdir, reason="too few rows")

    listed = list_quarantined(qdir)
    assert [b.id for b in listed] == sorted([first, second]) == [first, second]  # ids sort by time
    assert [b.status for b in listed] == ["quarantined", "quarantined"]
    assert all(b.report is None for b in listed)  # list stays light; show() reads the report

    shown = show(qdir, first)
    assert shown.report == REPORT
    assert (shown.file_name, shown.reason, shown.size_bytes) == ("tickets.csv", "bad labels", len(PAYLOAD))

    back = release(qdir, first, drop)
    assert back == drop / "tickets.csv"
    assert back.read_bytes() == PAYLOAD
    released = show(qdir, first)
    assert released.status == "released"
    assert released.released["released_to"] == str(back.resolve())
    assert released.released["modified_in_quarantine"] is False
    # The record stays: report and meta are still there after the release.
    assert (qdir / first / "report.json").is_file() and (qdir / first / "meta.json").is_file()
    assert [b.status for b in list_quarantined(qdir)] == ["released", "quarantined"]
    json.dumps([b.to_dict() for b in list_quarantined(qdir)])


def test_a_batch_fixed_in_quarantine_is_released_with_its_new_hash(dirs):
    batch, drop, qdir = dirs
    qid = quarantine(batch, REPORT, qdir, reason="bad labels")
    fixed = show(qdir, qid).batch_file
    fixed.write_bytes(PAYLOAD.replace(b"billing", b"refunds"))
    back = release(qdir, qid, drop)
    record = show(qdir, qid).released
    assert record["modified_in_quarantine"] is True
    assert record["sha256"] == sha256(back) != show(qdir, qid).sha256


RELEASE_ERRORS = [
    (
        "unknown id",
        lambda qdir, qid, drop: release(qdir, "20990101T000000.000000Z-deadbeef", drop),
        "known ids: {qid}",
    ),
    ("path traversal id", lambda qdir, qid, drop: show(qdir, "../drop"), "unknown quarantine id '../drop'"),
    (
        "released twice",
        lambda qdir, qid, drop: (release(qdir, qid, drop), release(qdir, qid, drop.parent / "again")),
        "already released",
    ),
    ("drop folder missing", lambda qdir, qid, drop: release(qdir, qid, drop / "nope"), "does not exist"),
    (
        "name taken in drop folder",
        lambda qdir, qid, drop: ((drop / "tickets.csv").write_bytes(b"new"), release(qdir, qid, drop)),
        "already exists",
    ),
]


@pytest.mark.parametrize("case, action, words", RELEASE_ERRORS, ids=[c[0] for c in RELEASE_ERRORS])
def test_release_errors_name_the_problem_and_lose_nothing(dirs, case, action, words):
    batch, drop, qdir = dirs
    qid = quarantine(batch, REPORT, qdir, reason="bad labels")
    with pytest.raises(QuarantineError, match=words.format(qid=qid).replace("(", r"\(")):
        action(qdir, qid, drop)
    # Whatever failed, the batch is whole somewhere: in quarantine or back in the drop folder.
    places = (show(qdir, qid).batch_file, drop / "tickets.csv")
    assert any(p.is_file() and sha256(p) == sha256_of_payload() for p in places)


def test_a_failed_release_leaves_no_release_record(dirs):
    batch, drop, qdir = dirs
    qid = quarantine(batch, REPORT, qdir, reason="bad labels")
    (drop / "tickets.csv").write_bytes(b"a newer drop with the same name")
    with pytest.raises(QuarantineError):
        release(qdir, qid, drop)
    assert show(qdir, qid).status == "quarantined"
    assert not (qdir / qid / "released.json").exists()


QUARANTINE_ERRORS = [
    ("missing file", lambda drop: drop / "nope.csv", "bad", "not a regular file"),
    ("a folder", lambda drop: drop, "bad", "not a regular file"),
    ("no reason", lambda drop: drop / "tickets.csv", " ", "needs a reason"),
]


@pytest.mark.parametrize(
    "case, path, reason, words", QUARANTINE_ERRORS, ids=[c[0] for c in QUARANTINE_ERRORS]
)
def test_quarantine_refuses_bad_input_and_moves_nothing(dirs, case, path, reason, words):
    batch, drop, qdir = dirs
    with pytest.raises(QuarantineError, match=words):
        quarantine(path(drop), REPORT, qdir, reason=reason)
    assert batch.read_bytes() == PAYLOAD
    assert list_quarantined(qdir) == []


def test_a_report_object_and_a_reserved_file_name_are_handled(tmp_path):
    from ml.validation.suite import Failure, ValidationReport

    batch = tmp_path / "report.json"  # same name as the entry's own report file
    batch.write_bytes(b'{"rows": []}')
    report = ValidationReport(
        "report.json",
        False,
        [Failure("row_count", None, "0 rows", "send rows")],
        0,
        {"evaluated_expectations": 1},
    )
    qid = quarantine(batch, report, tmp_path / "q", reason="empty")
    entry = show(tmp_path / "q", qid)
    assert entry.report["failures"][0]["observed"] == "0 rows"
    assert entry.batch_file.name == "batch-report.json" and entry.batch_file.read_bytes() == b'{"rows": []}'
    drop = tmp_path / "drop"
    drop.mkdir()
    assert release(tmp_path / "q", qid, drop) == drop / "report.json"  # back under its own name


def test_an_interrupted_quarantine_shows_as_incomplete_and_keeps_the_batch(dirs):
    batch, _, qdir = dirs
    qid = quarantine(batch, REPORT, qdir, reason="bad labels")
    # Simulate a crash between writing meta.json and moving the batch: put the batch back.
    os.replace(qdir / qid / "tickets.csv", batch)
    entry = show(qdir, qid)
    assert entry.status == "incomplete" and Path(entry.original_path) == batch.resolve()
    with pytest.raises(QuarantineError, match="should still be at"):
        release(qdir, qid, batch.parent)


SHM = Path("/dev/shm")


@pytest.mark.skipif(
    not SHM.is_dir() or os.stat(SHM).st_dev == os.stat(Path(__file__)).st_dev,
    reason="needs a second filesystem (/dev/shm) to exercise the copy-verify-unlink move",
)
def test_moves_across_filesystems_copy_verify_then_unlink(dirs, tmp_path):
    batch, drop, _ = dirs
    qdir = SHM / f"quarantine-test-{os.getpid()}-{tmp_path.name}"
    try:
        qid = quarantine(batch, REPORT, qdir, reason="cross-device")
        assert not batch.exists()
        assert sha256(show(qdir, qid).batch_file) == sha256_of_payload()
        assert not list((qdir / qid).glob(".*"))  # no .partial left behind
        back = release(qdir, qid, drop)
        assert back.read_bytes() == PAYLOAD
    finally:
        shutil.rmtree(qdir, ignore_errors=True)
