"""The frontier call log: append-only JSONL, one file per UTC day, written off the request path.

`CallLog.append` only puts the row on a queue; a background thread writes whatever has queued
up as one batch and fsyncs it, so a slow disk never slows a call and a crash loses at most the
batch in flight. Rows are in the format `ml.data.ingest` reads (see ml/demo_data.py), so
`export_for_curation` can hand completed days to the ingest gate unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import queue
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

log = logging.getLogger(__name__)
_STOP = object()
# A call that started before midnight can finish (and be written) after it; a day is exported
# only once every call of it has had time to finish.
EXPORT_GRACE = timedelta(minutes=15)
# Where a row holds the teacher's answer: the label it named (a label set) or the JSON object of
# fields it returned (a field list). A row has one of them; null means no answer was recorded.
ANSWER_COLUMNS = ("response_label", "response_json")


def answer_column(row: dict) -> str:
    """The column of `row` that holds the teacher's answer (response_label when it has neither)."""
    return next((c for c in ANSWER_COLUMNS if c in row), ANSWER_COLUMNS[0])


def recorded_answer(row: dict):
    """The teacher's answer as the row recorded it (a label, or the answer's JSON text), else None."""
    return row.get(answer_column(row))


def calllog_dir(state_dir: Path, workflow: str) -> Path:
    return Path(state_dir) / "calllog" / workflow


class CallLog:
    """Rows go to `<directory>/<YYYY-MM-DD>.jsonl` by the UTC day of their `ts`."""

    def __init__(self, directory: Path, *, batch_max: int = 1000):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.batch_max = batch_max
        self.failed_rows = 0  # rows a write error lost; logged, never raised into a request
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"calllog-{self.directory.name}", daemon=True)
        self._thread.start()

    def append(self, row: dict) -> None:
        if self._closed:
            raise RuntimeError(
                f"call log {self.directory} is closed; create a new CallLog to write more rows."
            )
        self._queue.put(row)

    def flush(self) -> None:
        """Block until every row appended so far is on disk."""
        self._queue.join()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [r for r in batch if r is not _STOP]
            try:
                self._write(rows)
            except Exception:  # noqa: BLE001 - the writer must outlive a full disk
                self.failed_rows += len(rows)
                log.exception("call log %s: %d rows could not be written", self.directory, len(rows))
            for _ in batch:
                self._queue.task_done()
            if len(rows) < len(batch):
                return

    def _write(self, rows: list[dict]) -> None:
        by_day: dict[str, list[str]] = {}
        for row in rows:
            by_day.setdefault(str(row["ts"])[:10], []).append(json.dumps(row, ensure_ascii=False) + "\n")
        for day, lines in by_day.items():
            with open(self.directory / f"{day}.jsonl", "a", encoding="utf-8") as f:
                f.write("".join(lines))
                f.flush()
                os.fsync(f.fileno())


def read_jsonl(paths) -> list[dict]:
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def read_rows(directory: Path) -> list[dict]:
    """Every row the proxy wrote for a workflow: pending days and those already exported."""
    directory = Path(directory)
    return read_jsonl(sorted(directory.glob("*.jsonl")) + sorted(directory.glob("exported/*.jsonl")))


def in_gold_sample(call_id: str, gold_share: float) -> bool:
    """A stable draw per call: the same call is set aside on every run, whatever the order."""
    return int(hashlib.sha256(call_id.encode()).hexdigest()[:8], 16) < gold_share * 2**32


def export_for_curation(
    directory: Path,
    drop_dir: Path,
    labeling_dir: Path,
    *,
    min_rows: int,
    gold_share: float = 0.05,
    now: datetime | None = None,
    mask=None,
    gold_columns: tuple[str, ...] = ("label",),
) -> dict:
    """Hand completed days to ingestion: one call-log batch into the drop folder, and a sample of
    requests (without the teacher's answer, so annotators are not anchored on it) for gold labels.

    Gold-sampled calls stay in the batch with their answer (response_label or response_json)
    null: the cost and reliability books still count them, training never sees them, so the
    evaluation set stays disjoint. Days wait until together they hold min_rows answered calls (a
    smaller batch fails the gate). gold_columns: the sample's empty columns for annotators to
    fill, after call_id and text (the label, or one per declared field).
    """
    if not 0.0 <= gold_share < 1.0:
        raise ValueError(
            f"gold_share={gold_share} must be in [0, 1), e.g. 0.05 to set aside 5% for gold labels."
        )
    directory, now = Path(directory), now or datetime.now(timezone.utc)
    last_complete = (now - EXPORT_GRACE).date() - timedelta(days=1)
    days = [p for p in sorted(directory.glob("*.jsonl")) if p.stem <= last_complete.isoformat()]
    rows = read_jsonl(days)
    gold = [r for r in rows if r.get("status") == "ok" and in_gold_sample(str(r["call_id"]), gold_share)]
    gold_ids = {r["call_id"] for r in gold}
    batch = [{**r, answer_column(r): None} if r["call_id"] in gold_ids else r for r in rows]
    labelled = sum(1 for r in batch if r.get("status") == "ok" and recorded_answer(r))
    if not days or labelled < min_rows:
        return {"exported_days": [], "rows": 0, "gold_rows": 0, "waiting_labelled_rows": labelled}
    name = f"frontier-{days[0].stem}_{days[-1].stem}"
    drop_dir.mkdir(parents=True, exist_ok=True)
    labeling_dir.mkdir(parents=True, exist_ok=True)
    # Written to a temporary name first: ingest must never pick up half a file.
    tmp = drop_dir / f".{name}.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch), encoding="utf-8")
    tmp.replace(drop_dir / f"{name}.jsonl")
    if gold:
        from ml.data.ingest import DEFAULT_MASKER  # annotators need the intent, not the customer's details

        mask = mask or DEFAULT_MASKER

        with open(labeling_dir / f"{name}.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["call_id", "text", *gold_columns])
            blank = [""] * len(gold_columns)
            writer.writerows([r["call_id"], mask(str(r["request_text"])), *blank] for r in gold)
    exported = directory / "exported"
    exported.mkdir(exist_ok=True)
    for path in days:
        target = exported / path.name
        if target.exists():  # late rows of a day exported before: keep them together
            with open(target, "a", encoding="utf-8") as f:
                f.write(path.read_text(encoding="utf-8"))
            path.unlink()
        else:
            path.replace(target)
    return {
        "exported_days": [p.stem for p in days],
        "rows": len(batch),
        "gold_rows": len(gold),
        "batch": str(drop_dir / f"{name}.jsonl"),
        "gold_file": str(labeling_dir / f"{name}.csv") if gold else None,
    }
