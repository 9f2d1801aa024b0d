"""Cost capture: task runs, the spool, frontier spend, storage, manual entries, the listener plugin."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import socket
import sys
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest
import sqlalchemy.exc

from ml.costs import capture
from ml.costs.capture import (
    book_frontier_calls,
    book_manual,
    book_storage,
    book_task_run,
    category_for,
    duration_hours,
    flush_spool,
    gb_months,
    pending,
    resource_class_for,
    workflow_for,
)
from ml.costs.ledger import IdempotencyConflict, Ledger, LedgerError, amount_of
from ml.costs.pricebook import PriceBook, PriceBookError
from ml.demo_data import generate

REPO_ROOT = Path(__file__).resolve().parents[2]
PRICE_BOOK_FILE = REPO_ROOT / "infra" / "price_book.yaml"
START = datetime(2026, 8, 3, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.load(PRICE_BOOK_FILE)


@pytest.fixture(scope="module")
def migrated_file(tmp_path_factory) -> Path:
    """An empty, migrated ledger; each test copies it instead of migrating its own."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    Ledger(f"sqlite:///{path}").close()
    return path


@pytest.fixture
def ledger_url(tmp_path, migrated_file) -> str:
    shutil.copy(migrated_file, tmp_path / "ledger.db")
    return f"sqlite:///{tmp_path / 'ledger.db'}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def task_run(**overrides) -> dict:
    values = dict(
        dag_id="distill__ticket_routing",
        run_id="scheduled__2026-08-03",
        task_id="train_student",
        try_number=1,
        map_index=-1,
        queue="gpu",
        pool="default_pool",
        resource=None,
        started_at=START,
        ended_at=START + timedelta(minutes=90),
        workflow="ticket_routing",
        category="training_compute",
        price_book=PRICE_BOOK_FILE,
    )
    return values | overrides


# What a task run is ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "dag_id, task_id, kwargs, expected",
    [
        ("distill__tickets", "train_student", {}, "training_compute"),
        ("distill__tickets", "prepare_targets", {}, "training_compute"),
        ("distill__tickets", "evaluate_and_gate", {}, "evaluation"),
        ("distill__tickets", "register_challenger", {}, "versioning_storage"),
        ("distill__tickets", "promote", {}, "versioning_storage"),
        ("distill__tickets", "group.evaluate", {}, "evaluation"),  # inside a TaskGroup
        ("ingest_validate__tickets", "ingest_batch", {}, "data_curation"),
        ("ingest_validate__tickets", "list_batches", {}, "data_curation"),  # by the DAG
        ("watch_upstream__tickets", "fingerprint", {}, "keeping_current"),
        ("cost_report__tickets", "render", {}, "tooling"),
        ("something_else", "whatever", {}, "tooling"),
        ("distill__tickets", "trainer_x", {}, "training_compute"),  # "trainer" is not "train_": by the DAG
        # A re-distillation run books all of its compute as the cost of keeping current ...
        ("distill__tickets", "train_student", {"redistillation": True}, "keeping_current"),
        # ... unless the task says otherwise.
        (
            "distill__tickets",
            "train_student",
            {"redistillation": True, "declared": "evaluation"},
            "evaluation",
        ),
    ],
)
def test_category_for(dag_id, task_id, kwargs, expected):
    assert category_for(dag_id, task_id, **kwargs) == expected


def test_a_declared_category_must_exist():
    with pytest.raises(ValueError, match="cost_category='marketing'"):
        category_for("distill__x", "train", declared="marketing")


@pytest.mark.parametrize(
    "names, expected",
    [
        (["tickets.upstream"], True),
        (["tickets.dataset"], False),
        ([], False),
        (None, False),
        (["tickets.dataset", "tickets.upstream"], True),
    ],
)
def test_is_redistillation(names, expected):
    assert capture.is_redistillation(names) is expected


@pytest.mark.parametrize(
    "dag_id, params, tags, expected",
    [
        ("distill__tickets", {"workflow": "from_params"}, ["workflow:from_tag"], "from_params"),
        ("distill__tickets", {}, ["mlops", "workflow:from_tag"], "from_tag"),
        ("distill__tickets", None, None, "tickets"),
        ("cost_report", None, ["mlops"], "platform"),
    ],
)
def test_workflow_for(dag_id, params, tags, expected):
    assert workflow_for(dag_id, params, tags) == expected


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"resource": "gpu_h100", "pool": "gpu_a10g", "queue": "gpu"}, "gpu_h100"),  # declared wins
        ({"resource": None, "pool": "gpu_l4", "queue": "gpu"}, "gpu_l4"),  # a pool named after a class
        ({"resource": None, "pool": "default_pool", "queue": "gpu"}, "gpu_a10g"),  # the book's queues:
        ({"resource": None, "pool": "default_pool", "queue": "default"}, "cpu"),
        ({"resource": None, "pool": None, "queue": "gpu_t4"}, "gpu_t4"),  # a queue named after a class
        ({"resource": None, "pool": None, "queue": "etl"}, "cpu"),
        ({"resource": None, "pool": None, "queue": None}, "cpu"),
    ],
)
def test_resource_class_for(book, kwargs, expected):
    assert resource_class_for(book, **kwargs) == expected


@pytest.mark.parametrize(
    "seconds, hours",
    [
        (timedelta(hours=1), "1"),
        (timedelta(minutes=90), "1.5"),
        (timedelta(seconds=1), "0.000277777"),
        (timedelta(days=1, microseconds=36), "24.00000001"),
        (timedelta(seconds=-5), "0"),
    ],
)
def test_duration_hours_is_exact(seconds, hours):
    assert duration_hours(START, START + seconds).quantize(Decimal("1e-9"), rounding="ROUND_DOWN") == Decimal(
        hours
    )


# Booking task runs -----------------------------------------------------------------------


def test_a_task_try_is_booked_as_hours_times_the_rate_of_its_class(tmp_path, ledger_url):
    book_task_run(ledger_url, tmp_path / "spool", **task_run())
    with Ledger(ledger_url) as ledger:
        [entry] = ledger.entries()
    assert (entry.resource, entry.unit, entry.quantity, entry.unit_price) == (
        "gpu_a10g",
        "hour",
        Decimal("1.5"),
        Decimal("1.006"),
    )
    assert entry.amount == Decimal("1.509")
    assert (entry.category, entry.workflow, entry.source_kind) == (
        "training_compute",
        "ticket_routing",
        "task",
    )
    assert entry.source == "distill__ticket_routing/scheduled__2026-08-03/train_student/-1/1"
    assert entry.occurred_at == START
    assert pending(tmp_path / "spool") == []


# Price what ran: the device the task reports, the queue only as a fallback --------------------


@pytest.mark.parametrize(
    "device, device_name, expected_class, expected_rate",
    [
        # The seed's bug: train_student on the `gpu` queue found no GPU, ran on the CPU, and was
        # booked as 1.5 A10G hours ($1.509). It is 1.5 CPU hours: 1.5 x $0.1008 = $0.1512.
        ("cpu", None, "cpu", Decimal("0.1008")),
        ("cuda", "NVIDIA A100-SXM4-40GB", "gpu_a100", Decimal("2.74")),
        ("cuda", "NVIDIA H200", "gpu_a10g", Decimal("1.006")),  # not in the book's devices: the queue's class
        (None, None, "gpu_a10g", Decimal("1.006")),  # nothing reported: the queue's class
    ],
)
def test_a_try_is_priced_by_the_device_it_ran_on(
    tmp_path, ledger_url, device, device_name, expected_class, expected_rate
):
    book_task_run(ledger_url, tmp_path / "spool", **task_run(device=device, device_name=device_name))
    with Ledger(ledger_url) as ledger:
        [entry] = ledger.entries()
    assert (entry.resource, entry.unit_price, entry.amount) == (
        expected_class,
        expected_rate,
        Decimal("1.5") * expected_rate,
    )
    if device:
        assert (device_name or device) in entry.description


def test_the_task_reports_its_device_and_the_listener_reads_it(tmp_path, monkeypatch):
    capture.report_device(tmp_path, "cpu")  # outside Airflow: no try to name, nothing written
    assert not (tmp_path / capture.DEVICE_REPORTS_DIR).exists()
    for key, value in {
        "DAG_ID": "distill__t",
        "DAG_RUN_ID": "manual__1",
        "TASK_ID": "train_student",
        "TRY_NUMBER": "2",
    }.items():
        monkeypatch.setenv(f"AIRFLOW_CTX_{key}", value)
    capture.report_device(tmp_path, "cuda", "NVIDIA A10G")
    assert capture.reported_device(tmp_path, "distill__t", "manual__1", "train_student", 2) == {
        "device": "cuda",
        "device_name": "NVIDIA A10G",
    }
    assert (
        capture.reported_device(tmp_path, "distill__t", "manual__1", "train_student", 1) is None
    )  # another try


def test_a_device_priced_as_an_unknown_class_is_refused(tmp_path):
    text = PRICE_BOOK_FILE.read_text().replace("  A10G: gpu_a10g", "  A10G: gpu_a10", 1)
    (tmp_path / "book.yaml").write_text(text)
    with pytest.raises(PriceBookError, match="devices.A10G names 'gpu_a10'"):
        PriceBook.load(tmp_path / "book.yaml")


def test_every_retry_is_booked_once_and_a_redelivery_is_not_doubled(tmp_path, ledger_url):
    spool = tmp_path / "spool"
    for run in (
        task_run(try_number=1),
        task_run(try_number=1),
        task_run(try_number=2),
        task_run(try_number=2, map_index=3),
        task_run(try_number=2, map_index=3),
    ):
        book_task_run(ledger_url, spool, **run)
    # The same try reported again with a different end (say, by the API server) is not booked twice.
    book_task_run(ledger_url, spool, **task_run(try_number=1, ended_at=START + timedelta(hours=5)))
    with Ledger(ledger_url) as ledger:
        keys = [e.idempotency_key.rsplit("/", 2)[1:] for e in ledger.entries()]
        assert keys == [["-1", "1"], ["-1", "2"], ["3", "2"]]
        assert ledger.total() == 3 * Decimal("1.509")


def test_past_runs_keep_the_price_of_their_day(tmp_path, ledger_url):
    path = tmp_path / "book.yaml"
    path.write_text(
        PRICE_BOOK_FILE.read_text().replace(
            'cpu:\n    - {from: 2026-01-01, usd: "0.1008"}',
            'cpu:\n    - {from: 2026-01-01, usd: "0.1008"}\n    - {from: 2026-08-04, usd: "0.2000"}',
        )
    )
    for day in (3, 4):
        started = datetime(2026, 8, day, 23, 0, tzinfo=timezone.utc)
        book_task_run(
            ledger_url,
            tmp_path / "spool",
            **task_run(
                run_id=f"scheduled__2026-08-0{day}",
                queue="default",
                started_at=started,
                ended_at=started + timedelta(hours=2),
                price_book=path,
            ),
        )
    with Ledger(ledger_url) as ledger:
        # The price of the day the try started (UTC), even when it ran past midnight.
        assert [e.unit_price for e in ledger.entries()] == [Decimal("0.1008"), Decimal("0.2")]


def unreachable_urls(tmp_path) -> list[str]:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the ledger's folder should be")
    return [f"sqlite:///{blocker / 'ledger.db'}", f"postgresql://postgres@127.0.0.1:{closed_port()}/ledger"]


@pytest.mark.parametrize("which", [0, 1], ids=["sqlite-in-a-file", "postgresql-closed-port"])
def test_an_unreachable_ledger_spools_and_a_later_flush_books_once(tmp_path, ledger_url, which):
    spool = tmp_path / "spool"
    unreachable = unreachable_urls(tmp_path)[which]
    for run in (task_run(try_number=1), task_run(try_number=1), task_run(try_number=2)):
        book_task_run(unreachable, spool, **run)  # never raises
    assert len(pending(spool)) == 2  # the re-delivered try is one file
    assert not list(spool.glob(".*"))  # no temporary file left behind

    with pytest.raises(
        (OSError, sqlalchemy.exc.DBAPIError)
    ):  # a file where a folder should be; a closed port
        flush_spool(unreachable, spool)  # a flush says so when the ledger is still down
    assert len(pending(spool)) == 2

    assert flush_spool(ledger_url, spool) == 2
    assert flush_spool(ledger_url, spool) == 0
    with Ledger(ledger_url) as ledger:
        assert len(ledger.entries()) == 2 and ledger.total() == 2 * Decimal("1.509")


def test_a_file_flushed_twice_is_booked_once(tmp_path, ledger_url):
    # As if two flushes raced: both read the file before either removed it.
    spool = tmp_path / "spool"
    book_task_run(unreachable_urls(tmp_path)[0], spool, **task_run())
    [path] = pending(spool)
    copy = path.read_text()
    assert flush_spool(ledger_url, spool) == 1
    path.write_text(copy)
    assert flush_spool(ledger_url, spool) == 1  # found already booked; the file goes
    with Ledger(ledger_url) as ledger:
        assert len(ledger.entries()) == 1
    assert pending(spool) == []


def test_the_next_successful_booking_flushes_the_spool(tmp_path, ledger_url):
    spool = tmp_path / "spool"
    book_task_run(unreachable_urls(tmp_path)[0], spool, **task_run(task_id="train_student"))
    book_task_run(ledger_url, spool, **task_run(task_id="evaluate_and_gate", category="evaluation"))
    with Ledger(ledger_url) as ledger:
        assert sorted(e.category for e in ledger.entries()) == ["evaluation", "training_compute"]
    assert pending(spool) == []


def test_a_run_that_cannot_be_priced_is_kept_and_priced_at_flush(tmp_path, ledger_url):
    spool = tmp_path / "spool"
    book_task_run(ledger_url, spool, **task_run(resource="gpu_b200"))  # not in the price book
    book_task_run(ledger_url, spool, **task_run(price_book=tmp_path / "missing.yaml", try_number=2))
    assert len(pending(spool)) == 2
    (tmp_path / "missing.yaml").write_text(PRICE_BOOK_FILE.read_text())  # the book is back
    assert flush_spool(ledger_url, spool) == 1  # gpu_b200 still has no price: it waits
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(
        PRICE_BOOK_FILE.read_text().replace(
            "compute_hourly:\n", 'compute_hourly:\n  gpu_b200:\n    - {from: 2026-01-01, usd: "9.00"}\n'
        )
    )
    assert flush_spool(ledger_url, spool, price_book=fixed) == 1
    with Ledger(ledger_url) as ledger:
        assert sorted(e.resource for e in ledger.entries()) == ["gpu_a10g", "gpu_b200"]
        assert ledger.total() == Decimal("1.509") + Decimal("13.5")


def test_unbookable_spool_files_are_set_aside_not_retried_forever(tmp_path, ledger_url):
    spool = tmp_path / "spool"
    book_task_run(unreachable_urls(tmp_path)[0], spool, **task_run())
    [spooled] = pending(spool)
    record = json.loads(spooled.read_text())
    # The same key now names another cost in the ledger: a conflict, kept for a person to decide.
    with Ledger(ledger_url) as ledger:
        from ml.costs.ledger import NewEntry

        ledger.append(NewEntry.from_json(record["entry"] | {"quantity": "2"}))
    (spool / "garbage.json").write_text("{not json")
    assert flush_spool(ledger_url, spool) == 0
    assert pending(spool) == []
    assert [p.name for p in (spool / "conflicts").iterdir()] == [spooled.name]
    assert [p.name for p in (spool / "rejected").iterdir()] == ["garbage.json"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"started_at": "yesterday"},
        {"try_number": "first"},
        {"workflow": ""},
        {"category": "marketing"},
        {"ended_at": None, "started_at": None},
    ],
)
def test_capture_never_raises(tmp_path, ledger_url, overrides, caplog):
    caplog.set_level(logging.INFO, logger="ml.costs.capture")
    book_task_run(ledger_url, tmp_path / "spool", **task_run(**overrides))
    assert "Cost capture" in caplog.text
    with Ledger(ledger_url) as ledger:
        assert ledger.entries() == []


def test_capture_never_raises_even_when_it_cannot_spool(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    book_task_run(unreachable_urls(tmp_path)[0], blocker / "spool", **task_run())
    assert "the unbooked record is" in caplog.text and "train_student" in caplog.text


# Frontier API spend ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def call_log(tmp_path_factory) -> list[dict]:
    summary = generate(
        tmp_path_factory.mktemp("demo"), n_calls=600, n_gold=0, days=10, start=date(2026, 8, 1)
    )
    with open(summary["call_log_path"], encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def expected_spend(rows, book) -> Decimal:
    price_in, price_out = book.frontier_token_prices("frontier-large", date(2026, 8, 1))
    ok = [r for r in rows if r["status"] == "ok"]
    return (
        sum(Decimal(r["tokens_in"]) for r in ok) * price_in
        + sum(Decimal(r["tokens_out"]) for r in ok) * price_out
    ) / 10**6


def test_frontier_spend_is_tokens_times_the_price_book(tmp_path, ledger_url, call_log, book):
    rows = [r | {"cost_usd": 1000.0} for r in call_log]  # what the client reported is never used
    with Ledger(ledger_url) as ledger:
        entries = book_frontier_calls(ledger, rows, book, "ticket_routing")
        assert {e.category for e in entries} == {"frontier_api"}
        assert {e.unit for e in entries} == {"1M tokens in", "1M tokens out"}
        assert len({e.occurred_at.date() for e in entries}) == 10
        assert abs(ledger.total() - expected_spend(call_log, book)) <= Decimal("1e-8") * len(entries)
        # The demo's own cost_usd came from the same list prices.
        reported = sum(Decimal(str(r["cost_usd"])) for r in call_log)
        assert abs(ledger.total() - reported) < Decimal("0.0001")
        # Booking the same log again changes nothing.
        again = book_frontier_calls(ledger, call_log, book, "ticket_routing")
        assert [e.id for e in again] == [e.id for e in entries]
        assert len(ledger.entries()) == len(entries)


def test_late_calls_book_only_the_difference(tmp_path, ledger_url, call_log, book):
    first_days = [r for r in call_log if r["ts"] < "2026-08-06"]
    with Ledger(ledger_url) as ledger:
        book_frontier_calls(ledger, first_days[: len(first_days) // 2], book, "ticket_routing")
        book_frontier_calls(ledger, first_days, book, "ticket_routing")  # the rest of those days arrives
        book_frontier_calls(ledger, call_log, book, "ticket_routing")
        assert abs(ledger.total() - expected_spend(call_log, book)) <= Decimal("1e-6")
        assert any("late calls" in e.description for e in ledger.entries())
        with pytest.raises(LedgerError, match="the log lost rows"):
            book_frontier_calls(ledger, call_log[5:], book, "ticket_routing")


def test_an_open_day_waits_and_unbillable_calls_are_free(ledger_url, book):
    rows = [
        {
            "call_id": "a",
            "ts": "2026-08-01T10:00:00Z",
            "model": "frontier-large",
            "tokens_in": 1_000_000,
            "tokens_out": 0,
            "status": "ok",
        },
        {
            "call_id": "b",
            "ts": "2026-08-01T11:00:00Z",
            "model": "frontier-mini",
            "tokens_in": 500_000,
            "tokens_out": 250_000,
        },
        {
            "call_id": "c",
            "ts": "2026-08-01T12:00:00Z",
            "model": "frontier-large",
            "tokens_in": 9_999,
            "tokens_out": 0,
            "status": "error",
        },
        {
            "call_id": "d",
            "ts": "2026-08-02T00:00:00Z",
            "model": "frontier-large",
            "tokens_in": 7,
            "tokens_out": 7,
            "status": "ok",
        },
    ]
    with Ledger(ledger_url) as ledger:
        book_frontier_calls(ledger, rows, book, "tickets", before=date(2026, 8, 2))
        assert ledger.totals(("resource", "unit")) == {
            ("frontier:frontier-large", "1M tokens in"): Decimal("3.00"),
            ("frontier:frontier-mini", "1M tokens in"): Decimal("0.20"),
            ("frontier:frontier-mini", "1M tokens out"): Decimal("0.40"),
        }


@pytest.mark.parametrize(
    "row, error, message",
    [
        (
            {"ts": "2026-08-01T10:00:00Z", "model": "gpt-9", "tokens_in": 1, "tokens_out": 1},
            PriceBookError,
            "gpt-9",
        ),
        (
            {"ts": "2026-08-01T10:00:00", "model": "frontier-large", "tokens_in": 1, "tokens_out": 1},
            ValueError,
            "timezone",
        ),
        ({"ts": "2026-08-01T10:00:00Z", "model": "frontier-large", "tokens_in": 1}, ValueError, "tokens_out"),
        (
            {"ts": "2026-08-01T10:00:00Z", "model": "frontier-large", "tokens_in": -1, "tokens_out": 1},
            ValueError,
            "negative",
        ),
    ],
)
def test_bad_call_log_rows_are_refused(ledger_url, book, row, error, message):
    with Ledger(ledger_url) as ledger:
        with pytest.raises(error, match=message):
            book_frontier_calls(ledger, [row], book, "tickets")
        assert ledger.entries() == []


# Storage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "start, end, months",
    [
        (date(2026, 8, 1), date(2026, 9, 1), "1"),
        (date(2026, 2, 1), date(2026, 3, 1), "1"),  # a short month is still one month
        (date(2026, 9, 1), date(2026, 9, 16), "0.5"),
        (date(2026, 1, 15), date(2026, 2, 15), str(Decimal(17) / 31 + Decimal(14) / 28)),
        (date(2026, 1, 1), date(2027, 1, 1), "12"),
    ],
)
def test_gb_months_prorate_by_calendar_month(start, end, months):
    assert gb_months(2**30, start, end) == Decimal(months)


def test_storage_is_size_times_the_gb_month_rate(tmp_path, ledger_url, book):
    folder = tmp_path / "dataset"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.parquet").write_bytes(b"x" * 1000)
    (folder / "sub" / "b.parquet").write_bytes(b"y" * 24)
    with Ledger(ledger_url) as ledger:
        first = book_storage(
            ledger,
            folder,
            workflow="tickets",
            price_book=book,
            period_start=date(2026, 8, 1),
            period_end=date(2026, 9, 1),
        )
        assert first.quantity == (Decimal(1024) / 2**30).quantize(Decimal("1e-9"))
        assert (first.unit, first.unit_price, first.category) == (
            "GB-month",
            Decimal("0.023"),
            "versioning_storage",
        )
        # Metering the same period again books nothing new; a different size for it is a conflict.
        assert (
            book_storage(
                ledger,
                folder,
                workflow="tickets",
                price_book=book,
                period_start=date(2026, 8, 1),
                period_end=date(2026, 9, 1),
            )
            == first
        )
        (folder / "c.parquet").write_bytes(b"z")
        with pytest.raises(IdempotencyConflict):
            book_storage(
                ledger,
                folder,
                workflow="tickets",
                price_book=book,
                period_start=date(2026, 8, 1),
                period_end=date(2026, 9, 1),
            )
        model = book_storage(
            ledger,
            50 * 2**30,
            workflow="tickets",
            price_book=book,
            resource="model:tickets_student@3",
            model="tickets_student",
            period_start=date(2026, 8, 1),
            period_end=date(2026, 8, 16),
        )
        assert model.quantity == (Decimal(50) * 15 / 31).quantize(Decimal("1e-9"))  # 15 of August's 31 days
        assert model.amount == amount_of(model.quantity, Decimal("0.023"))
        assert (model.model, model.resource) == ("tickets_student", "model:tickets_student@3")


@pytest.mark.parametrize(
    "what, kwargs, error, message",
    [
        (1024, {}, ValueError, "resource="),
        ("/no/such/path", {}, FileNotFoundError, "nothing to meter"),
        (-1, {"resource": "x"}, ValueError, "negative"),
        (1024, {"resource": "x", "period_end": date(2026, 8, 1)}, ValueError, "empty"),
    ],
)
def test_storage_mistakes_are_clear(ledger_url, book, what, kwargs, error, message):
    with Ledger(ledger_url) as ledger:
        with pytest.raises(error, match=message):
            book_storage(
                ledger,
                what,
                workflow="tickets",
                price_book=book,
                **({"period_start": date(2026, 8, 1), "period_end": date(2026, 9, 1)} | kwargs),
            )


# People and tooling ----------------------------------------------------------------------


def test_manual_entries_for_people_tooling_and_invoices(ledger_url, book):
    with Ledger(ledger_url) as ledger:
        hours = book_manual(
            ledger,
            price_book=book,
            workflow="tickets",
            on=date(2026, 8, 3),
            quantity="6",
            person="Ana",
            role="ml_engineer",
            description="error analysis of the challenger",
        )
        assert (hours.category, hours.unit, hours.unit_price, hours.amount) == (
            "people",
            "hour",
            Decimal("110.64"),
            Decimal("663.84"),
        )
        assert (hours.source_kind, hours.source, hours.resource) == ("person", "Ana", "people:ml_engineer")
        # Entering the very same line again books it once; a timesheet id keeps identical lines apart.
        again = book_manual(
            ledger,
            price_book=book,
            workflow="tickets",
            on=date(2026, 8, 3),
            quantity="6",
            person="Ana",
            role="ml_engineer",
            description="error analysis of the challenger",
        )
        assert again == hours
        book_manual(
            ledger,
            price_book=book,
            workflow="tickets",
            on=date(2026, 8, 3),
            quantity="6",
            person="Ana",
            role="ml_engineer",
            description="error analysis of the challenger",
            idempotency_key="timesheet-812",
        )
        tool = book_manual(
            ledger,
            price_book=book,
            workflow="platform",
            on=date(2026, 8, 1),
            quantity="1",
            person="Ben",
            tooling="mlflow_server",
        )
        assert (tool.category, tool.unit, tool.amount) == ("tooling", "month", Decimal("73.58"))
        invoice = book_manual(
            ledger,
            price_book=book,
            workflow="tickets",
            on=date(2026, 8, 20),
            quantity="1",
            person="Ben",
            unit_price_usd="1200.00",
            unit="invoice",
            resource="labelling-vendor",
            category="data_curation",
        )
        assert invoice.amount == Decimal("1200")
        assert ledger.total() == Decimal("663.84") * 2 + Decimal("73.58") + Decimal("1200")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"role": "ml_engineer", "tooling": "mlflow_server"}, ValueError, "exactly one"),
        ({}, ValueError, "exactly one"),
        ({"role": "ml_engineer", "person": " "}, ValueError, "person="),
        ({"unit_price_usd": "10"}, ValueError, "unit=, resource= and category="),
        ({"role": "cfo"}, PriceBookError, "people_hourly"),
        ({"role": "ml_engineer", "quantity": 1.5}, TypeError, "Decimal"),
    ],
)
def test_manual_mistakes_are_clear(ledger_url, book, kwargs, error, message):
    values = dict(price_book=book, workflow="tickets", on=date(2026, 8, 3), quantity="1", person="Ana")
    with Ledger(ledger_url) as ledger:
        with pytest.raises(error, match=message):
            book_manual(ledger, **(values | kwargs))


# The Airflow listener plugin ---------------------------------------------------------------


@pytest.fixture(scope="module")
def listener(tmp_path_factory):
    """plugins/cost_listener.py, loaded as Airflow loads it, registered against Airflow 3.3's own spec."""
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
    from airflow.sdk._shared.listeners.listener import ListenerManager
    from airflow.sdk._shared.listeners.spec import taskinstance

    spec = importlib.util.spec_from_file_location("cost_listener", REPO_ROOT / "plugins" / "cost_listener.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["cost_listener"] = module
    spec.loader.exec_module(module)
    assert module.CostListenerPlugin.listeners == [module]
    manager = ListenerManager()
    manager.add_hookspecs(taskinstance)
    manager.add_listener(module)  # pluggy checks the hook signatures against the spec here
    yield manager
    sys.modules.pop("cost_listener", None)


def fake_task_instance(**overrides):
    """The attributes a worker's RuntimeTaskInstance carries that the listener reads."""
    dag = SimpleNamespace(params={"workflow": "ticket_routing"}, tags=["mlops"])
    task = SimpleNamespace(dag=dag, queue="gpu", pool="default_pool", executor_config={})
    values = dict(
        dag_id="distill__ticket_routing",
        run_id="manual__1",
        task_id="train_student",
        try_number=1,
        map_index=-1,
        queue="default",
        start_date=START,
        end_date=START + timedelta(hours=2),
        task=task,
    )
    return SimpleNamespace(**(values | overrides))


def test_the_listener_books_successes_and_failed_tries(listener, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path))
    declared = fake_task_instance(task_id="custom", try_number=2)
    declared.task.executor_config = {"resource_class": "gpu_h100", "cost_category": "evaluation"}
    listener.hook.on_task_instance_success(previous_state=None, task_instance=fake_task_instance())
    listener.hook.on_task_instance_failed(
        previous_state=None, task_instance=declared, error=RuntimeError("x")
    )
    listener.hook.on_task_instance_failed(
        previous_state=None, task_instance=object(), error=None
    )  # never raises
    typo = fake_task_instance(task_id="evaluate_and_gate")
    typo.task.executor_config = {"cost_category": "evalution"}
    listener.hook.on_task_instance_success(previous_state=None, task_instance=typo)  # booked by its name
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        entries = ledger.entries()
    assert [(e.workflow, e.category, e.resource, e.amount) for e in entries] == [
        ("ticket_routing", "training_compute", "gpu_a10g", Decimal("2.012")),
        ("ticket_routing", "evaluation", "gpu_h100", Decimal("13.76")),
        ("ticket_routing", "evaluation", "gpu_a10g", Decimal("2.012")),
    ]


def test_the_listener_spools_when_the_ledger_is_down(listener, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("MLOPS_LEDGER_URL", f"postgresql://postgres@127.0.0.1:{closed_port()}/ledger")
    listener.hook.on_task_instance_success(previous_state=None, task_instance=fake_task_instance())
    assert len(pending(tmp_path / "spool")) == 1


# The control plane, booked every month ---------------------------------------------------------


def test_tooling_is_booked_every_month_in_equal_shares(ledger_url, book):
    with Ledger(ledger_url) as ledger:
        booked = capture.book_tooling_months(
            ledger,
            book,
            workflow="b",
            workflows=["a", "b", "c"],
            first_month=date(2026, 10, 17),
            until=date(2026, 12, 1),
        )
        again = capture.book_tooling_months(
            ledger,
            book,
            workflow="b",
            workflows=["a", "b", "c"],
            first_month=date(2026, 10, 17),
            until=date(2026, 12, 1),
        )
        assert [e.id for e in again] == [e.id for e in booked] and len(ledger.entries()) == 6
        months = ledger.totals(("month",))
    # Each month: (121.03 + 73.58) / 3 = 64.87 for each of the three workflows (1/3 = 0.333333333 of a month).
    assert {m: v.quantize(Decimal("0.01")) for m, v in months.items()} == {
        "2026-10": Decimal("64.87"),
        "2026-11": Decimal("64.87"),
        "2026-12": Decimal("64.87"),
    }
    assert {e.resource for e in booked} == {"tooling:airflow_control_plane", "tooling:mlflow_server"}
    assert all(e.category == "tooling" and e.occurred_at.day == 1 for e in booked)
