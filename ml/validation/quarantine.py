"""The quarantine: rejected batches kept whole, next to the report that rejected them.

One folder per batch:

    quarantine_dir/<id>/
        <original file name>   the batch, byte for byte (moved, never rewritten)
        report.json            the validation report that rejected it
        meta.json              original path, sha256, size, time, reason
        released.json          only after release(): when, where to, sha256 at release

An id is ``<UTC time>-<first 8 hex of sha256>`` (``20260102T030405.123456Z-1a2b3c4d``), so ids sort
by time. Nothing is ever deleted here: release() moves the batch back to the drop folder and
leaves the folder, its report, meta.json and released.json behind as the record. The folders are
the history; a person who wants them gone deletes them by hand.

Crash safety: report.json and meta.json go to temp files that are renamed into place, and the
batch moves last. The move is os.replace when both folders share a filesystem (atomic); across
filesystems it is copy to a temp name, fsync, verify sha256, rename, then unlink the source. At
every instant the batch exists in full at its old place, its new place, or both; never neither.
A crash between meta.json and the move leaves an entry with status "incomplete" whose batch is
still at meta["original_path"].
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ml.data.ingest import sha256_file

ID_RE = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{8}$")
META, REPORT, RELEASED = "meta.json", "report.json", "released.json"
QUARANTINED, RELEASED_STATUS, INCOMPLETE = "quarantined", "released", "incomplete"


class QuarantineError(ValueError):
    """A quarantine action cannot be done; the message names the entry or file and the fix."""


@dataclass
class QuarantinedBatch:
    id: str
    entry_dir: Path = field(metadata={"help": "quarantine_dir/<id>."})
    batch_file: Path = field(metadata={"help": "Where the batch lies while quarantined."})
    original_path: str = field(metadata={"help": "Where the batch was when it was quarantined."})
    file_name: str
    sha256: str
    size_bytes: int
    quarantined_at: str = field(metadata={"help": "UTC, ISO 8601."})
    reason: str
    status: str = field(metadata={"help": "quarantined, released, or incomplete (the batch never arrived)."})
    released: dict | None = field(default=None, metadata={"help": "Contents of released.json, if released."})
    report: dict | None = field(
        default=None, metadata={"help": "report.json; filled by show(), not by list."}
    )

    def to_dict(self) -> dict:
        out = asdict(self)
        out["entry_dir"], out["batch_file"] = str(self.entry_dir), str(self.batch_file)
        return out


def quarantine(batch_path: Path, report: Mapping | object, quarantine_dir: Path, *, reason: str) -> str:
    """Move a rejected batch into quarantine_dir/<id>/ with its report; return the id.

    report is a JSON-able mapping (ValidationReport.to_dict()); a ValidationReport is accepted too.
    """
    batch_path = Path(batch_path)
    if not reason or not reason.strip():
        raise QuarantineError(
            "quarantine needs a reason (e.g. 'validation failed: 3 checks'); nothing was moved."
        )
    if batch_path.is_symlink() or not batch_path.is_file():
        raise QuarantineError(
            f"{batch_path}: not a regular file; quarantine takes the batch file itself. Nothing was moved."
        )
    if hasattr(report, "to_dict"):
        report = report.to_dict()
    if not isinstance(report, Mapping):
        raise QuarantineError(
            f"report must be a mapping (ValidationReport.to_dict()), got {type(report).__name__}."
        )

    sha256, size_bytes = sha256_file(batch_path), batch_path.stat().st_size
    quarantine_dir = Path(quarantine_dir)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    entry, now = _new_entry(quarantine_dir, sha256)
    stored_name = _stored_name(batch_path.name)
    meta = {
        "id": entry.name,
        "original_path": str(batch_path.resolve()),
        "file_name": batch_path.name,
        "stored_name": stored_name,
        "sha256": sha256,
        "size_bytes": size_bytes,
        "quarantined_at": now.isoformat(),
        "reason": reason,
    }
    _write_json(entry / REPORT, dict(report))
    _write_json(entry / META, meta)
    _move_file(batch_path, entry / stored_name, sha256)
    return entry.name


def set_aside(entry_path: Path, quarantine_dir: Path, *, reason: str) -> str:
    """Move an entry that is not a regular file (a symlink, a FIFO, a socket) into quarantine; its id.

    The entry itself is renamed, never opened or followed: a link into /etc stays a link, and a
    FIFO is never read (reading one blocks for ever). It shows in `mlops data quarantine list`
    with its reason, so one unsafe entry never blocks the batches dropped beside it.
    """
    entry_path = Path(entry_path)
    if not entry_path.is_symlink() and entry_path.is_file():
        raise QuarantineError(f"{entry_path}: a regular file; use quarantine() with its report.")
    target = os.readlink(entry_path) if entry_path.is_symlink() else ""
    digest = hashlib.sha256(f"{entry_path.name}\0{target}".encode("utf-8", "surrogateescape")).hexdigest()
    quarantine_dir = Path(quarantine_dir)
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    entry, now = _new_entry(quarantine_dir, digest)
    stored_name = _stored_name(entry_path.name)
    meta = {
        "id": entry.name,
        "original_path": str(entry_path),
        "file_name": entry_path.name,
        "stored_name": stored_name,
        "sha256": digest,
        "size_bytes": 0,
        "quarantined_at": now.isoformat(),
        "reason": reason,
        "not_a_file": True,
        **({"link_target": target} if target else {}),
    }
    _write_json(entry / REPORT, {"success": False, "error": reason})
    _write_json(entry / META, meta)
    os.replace(
        entry_path, entry / stored_name
    )  # same filesystem: the drop and quarantine share the state folder
    _fsync_dir(entry)
    return entry.name


def list_quarantined(quarantine_dir: Path) -> list[QuarantinedBatch]:
    """Every entry, released ones included, oldest first (ids sort by time)."""
    quarantine_dir = Path(quarantine_dir)
    if not quarantine_dir.is_dir():
        return []
    # A folder without meta.json is a quarantine that crashed before meta was written; its batch
    # never left the drop folder, so there is nothing in it to list.
    return [
        _load(d, with_report=False)
        for d in sorted(quarantine_dir.iterdir())
        if d.is_dir() and ID_RE.match(d.name) and (d / META).is_file()
    ]


def show(quarantine_dir: Path, id: str) -> QuarantinedBatch:
    """One entry, with its validation report."""
    return _load(_entry_dir(Path(quarantine_dir), id), with_report=True)


def release(quarantine_dir: Path, id: str, drop_dir: Path) -> Path:
    """Move a quarantined batch back into drop_dir, under its original name, for re-submission.

    released.json records when, where to and the sha256 at release (which differs from meta's when
    the batch was fixed in place). It is written before the move so that a crash can only leave a
    batch that is still in quarantine (status "quarantined"; release again) and never one that left
    without a record.
    """
    entry = show(quarantine_dir, id)
    if entry.status == RELEASED_STATUS:
        raise QuarantineError(
            f"{id} was already released on {entry.released['released_at']} to "
            f"{entry.released['released_to']}; nothing to do."
        )
    if entry.status == INCOMPLETE:
        raise QuarantineError(
            f"{id} holds no batch file: the quarantine was interrupted before the move. "
            f"The batch should still be at {entry.original_path}."
        )
    if entry.batch_file.is_symlink() or not entry.batch_file.is_file():
        raise QuarantineError(
            f"{id} holds {entry.file_name!r}, which is not a regular file (a link or a device), "
            f"so ingestion would refuse it again; copy the data it should hold into the drop "
            f"folder as a plain file instead (`mlops data import PATH`)."
        )
    drop_dir = Path(drop_dir)
    if not drop_dir.is_dir():
        raise QuarantineError(
            f"drop folder {drop_dir} does not exist; create it or pass the right drop folder."
        )
    target = drop_dir / entry.file_name
    if target.exists():
        raise QuarantineError(
            f"{target} already exists; move it aside (or re-submit it first), then release {id} again."
        )

    sha256 = sha256_file(entry.batch_file)
    record = {
        "released_at": datetime.now(timezone.utc).isoformat(),
        "released_to": str(target.resolve()),
        "sha256": sha256,
        "modified_in_quarantine": sha256 != entry.sha256,
    }
    _write_json(entry.entry_dir / RELEASED, record)
    try:
        _move_file(entry.batch_file, target, sha256)
    except BaseException:
        (entry.entry_dir / RELEASED).unlink(missing_ok=True)  # our own record of a move that did not happen
        raise
    return target


# --- internals -------------------------------------------------------------------------------


def _new_entry(quarantine_dir: Path, sha256: str) -> tuple[Path, datetime]:
    # mkdir is the lock: two processes quarantining the same bytes in the same microsecond
    # cannot share a folder; the loser takes the next timestamp.
    for _ in range(100):
        now = datetime.now(timezone.utc)
        entry = quarantine_dir / f"{now:%Y%m%dT%H%M%S.%f}Z-{sha256[:8]}"
        try:
            entry.mkdir()
            return entry, now
        except FileExistsError:
            continue
    raise QuarantineError(f"could not create a new entry under {quarantine_dir}; check it is writable.")


def _stored_name(name: str) -> str:
    # The batch keeps its name, unless that name is one of ours or looks like our temp files.
    return f"batch-{name}" if name in (META, REPORT, RELEASED) or name.startswith(".") else name


def _entry_dir(quarantine_dir: Path, id: str) -> Path:
    entry = quarantine_dir / str(id)
    # The regex also keeps "../x" and absolute paths from reaching the filesystem.
    if not ID_RE.match(str(id)) or not (entry / META).is_file():
        known = [b.id for b in list_quarantined(quarantine_dir)]
        listed = ", ".join(known[-20:]) + (f" (and {len(known) - 20} older)" if len(known) > 20 else "")
        raise QuarantineError(
            f"unknown quarantine id {id!r} in {quarantine_dir}; known ids: {listed or 'none'}."
        )
    return entry


def _load(entry: Path, *, with_report: bool) -> QuarantinedBatch:
    try:
        meta = json.loads((entry / META).read_text(encoding="utf-8"))
        released = (
            json.loads((entry / RELEASED).read_text(encoding="utf-8"))
            if (entry / RELEASED).is_file()
            else None
        )
        report = (
            json.loads((entry / REPORT).read_text(encoding="utf-8"))
            if with_report and (entry / REPORT).is_file()
            else None
        )
        batch_file = entry / meta["stored_name"]
        fields = {
            k: meta[k]
            for k in ("original_path", "file_name", "sha256", "size_bytes", "quarantined_at", "reason")
        }
    except (OSError, ValueError, KeyError) as exc:
        raise QuarantineError(
            f"{entry}: unreadable entry ({type(exc).__name__}: {exc}); restore its meta.json "
            "from a backup or move the folder out of the quarantine."
        ) from None
    if batch_file.is_file() or batch_file.is_symlink() or meta.get("not_a_file") and batch_file.exists():
        status = QUARANTINED  # with a released.json too, a release was interrupted: release again
    elif released is not None:
        status = RELEASED_STATUS
    else:
        status = INCOMPLETE
    return QuarantinedBatch(
        id=entry.name,
        entry_dir=entry,
        batch_file=batch_file,
        status=status,
        released=released,
        report=report,
        **fields,
    )


def _move_file(src: Path, dst: Path, sha256: str) -> None:
    """Move src to dst without a moment where neither holds the whole file."""
    try:
        os.replace(src, dst)  # atomic within one filesystem; the bytes are not touched
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        partial = dst.with_name(f".{dst.name}.partial")
        with open(src, "rb") as fin, open(partial, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        if sha256_file(partial) != sha256:
            partial.unlink()
            raise QuarantineError(
                f"copy of {src} to {dst.parent} does not match its sha256 (was it still being "
                "written?); the source was left in place. Retry when it is complete."
            ) from None
        os.replace(partial, dst)
        _fsync_dir(dst.parent)
        src.unlink()  # only now, with a verified, durable copy in place
        _fsync_dir(src.parent)
    _fsync_dir(dst.parent)


def _write_json(path: Path, data: dict) -> None:
    # default=str: a report holding a Path or a numpy number must not stop a quarantine.
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    # Makes a rename durable; not every platform lets a directory be opened.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
