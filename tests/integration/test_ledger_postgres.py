"""The cost ledger on a real PostgreSQL: concurrency, append-only triggers, exact NUMERIC money.

Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth, database `test`), or
TEST_POSTGRES_URL pointing at another server. Each test run creates its own database and drops it.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from ml.costs.capture import book_task_run, flush_spool, pending
from ml.costs.ledger import VERSION_TABLE, IdempotencyConflict, Ledger, NewEntry, metadata

pytestmark = pytest.mark.integration

ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
AUG = datetime(2026, 8, 3, 9, 30, tzinfo=timezone.utc)


def _admin_connection():
    psycopg2 = pytest.importorskip(
        "psycopg2", reason="psycopg2-binary is a test extra: pip install -e '.[test]'"
    )
    from sqlalchemy.engine import make_url

    url = make_url(ADMIN_URL)
    try:
        conn = psycopg2.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database,
            connect_timeout=3,
        )
    except psycopg2.OperationalError as exc:
        pytest.skip(
            f"PostgreSQL is not reachable at {url.render_as_string(hide_password=True)} "
            f"({str(exc).strip().splitlines()[0]}); start it or set TEST_POSTGRES_URL."
        )
    conn.autocommit = True
    return conn, url


@pytest.fixture(scope="module")
def pg_url():
    """A fresh database for this run: postgresql://.../ledger_test_<random>; dropped afterwards."""
    admin, url = _admin_connection()
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def ledger(pg_url):
    with Ledger(pg_url) as ledger:
        yield ledger


def new(key: str, **overrides) -> NewEntry:
    values = dict(
        idempotency_key=key,
        occurred_at=AUG,
        category="training_compute",
        workflow="ticket_routing",
        resource="gpu_a10g",
        quantity=Decimal("1.5"),
        unit="hour",
        unit_price=Decimal("1.006"),
        source_kind="task",
        source="distill__ticket_routing/run1/train_student/-1/1",
    )
    return NewEntry(**(values | overrides))


# 8 concurrent writers (the same scenario as the SQLite test in tests/unit/test_ledger.py) -----

WRITERS, OWN_ENTRIES, SHARED_ENTRIES = 8, 40, 10


def writer_entries(writer: int) -> list[NewEntry]:
    own = [
        new(
            f"w{writer}-{i}",
            quantity=Decimal(i + 1) / 7,
            unit_price=Decimal("0.1008"),
            occurred_at=AUG + timedelta(minutes=i),
        )
        for i in range(OWN_ENTRIES)
    ]
    shared = [new(f"shared-{i}", quantity=Decimal(i + 1)) for i in range(SHARED_ENTRIES)]
    return shared + own + shared[::-1]


def concurrent_writer(url: str, writer: int, barrier) -> None:
    barrier.wait()  # all eight migrate the brand-new database and append at once
    with Ledger(url) as ledger:
        for entry in writer_entries(writer):
            ledger.append(entry)


def test_eight_concurrent_writers_book_every_entry_once(pg_url):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WRITERS)
    processes = [context.Process(target=concurrent_writer, args=(pg_url, w, barrier)) for w in range(WRITERS)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * WRITERS

    expected = {e.idempotency_key: e for w in range(WRITERS) for e in writer_entries(w)}
    with Ledger(pg_url) as ledger:
        entries = ledger.entries()
        keys = [e.idempotency_key for e in entries]
        assert len(keys) == len(set(keys)) == WRITERS * OWN_ENTRIES + SHARED_ENTRIES
        assert set(keys) == set(expected)
        assert ledger.total() == sum(e.amount for e in expected.values())
        assert all(e.amount == expected[e.idempotency_key].amount for e in entries)


# Append-only, in the database ------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE ledger_entries SET amount = 0",
        "UPDATE ledger_entries SET description = 'edited' WHERE idempotency_key = 'refuse-me'",
        "DELETE FROM ledger_entries WHERE idempotency_key = 'refuse-me'",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",  # row triggers do not see TRUNCATE; a statement trigger does
        # PostgreSQL's upsert is an UPDATE, refused as one (SQLite's REPLACE needed migration 0002).
        "INSERT INTO ledger_entries SELECT * FROM ledger_entries WHERE idempotency_key = 'refuse-me' "
        "ON CONFLICT (id) DO UPDATE SET amount = 0",
    ],
)
def test_the_database_refuses_update_delete_and_truncate(ledger, pg_url, sql):
    import psycopg2

    entry = ledger.append(new("refuse-me"))
    raw = psycopg2.connect(
        pg_url.replace("postgresql+psycopg2://", "postgresql://")
    )  # any client, not the Ledger
    try:
        with pytest.raises(psycopg2.Error, match="ledger is append-only"):
            with raw.cursor() as cur:
                cur.execute(sql)
        raw.rollback()
    finally:
        raw.close()
    assert ledger.get(entry.id) == entry
    assert ledger.verify() == []  # every entry hashes to what was booked, on PostgreSQL's types too


# The rest of the contract, on PostgreSQL's types ----------------------------------------------


def test_numeric_money_round_trips_exactly_and_sums_exactly(ledger):
    prices = ["0.00000001", "9999999.99999999", "0.1", "1234567.89012345"]
    booked = [
        ledger.append(new(f"money-{i}", quantity="1", unit_price=p, workflow="money"))
        for i, p in enumerate(prices)
    ]
    assert [ledger.get(e.id).amount for e in booked] == [Decimal(p) for p in prices]
    assert ledger.total(workflow="money") == sum(Decimal(p) for p in prices)


def test_idempotency_conflict_and_reversal(ledger):
    first = ledger.append(new("idem", workflow="idem"))
    assert ledger.append(new("idem", workflow="idem")) == first
    with pytest.raises(IdempotencyConflict, match="'idem'"):
        ledger.append(new("idem", workflow="idem", quantity="2"))
    reversal = ledger.reverse(first.id, reason="wrong queue", source="ana")
    assert reversal.amount == -first.amount
    assert ledger.total(workflow="idem") == 0
    assert ledger.totals(("month",), workflow="idem") == {"2026-08": Decimal(0)}


def test_times_come_back_in_utc(ledger):
    local = datetime(2026, 8, 3, 1, 0, tzinfo=timezone(timedelta(hours=-7)))
    stored = ledger.get(ledger.append(new("tz", occurred_at=local, workflow="tz")).id)
    assert stored.occurred_at == local and stored.occurred_at.tzinfo == timezone.utc


def test_the_migrated_schema_matches_the_table_the_code_uses(ledger):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with ledger._engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [
            d
            for d in compare_metadata(context, metadata)
            if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)
        ]
    assert diff == []


def test_capture_flushes_its_spool_into_postgresql(pg_url, tmp_path):
    from pathlib import Path

    run = dict(
        dag_id="distill__pg",
        run_id="manual__1",
        task_id="train_student",
        try_number=1,
        map_index=-1,
        queue="gpu",
        pool="default_pool",
        resource=None,
        started_at=AUG,
        ended_at=AUG + timedelta(hours=1),
        workflow="pg",
        category="training_compute",
        price_book=Path(__file__).resolve().parents[2] / "infra" / "price_book.yaml",
    )
    book_task_run("postgresql://postgres@127.0.0.1:1/nowhere", tmp_path, **run)
    assert len(pending(tmp_path)) == 1
    assert flush_spool(pg_url, tmp_path) == 1
    assert flush_spool(pg_url, tmp_path) == 0
    book_task_run(pg_url, tmp_path, **run)  # the same try again: not doubled
    with Ledger(pg_url) as ledger:
        assert [e.amount for e in ledger.entries(workflow="pg")] == [Decimal("1.006")]
