"""Cost capture: turn what happened into ledger entries, without ever failing the work.

- Task runs: every task try's duration x the hourly rate of the resource class it ran on
  (called by plugins/cost_listener.py after each success, failure and retry).
- Storage: artifact and dataset sizes x the GB-month rate, prorated over a period.
- Frontier API spend: tokens from the call log x the price book (a cost the provider or the
  client reports is never booked as such: prices live in one place, the price book).
- People's hours and tooling: booked by hand (`mlops costs add`).

Task capture never raises: when the ledger cannot be reached, the entry is written to a local
spool folder (one JSON file per entry, renamed into place so a crash leaves no half file) and
booked later by flush_spool. Idempotency keys make every path safe to repeat: a re-delivered
listener call, a re-flushed file, or a flush racing another flush books the cost once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

from ml.costs import unit_costs
from ml.costs.ledger import (
    CATEGORIES,
    QUANTITY_PLACES,
    Category,
    Entry,
    IdempotencyConflict,
    Ledger,
    LedgerError,
    NewEntry,
)
from ml.costs.pricebook import PriceBook, PriceBookError

log = logging.getLogger(__name__)

# Which category a task's compute belongs to, by task id (after any TaskGroup prefix): an
# exact name, else the longest name that the task id starts with followed by "_" (so
# evaluate_challenger counts as evaluate). A task named otherwise can declare its category
# (the listener reads executor_config={"cost_category": ...}).
TASK_CATEGORY = {
    "ingest": Category.DATA_CURATION,
    "validate": Category.DATA_CURATION,
    "quarantine": Category.DATA_CURATION,
    "mask_pii": Category.DATA_CURATION,
    "version_dataset": Category.DATA_CURATION,
    "label": Category.TRAINING_COMPUTE,  # teacher labelling is part of distillation
    "prepare_targets": Category.TRAINING_COMPUTE,
    "distill": Category.TRAINING_COMPUTE,
    "train": Category.TRAINING_COMPUTE,
    "evaluate": Category.EVALUATION,
    "benchmark": Category.EVALUATION,
    "gate": Category.EVALUATION,
    "register": Category.VERSIONING_STORAGE,
    "promote": Category.VERSIONING_STORAGE,
    "approve": Category.VERSIONING_STORAGE,
    "rollback": Category.VERSIONING_STORAGE,
    "serve": Category.SERVING,
}
# Otherwise the DAG decides, by the part of its id before "__" (ids are <verb_noun>__<workflow>).
DAG_CATEGORY = {
    "ingest_validate": Category.DATA_CURATION,
    "distill": Category.TRAINING_COMPUTE,
    "watch_upstream": Category.KEEPING_CURRENT,
    "cost_report": Category.TOOLING,
}
# What no lifecycle stage claims is platform overhead.
DEFAULT_CATEGORY = Category.TOOLING
# A run triggered by an asset whose name contains this is a re-distillation: the upstream
# base model or teacher changed. All of that run's compute is the cost of keeping current.
REDISTILLATION_ASSET_MARK = "upstream"
# Costs of DAGs that serve no single workflow.
SHARED_WORKFLOW = "platform"
# Storage is billed per GB = 2^30 bytes (as S3 does), per calendar month.
BYTES_PER_GB = Decimal(2**30)
TOKENS_PER_UNIT = unit_costs.TOKENS_PER_PRICE_UNIT  # a frontier_api entry's quantity is in 1M tokens


# Deciding what a task run is --------------------------------------------------------------


def category_for(
    dag_id: str, task_id: str, *, declared: str | None = None, redistillation: bool = False
) -> str:
    """The cost category of a task's compute: declared, else re-distillation, else by name."""
    if declared:
        if declared not in CATEGORIES:
            raise ValueError(
                f"Task {dag_id}.{task_id} declares cost_category={declared!r}; "
                f"use one of {', '.join(CATEGORIES)}."
            )
        return str(declared)
    if redistillation:
        return Category.KEEPING_CURRENT.value
    name = task_id.rsplit(".", 1)[-1]
    if name in TASK_CATEGORY:
        return TASK_CATEGORY[name].value
    prefixes = [k for k in TASK_CATEGORY if name.startswith(k + "_")]
    if prefixes:
        return TASK_CATEGORY[max(prefixes, key=len)].value
    return DAG_CATEGORY.get(dag_id.split("__", 1)[0], DEFAULT_CATEGORY).value


def is_redistillation(triggering_asset_names) -> bool:
    return any(REDISTILLATION_ASSET_MARK in str(name) for name in triggering_asset_names or ())


def workflow_for(dag_id: str, params=None, tags=()) -> str:
    """The workflow a DAG serves: params["workflow"], a "workflow:<name>" tag, or the dag_id suffix."""
    if params and params.get("workflow"):
        return str(params.get("workflow"))
    for tag in tags or ():
        if str(tag).startswith("workflow:"):
            return str(tag).split(":", 1)[1]
    if "__" in dag_id:
        return dag_id.split("__", 1)[1]
    return SHARED_WORKFLOW


def resource_class_for(
    price_book: PriceBook, *, resource: str | None, pool: str | None, queue: str | None
) -> str:
    """The compute class a task ran on: declared, else a pool named after a class, else by queue."""
    if resource:
        return resource
    if pool and pool in price_book.compute_hourly:
        return pool
    return price_book.resource_class_for_queue(queue) or (
        queue if queue in price_book.compute_hourly else "cpu"
    )


# Where a task's body says which device it computed on, for the listener to price (see report_device).
DEVICE_REPORTS_DIR = "devices"


def report_device(state_dir: Path | str, device: str, device_name: str | None = None) -> None:
    """Called from a task's body: the device it computed on ("cpu" or "cuda", and the GPU's name).

    The listener books the try at the price of that device instead of guessing from the queue:
    a `gpu`-queue task that found no GPU ran on the CPU and costs a CPU hour. The try is named
    by the AIRFLOW_CTX_* variables Airflow sets around a task's execution; outside Airflow (a
    test, a notebook) there is no try to price and nothing is written. Never raises.
    """
    try:
        ident = [
            os.environ.get(f"AIRFLOW_CTX_{k}") for k in ("DAG_ID", "DAG_RUN_ID", "TASK_ID", "TRY_NUMBER")
        ]
        if not all(ident):
            return
        if device_name is None and str(device).startswith("cuda"):
            import torch

            device_name = torch.cuda.get_device_name()
        _write_json(
            Path(state_dir) / DEVICE_REPORTS_DIR,
            _device_file(*ident),
            {"device": str(device), "device_name": device_name},
        )
    except Exception:  # noqa: BLE001 - pricing must never fail the work it prices
        log.exception("Cost capture: could not record the device %s", device)


def reported_device(state_dir: Path | str, dag_id: str, run_id: str, task_id: str, try_number) -> dict | None:
    """What the task try said it computed on (report_device), or None."""
    path = Path(state_dir) / DEVICE_REPORTS_DIR / _device_file(dag_id, run_id, task_id, try_number)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("device") else None


def _device_file(dag_id, run_id, task_id, try_number) -> str:
    return (
        hashlib.sha256(f"{dag_id}/{run_id}/{task_id}/{int(try_number)}".encode()).hexdigest()[:40] + ".json"
    )


def device_resource_class(
    price_book: PriceBook, device: str | None, device_name: str | None = None
) -> str | None:
    """The compute class of a device that ran a task: the CPU class for "cpu", the price book's
    `devices:` match for a GPU's name; None when the book does not know the device."""
    if not device:
        return None
    if device == "cpu":
        return price_book.cpu_class
    return price_book.resource_class_for_device(device_name or "")


def duration_hours(started_at: datetime, ended_at: datetime) -> Decimal:
    """Exact hours between two aware datetimes (no float on the way), at least zero."""
    delta = ended_at - started_at
    if delta < timedelta(0):
        log.warning("Task ended (%s) before it started (%s); booking zero hours.", ended_at, started_at)
        return Decimal(0)
    seconds = Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds) / Decimal(1_000_000)
    return seconds / unit_costs.SECONDS_PER_HOUR


def task_key(dag_id: str, run_id: str, task_id: str, map_index: int | None, try_number: int) -> str:
    """One key per task try: every retry is booked once, a re-delivered try is not doubled."""
    return _fit(
        f"task:{dag_id}/{run_id}/{task_id}/{-1 if map_index is None else map_index}/{try_number}", 200
    )


# Task runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskRun:
    """The facts of one task try, as the listener saw them. Spooled as is when pricing fails."""

    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    map_index: int | None
    queue: str | None
    pool: str | None
    resource: str | None
    started_at: datetime
    ended_at: datetime
    workflow: str
    category: str
    price_book: str = ""  # the price book file that prices it at flush time
    device: str | None = None  # what the task said it computed on: "cpu" or "cuda"
    device_name: str | None = None  # the GPU's name, e.g. "NVIDIA A10G"

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out.update(started_at=self.started_at.isoformat(), ended_at=self.ended_at.isoformat())
        return out

    @classmethod
    def from_json(cls, raw: dict) -> "TaskRun":
        return cls(
            **(
                raw
                | {
                    "started_at": datetime.fromisoformat(raw["started_at"]),
                    "ended_at": datetime.fromisoformat(raw["ended_at"]),
                }
            )
        )

    def entry(self, price_book: PriceBook) -> NewEntry:
        """Price the try: hours x the rate of the device it ran on (else its declared class, pool or
        queue) on the day it started (UTC)."""
        started = self.started_at.astimezone(timezone.utc)
        ran_on = device_resource_class(price_book, self.device, self.device_name)
        resource_class = ran_on or resource_class_for(
            price_book, resource=self.resource, pool=self.pool, queue=self.queue
        )
        rate = price_book.compute_hour_usd(resource_class, started.date())
        how = (
            f"ran on {self.device_name or self.device}"
            if ran_on
            else f"device {self.device_name or self.device} not in the price book's devices; by declaration/queue"
            if self.device
            else "by declaration/pool/queue"
        )
        return NewEntry(
            idempotency_key=task_key(self.dag_id, self.run_id, self.task_id, self.map_index, self.try_number),
            occurred_at=started,
            category=self.category,
            workflow=self.workflow,
            resource=resource_class,
            quantity=duration_hours(self.started_at, self.ended_at),
            unit="hour",
            unit_price=rate,
            currency=price_book.currency,
            source_kind="task",
            source=_fit(
                f"{self.dag_id}/{self.run_id}/{self.task_id}/{self.map_index}/{self.try_number}", 500
            ),
            description=f"{self.task_id} try {self.try_number} on {resource_class}, {how} "
            f"(queue {self.queue or '-'}, pool {self.pool or '-'})",
        )


def book_task_run(
    ledger_url: str,
    spool_dir: Path | str,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int,
    map_index: int | None,
    queue: str | None,
    pool: str | None,
    resource: str | None,
    started_at: datetime | None,
    ended_at: datetime | None,
    workflow: str,
    category: str,
    price_book: PriceBook | Path | str,
    device: str | None = None,
    device_name: str | None = None,
) -> Entry | None:
    """Book one task try's compute. Never raises: what cannot be booked now is spooled.

    A try without a start time never ran and costs nothing; one without an end time (marked
    failed from outside) is booked up to now. Returns the ledger entry (new, or the one already
    booked for this try), None when nothing was booked now.
    """
    try:
        if started_at is None:
            log.info(
                "Cost capture: %s.%s try %s never started; nothing to book.", dag_id, task_id, try_number
            )
            return
        run = TaskRun(
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            try_number=int(try_number),
            map_index=-1 if map_index is None else int(map_index),
            queue=queue,
            pool=pool,
            resource=resource,
            started_at=started_at,
            ended_at=ended_at or datetime.now(timezone.utc),
            workflow=workflow,
            category=category,
            price_book=str(price_book.path if isinstance(price_book, PriceBook) else price_book),
            device=device,
            device_name=device_name,
        )
        key = task_key(dag_id, run_id, task_id, map_index, try_number)
        try:
            book = price_book if isinstance(price_book, PriceBook) else PriceBook.load(price_book)
            entry = run.entry(book)
        except Exception as exc:  # noqa: BLE001 - keep the facts; they are priced when the book is fixed
            log.warning(
                "Cost capture: cannot price %s (%s); spooled the task run to price at flush.", key, exc
            )
            _spool(spool_dir, key, {"kind": "task_run", "task_run": run.to_json()})
            return None
        return _book_or_spool(ledger_url, spool_dir, entry)
    except Exception:  # noqa: BLE001 - capture must never fail the task it measures
        log.exception("Cost capture failed for %s.%s try %s; nothing booked.", dag_id, task_id, try_number)
        return None


def book_try(
    settings,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int,
    map_index: int | None,
    queue: str | None,
    pool: str | None,
    declared: dict | None,
    started_at: datetime | None,
    ended_at: datetime | None,
    triggering_asset_names=(),
    dag_params=None,
    dag_tags=None,
) -> Entry | None:
    """Book a task try from what is known of it: the cost listener at the try's end, `mlops`
    for a try whose process was killed (ml/airflow_runner.py). Decides its category, workflow and
    the device it reported, then book_task_run. Never raises.

    declared: the task's executor_config keys resource_class and cost_category, when given.
    """
    declared = declared if isinstance(declared, dict) else {}
    redistillation = is_redistillation(triggering_asset_names)
    try:
        category = category_for(
            dag_id, task_id, declared=declared.get("cost_category"), redistillation=redistillation
        )
    except ValueError as exc:  # a typo in the declaration must not lose the cost
        log.warning("Cost capture: %s Booking by the task's name instead.", exc)
        category = category_for(dag_id, task_id, redistillation=redistillation)
    ran_on = reported_device(settings.state_dir, dag_id, run_id, task_id, try_number) or {}
    return book_task_run(
        settings.ledger_url,
        settings.state_dir / "spool",
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        try_number=try_number,
        map_index=map_index,
        queue=queue,
        pool=pool,
        resource=declared.get("resource_class"),
        started_at=started_at,
        ended_at=ended_at,
        workflow=workflow_for(dag_id, dag_params, dag_tags),
        category=category,
        price_book=settings.price_book_file,
        device=ran_on.get("device"),
        device_name=ran_on.get("device_name"),
    )


def _book_or_spool(ledger_url: str, spool_dir: Path | str, entry: NewEntry) -> Entry | None:
    booked = None
    try:
        with Ledger(ledger_url) as ledger:
            booked = ledger.append(entry)
            log.info(
                "Cost capture: booked %s (%s %s x %s).",
                entry.idempotency_key,
                entry.quantity,
                entry.unit,
                entry.unit_price,
            )
            try:  # the ledger is up: book what earlier tries had to spool
                _flush_into(ledger, Path(spool_dir), None)
            except Exception as exc:  # noqa: BLE001
                log.warning("Cost capture: could not flush the spool in %s (%s).", spool_dir, exc)
        return booked
    except IdempotencyConflict as exc:
        # The same try was already booked with other facts (e.g. the API server and the worker
        # both reported it); the first booking stands and nothing is doubled.
        log.warning("Cost capture: %s", exc)
    except Exception as exc:  # noqa: BLE001 - unreachable, locked, misconfigured: spool it
        log.warning(
            "Cost capture: ledger unavailable (%s); spooled %s in %s.",
            _short(exc),
            entry.idempotency_key,
            spool_dir,
        )
        _spool(spool_dir, entry.idempotency_key, {"kind": "entry", "entry": entry.to_json()})
    return booked


# The spool -------------------------------------------------------------------------------


def _spool(spool_dir: Path | str, key: str, record: dict) -> None:
    """Write one record atomically; one file per key, so spooling the same entry twice is one file."""
    try:
        _write_json(Path(spool_dir), f"{hashlib.sha256(key.encode()).hexdigest()[:40]}.json", record)
    except Exception:  # noqa: BLE001 - last resort: the record is in the task log, for a human to book
        log.exception(
            "Cost capture: could not spool to %s; the unbooked record is: %s",
            spool_dir,
            json.dumps(record, sort_keys=True),
        )


def _write_json(directory: Path, name: str, record: dict) -> None:
    """Renamed into place, so a crash leaves the old file or the new one, never half of one."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def pending(spool_dir: Path | str) -> list[Path]:
    """Spooled records waiting to be booked."""
    spool_dir = Path(spool_dir)
    return sorted(spool_dir.glob("*.json")) if spool_dir.is_dir() else []


def flush_spool(
    ledger_url: str, spool_dir: Path | str, price_book: PriceBook | Path | str | None = None
) -> int:
    """Book every spooled record; return how many were booked (or found already booked).

    A file is removed only after its entry is in the ledger, so a crash mid-flush loses
    nothing and a second flush books nothing twice. A record that conflicts with the ledger
    moves to spool_dir/conflicts, one that can never be booked to spool_dir/rejected; task
    runs that could not be priced wait until the price book prices them. Raises when the
    ledger cannot be reached.
    """
    if not pending(spool_dir):
        return 0
    if price_book is not None and not isinstance(price_book, PriceBook):
        price_book = PriceBook.load(price_book)
    with Ledger(ledger_url) as ledger:
        return _flush_into(ledger, Path(spool_dir), price_book)


def _flush_into(ledger: Ledger, spool_dir: Path, price_book: PriceBook | None) -> int:
    booked = 0
    for path in pending(spool_dir):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # a concurrent flush booked it
        except ValueError as exc:
            _set_aside(path, "rejected", f"not valid JSON ({exc})")
            continue
        try:
            if record.get("kind") == "entry":
                entry = NewEntry.from_json(record["entry"])
            elif record.get("kind") == "task_run":
                run = TaskRun.from_json(record["task_run"])
                entry = run.entry(price_book or PriceBook.load(run.price_book))
            else:
                raise ValueError(f"unknown record kind {record.get('kind')!r}")
        except PriceBookError as exc:
            log.warning("Spooled %s stays until the price book can price it: %s", path.name, exc)
            continue
        except (KeyError, TypeError, ValueError) as exc:
            _set_aside(path, "rejected", f"cannot be booked ({exc})")
            continue
        try:
            ledger.append(entry)
        except IdempotencyConflict as exc:
            _set_aside(path, "conflicts", str(exc))
            continue
        path.unlink(missing_ok=True)
        booked += 1
    return booked


def _set_aside(path: Path, folder: str, why: str) -> None:
    target = path.parent / folder
    target.mkdir(exist_ok=True)
    os.replace(path, target / path.name)
    log.error("Spooled %s moved to %s: %s", path.name, target, why)


# Frontier API spend ----------------------------------------------------------------------


@dataclass
class _DayModel:
    tokens_in: int = 0
    tokens_out: int = 0
    calls: int = 0
    digest: int = 0  # sum of per-call hashes mod 2^256: the same calls in any order, same digest


def book_frontier_calls(
    ledger: Ledger,
    call_log_rows,
    price_book: PriceBook,
    workflow: str,
    *,
    before: date | None = None,
    billable_statuses: tuple[str, ...] = unit_costs.BILLABLE_STATUSES,
    source: str = "call_log",
) -> list[Entry]:
    """Book frontier spend from call-log rows: tokens x the price book, per UTC day and model.

    Rows need ts, model, tokens_in, tokens_out, and optionally call_id and status (rows with
    a status outside billable_statuses, e.g. rate-limited or failed calls, are not billed).
    Pass before=<today> to leave a day that is still filling up for a later run.

    Idempotent per day, model and log digest: the same calls book the same entries again.
    When late calls arrive for a day already booked, only the extra tokens are booked, under
    a key with the new digest, so nothing is doubled. Returns the entries for each day and
    model (new or already there).
    """
    groups: dict[tuple[date, str], _DayModel] = {}
    for i, row in enumerate(call_log_rows):
        if str(row.get("status") or "ok") not in billable_statuses:
            continue
        try:
            ts = _utc(row["ts"])
            model = str(row["model"])
            tokens_in, tokens_out = int(row["tokens_in"]), int(row["tokens_out"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"Call-log row {i} ({row.get('call_id', 'no call_id')}): {exc!r}; each row needs "
                "ts (ISO 8601), model, tokens_in and tokens_out."
            ) from None
        if tokens_in < 0 or tokens_out < 0:
            raise ValueError(f"Call-log row {i}: negative token count ({tokens_in}, {tokens_out}).")
        if before is not None and ts.date() >= before:
            continue
        group = groups.setdefault((ts.date(), model), _DayModel())
        group.tokens_in += tokens_in
        group.tokens_out += tokens_out
        group.calls += 1
        ident = f"{row.get('call_id', '')}|{ts.isoformat()}|{tokens_in}|{tokens_out}"
        group.digest = (group.digest + int(hashlib.sha256(ident.encode()).hexdigest(), 16)) % 2**256

    already: dict[tuple[date, str, str], Decimal] = {}
    for e in ledger.entries(workflow=workflow, category=Category.FRONTIER_API.value):
        k = (e.occurred_at.date(), e.resource, e.unit)
        already[k] = already.get(k, Decimal(0)) + e.quantity

    out = []
    for (day, model), group in sorted(groups.items()):
        price_in, price_out = price_book.frontier_token_prices(model, day)
        digest = f"{group.digest:064x}"[:16]
        for direction, tokens, price in (
            ("in", group.tokens_in, price_in),
            ("out", group.tokens_out, price_out),
        ):
            key = _fit(f"frontier:{workflow}:{model}:{day.isoformat()}:{direction}:{digest}", 200)
            existing = ledger.find(key)
            if existing is not None:
                out.append(existing)
                continue
            resource, unit = f"frontier:{model}", f"1M tokens {direction}"
            quantity = Decimal(tokens) / TOKENS_PER_UNIT
            booked = already.get((day, resource, unit), Decimal(0))
            if quantity < booked:
                raise LedgerError(
                    f"The call log has {tokens} {direction}put tokens for {model} on {day}, fewer than the "
                    f"{booked * TOKENS_PER_UNIT} already booked: the log lost rows. Find out why; to re-book "
                    f"the day, reverse its frontier_api entries first."
                )
            if quantity == booked:
                continue  # new calls without tokens in this direction, or unbillable ones
            late = " (late calls: the rest of the day is booked)" if booked else ""
            out.append(
                ledger.append(
                    NewEntry(
                        idempotency_key=key,
                        occurred_at=datetime.combine(day, time(), timezone.utc),
                        category=Category.FRONTIER_API.value,
                        workflow=workflow,
                        model=model,
                        resource=resource,
                        quantity=quantity - booked,
                        unit=unit,
                        unit_price=price,
                        currency=price_book.currency,
                        source_kind="system",
                        source=_fit(source, 500),
                        description=f"{group.calls} calls, {tokens} {direction}put tokens on {day}{late}; "
                        f"call-log digest {digest}",
                    )
                )
            )
    return out


# Storage ---------------------------------------------------------------------------------


def size_bytes(path_or_bytes: Path | str | int) -> int:
    """A file's size, a folder's total (symlinks not followed), or a byte count as given."""
    if isinstance(path_or_bytes, bool):
        raise TypeError("size must be a path or a byte count, not a bool")
    if isinstance(path_or_bytes, int):
        if path_or_bytes < 0:
            raise ValueError(f"size {path_or_bytes} bytes is negative.")
        return path_or_bytes
    path = Path(path_or_bytes)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum((Path(root) / name).lstat().st_size for root, _, names in os.walk(path) for name in names)
    raise FileNotFoundError(
        f"{path}: nothing to meter there; pass an existing file or folder, or a byte count."
    )


def gb_months(n_bytes: int, period_start: date, period_end: date) -> Decimal:
    """GB-months of n_bytes kept over [period_start, period_end), prorated per calendar month."""
    if period_end <= period_start:
        raise ValueError(
            f"Storage period {period_start}..{period_end} is empty; period_end is exclusive and must be later."
        )
    months = Decimal(0)
    day = period_start
    while day < period_end:
        first = day.replace(day=1)
        next_first = (first + timedelta(days=32)).replace(day=1)
        segment_end = min(next_first, period_end)
        months += Decimal((segment_end - day).days) / Decimal((next_first - first).days)
        day = segment_end
    return Decimal(n_bytes) / BYTES_PER_GB * months


def book_storage(
    ledger: Ledger,
    path_or_bytes: Path | str | int,
    *,
    workflow: str,
    price_book: PriceBook,
    period_start: date,
    period_end: date,
    resource: str | None = None,
    category: str = Category.VERSIONING_STORAGE.value,
    model: str | None = None,
    source: str = "storage_meter",
) -> Entry:
    """Book keeping an artifact or dataset for a period: size x GB-month rate, prorated.

    One entry per resource and period: metering the same period twice books it once, and a
    different size for a period already booked is an IdempotencyConflict.
    """
    n_bytes = size_bytes(path_or_bytes)
    if resource is None:
        if isinstance(path_or_bytes, int):
            raise ValueError(
                "book_storage needs resource= (what is stored, e.g. 'dataset:ticket_routing@v3') "
                "when given a byte count."
            )
        resource = f"storage:{path_or_bytes}"
    resource = _fit(resource, 200)
    return ledger.append(
        NewEntry(
            idempotency_key=_fit(f"storage:{workflow}:{resource}:{period_start}:{period_end}", 200),
            occurred_at=datetime.combine(period_start, time(), timezone.utc),
            category=category,
            workflow=workflow,
            model=model,
            resource=resource,
            quantity=gb_months(n_bytes, period_start, period_end),
            unit="GB-month",
            unit_price=price_book.storage_gb_month_usd(period_start),
            currency=price_book.currency,
            source_kind="system",
            source=_fit(source, 500),
            description=f"{n_bytes} bytes kept {period_start}..{period_end} (end exclusive)",
        )
    )


# People and tooling ----------------------------------------------------------------------


def book_manual(
    ledger: Ledger,
    *,
    price_book: PriceBook,
    workflow: str,
    on: date,
    quantity: Decimal | str | int,
    person: str,
    role: str | None = None,
    tooling: str | None = None,
    unit_price_usd: Decimal | str | None = None,
    unit: str | None = None,
    resource: str | None = None,
    category: str | None = None,
    model: str | None = None,
    description: str = "",
    idempotency_key: str | None = None,
) -> Entry:
    """Book people's hours (role=), a tooling subscription (tooling=, in months) or an invoice
    line (unit_price_usd= with unit= and resource=), entered by `person`.

    Without an idempotency key the entry's content is its key: entering the very same line
    twice books it once. Give a key (an invoice or timesheet id) to book identical lines apart.
    """
    given = [
        name
        for name, value in (("role", role), ("tooling", tooling), ("unit_price_usd", unit_price_usd))
        if value is not None
    ]
    if len(given) != 1:
        raise ValueError(
            "Give exactly one of role= (people's hours), tooling= (months of a tool) or "
            f"unit_price_usd= (an invoice line); got {', '.join(given) or 'none'}."
        )
    if not person or not str(person).strip():
        raise ValueError("person= is required: who booked this entry (it is kept as the entry's source).")
    quantity = manual_quantity(quantity, "hours" if role else "months" if tooling else "units")
    if role is not None:
        unit_price = price_book.person_hour_usd(role, on)
        unit, resource, category = (
            unit or "hour",
            resource or f"people:{role}",
            category or Category.PEOPLE.value,
        )
    elif tooling is not None:
        unit_price = price_book.tooling_month_usd(tooling, on)
        unit, resource, category = (
            unit or "month",
            resource or f"tooling:{tooling}",
            category or Category.TOOLING.value,
        )
    else:
        if not unit or not resource or not category:
            raise ValueError("An invoice line (unit_price_usd=) also needs unit=, resource= and category=.")
        unit_price = unit_price_usd
    values = dict(
        occurred_at=datetime.combine(on, time(), timezone.utc),
        category=category,
        workflow=workflow,
        model=model,
        resource=resource,
        quantity=quantity,
        unit=unit,
        unit_price=unit_price,
        currency=price_book.currency,
        source_kind="person",
        source=str(person).strip(),
        description=description,
    )
    if idempotency_key is None:
        draft = NewEntry(idempotency_key="manual:draft", **values)
        content = json.dumps(draft.to_json() | {"idempotency_key": None}, sort_keys=True)
        idempotency_key = f"manual:{hashlib.sha256(content.encode()).hexdigest()[:40]}"
    return ledger.append(NewEntry(idempotency_key=idempotency_key, **values))


# The platform's own control plane --------------------------------------------------------


def book_tooling_months(
    ledger: Ledger,
    price_book: PriceBook,
    *,
    workflow: str,
    workflows: list[str],
    first_month: date,
    until: date,
) -> list[Entry]:
    """Book the workflow's share of every tooling_monthly line of the price book, for each calendar
    month from first_month to the month of `until`, both included.

    The rule, stated: the control plane (Airflow, MLflow, ...) serves every declared workflow alike,
    so each of the N declared workflows carries 1/N of each tool's month, booked at the start of
    the month (a month of a service is paid for when it begins). One entry per tool, month and
    workflow: running it again books nothing twice.
    """
    if workflow not in workflows:
        raise ValueError(f"workflow {workflow!r} is not among the declared workflows {workflows}.")
    share = Decimal(1) / Decimal(len(workflows))
    out, month = [], first_month.replace(day=1)
    while month <= until:
        for tool in sorted(price_book.tooling_monthly):
            out.append(
                ledger.append(
                    NewEntry(
                        idempotency_key=_fit(f"tooling:{tool}:{month:%Y-%m}:{workflow}", 200),
                        occurred_at=datetime.combine(month, time(), timezone.utc),
                        category=Category.TOOLING.value,
                        workflow=workflow,
                        resource=f"tooling:{tool}",
                        quantity=share,
                        unit="month",
                        unit_price=price_book.tooling_month_usd(tool, month),
                        currency=price_book.currency,
                        source_kind="system",
                        source="tooling_monthly",
                        description=f"{tool}, {month:%Y-%m}: 1/{len(workflows)} of the month, an equal share for each "
                        f"declared workflow",
                    )
                )
            )
        month = (month + timedelta(days=32)).replace(day=1)
    return out


# A manual line is one timesheet, one tool's months or one invoice line: beyond these it is a typo.
MAX_MANUAL_QUANTITY = Decimal(1_000_000)


def manual_quantity(raw, what: str) -> Decimal:
    """A positive, bounded quantity for a manual entry; only Ledger.reverse books a negative one."""
    if isinstance(raw, (float, bool)):
        raise TypeError(
            f"quantity={raw!r} is a {type(raw).__name__}; quantities are Decimal: pass Decimal('{raw}') "
            f"or '{raw}'."
        )
    try:
        quantity = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"quantity {raw!r} is not a number; give the {what} as e.g. 2.5.") from None
    if not quantity.is_finite():
        raise ValueError(f"quantity {raw!r} is not a finite number; give the {what} as e.g. 2.5.")
    if quantity <= 0:
        raise ValueError(
            f"quantity {raw} must be more than 0 {what}; to correct a booked entry, reverse it "
            "(mlops costs reverse ID --reason ...) and book the right amount."
        )
    if quantity < QUANTITY_PLACES:
        raise ValueError(
            f"quantity {raw} {what} is below the ledger's precision ({QUANTITY_PLACES}) and would "
            "be booked as 0; give a larger quantity."
        )
    if quantity > MAX_MANUAL_QUANTITY:
        raise ValueError(
            f"quantity {raw} {what} is more than {MAX_MANUAL_QUANTITY:,} in one entry; check the "
            "number, or split it into several entries."
        )
    return quantity


# Helpers ---------------------------------------------------------------------------------


def _fit(text: str, limit: int) -> str:
    """text, or when too long its head plus a hash of the whole, so distinct texts stay distinct."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:32]
    return f"{text[: limit - 34]}#{digest}"


def _utc(value) -> datetime:
    if isinstance(value, datetime):
        ts = value
    else:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if ts.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone")
    return ts.astimezone(timezone.utc)


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
