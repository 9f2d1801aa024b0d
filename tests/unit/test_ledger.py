"""The cost ledger on SQLite: append-only in the database, idempotent, exact, safe under concurrency."""

from __future__ import annotations

import multiprocessing
import shutil
import sqlite3
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml.costs.ledger import (
    CATEGORIES,
    MAX_AMOUNT,
    VERSION_TABLE,
    IdempotencyConflict,
    Ledger,
    LedgerError,
    NewEntry,
    amount_of,
    metadata,
)

AUG = datetime(2026, 8, 3, 9, 30, tzinfo=timezone.utc)


def new(key: str = "k1", **overrides) -> NewEntry:
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


@pytest.fixture(scope="module")
def migrated_file(tmp_path_factory):
    """An empty, migrated ledger file; tests copy it rather than migrate one each."""
    path = tmp_path_factory.mktemp("template") / "ledger.db"
    Ledger(f"sqlite:///{path}").close()
    return path


@pytest.fixture
def ledger(tmp_path, migrated_file):
    shutil.copy(migrated_file, tmp_path / "ledger.db")
    with Ledger(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        yield ledger


# Appending and idempotency ---------------------------------------------------------------


def test_append_returns_the_stored_entry_with_an_exact_amount(ledger):
    entry = ledger.append(new())
    assert entry.id == 1
    assert entry.amount == Decimal("1.509") and isinstance(entry.amount, Decimal)
    assert entry.currency == "USD" and entry.reverses_id is None
    assert ledger.get(entry.id) == entry
    assert ledger.entries() == [entry]


@pytest.mark.parametrize(
    "second, same_entry",
    [
        (new(), True),  # a re-delivery: same key, same payload
        (new(quantity="1.500000000"), True),  # the same number written differently is the same payload
        (new(occurred_at=AUG.astimezone(timezone(timedelta(hours=2)))), True),  # the same instant elsewhere
        (new(quantity=Decimal("1.6")), False),
        (new(unit_price=Decimal("1.2")), False),
        (new(category="evaluation"), False),
        (new(workflow="contract_clauses"), False),
        (new(description="another note"), False),
        (new(occurred_at=AUG + timedelta(seconds=1)), False),
        (new(model="ticket_routing_student"), False),
    ],
)
def test_same_key_books_once_and_a_different_payload_is_a_conflict(ledger, second, same_entry):
    first = ledger.append(new())
    if same_entry:
        assert ledger.append(second) == first
    else:
        with pytest.raises(IdempotencyConflict) as err:
            ledger.append(second)
        assert "'k1'" in str(err.value) and f"entry {first.id}" in str(err.value)
    assert ledger.entries() == [first]


def test_different_keys_are_different_entries(ledger):
    a, b = ledger.append(new("a")), ledger.append(new("b"))
    assert (a.id, b.id) == (1, 2)
    assert ledger.total() == Decimal("3.018")


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"quantity": 1.5}, TypeError, "Decimal('1.5')"),
        ({"unit_price": 0.1}, TypeError, "float"),
        ({"quantity": "one"}, ValueError, "not a finite decimal"),
        ({"quantity": "NaN"}, ValueError, "not a finite decimal"),
        ({"unit_price": Decimal("-1")}, ValueError, "Ledger.reverse"),
        ({"quantity": Decimal("1e12"), "unit_price": Decimal("100")}, ValueError, "too large"),
        ({"category": "marketing"}, ValueError, "data_curation"),
        ({"source_kind": "robot"}, ValueError, "task, person, system"),
        ({"currency": "usd"}, ValueError, "3-letter"),
        ({"occurred_at": datetime(2026, 8, 3, 9, 30)}, ValueError, "timezone-aware"),
        ({"idempotency_key": ""}, ValueError, "idempotency_key"),
        ({"idempotency_key": "k" * 201}, ValueError, "200"),
        ({"workflow": " "}, ValueError, "workflow"),
        ({"source": ""}, ValueError, "source"),
    ],
)
def test_invalid_entries_are_refused_before_the_database(overrides, error, message):
    with pytest.raises(error) as err:
        new(**overrides)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "quantity, unit_price, amount",
    [
        ("2", "0.1008", "0.2016"),
        ("0.333333333", "0.10", "0.03333333"),
        # Half-even at the 8th place: ties go to the even digit, so rounding has no drift.
        ("2.5", "0.00000001", "0.00000002"),
        ("3.5", "0.00000001", "0.00000004"),
        ("123456789012345.123456789", "0.00001234", "1523456776.41233882"),
        # Rounded once, from the exact product: 32 digits, where Decimal's default 28 would first
        # round to ...0050000 and then half-even down to ...00.
        ("100000000000000.000000005", "1.00000001", "100000001000000.00000001"),
    ],
)
def test_amount_is_quantity_times_price_rounded_half_even(quantity, unit_price, amount):
    assert amount_of(Decimal(quantity), Decimal(unit_price)) == Decimal(amount)
    if Decimal(amount) < MAX_AMOUNT:
        assert new(quantity=quantity, unit_price=unit_price).amount == Decimal(amount)


def test_money_round_trips_exactly(ledger):
    # SQLite's own NUMERIC would round these through a float; the ledger stores decimal text.
    cases = ["0.00000001", "9999999.99999999", "0.1", "1234567.89012345"]
    for i, price in enumerate(cases):
        ledger.append(new(f"m{i}", quantity="1", unit_price=price))
    assert [e.amount for e in ledger.entries()] == [Decimal(p) for p in cases]
    assert ledger.total() == sum(Decimal(p) for p in cases)


def test_times_are_stored_and_returned_in_utc(ledger):
    local = datetime(2026, 8, 3, 1, 0, tzinfo=timezone(timedelta(hours=-7)))
    entry = ledger.append(new(occurred_at=local))
    stored = ledger.get(entry.id)
    assert stored.occurred_at == local and stored.occurred_at.tzinfo == timezone.utc
    assert stored.occurred_at.hour == 8


# Reversal --------------------------------------------------------------------------------


def test_a_reversal_nets_the_entry_to_zero_in_the_month_it_happened(ledger):
    original = ledger.append(new())
    ledger.append(new("other", quantity="2"))
    reversal = ledger.reverse(original.id, reason="booked on the wrong queue", source="ana")
    assert reversal.reverses_id == original.id
    assert reversal.amount == -original.amount and reversal.quantity == -original.quantity
    assert reversal.occurred_at == original.occurred_at
    assert (reversal.source_kind, reversal.source) == ("person", "ana")
    assert "wrong queue" in reversal.description
    assert ledger.total() == Decimal("2.012")
    assert ledger.totals(("month",)) == {"2026-08": Decimal("2.012")}
    # Nothing was rewritten: the original is still there, unchanged.
    assert ledger.get(original.id) == original


def test_a_reversal_is_final(ledger):
    original = ledger.append(new())
    reversal = ledger.reverse(original.id, reason="duplicate", source="ana")
    assert ledger.reverse(original.id, reason="duplicate", source="ana") == reversal  # idempotent
    with pytest.raises(IdempotencyConflict, match=f"already reversed by entry {reversal.id}"):
        ledger.reverse(original.id, reason="another reason", source="bob")
    with pytest.raises(LedgerError, match="itself the reversal"):
        ledger.reverse(reversal.id, reason="undo", source="ana")
    with pytest.raises(LedgerError, match="No ledger entry with id 99"):
        ledger.reverse(99, reason="x", source="ana")
    with pytest.raises(ValueError, match="reason"):
        ledger.reverse(original.id, reason=" ", source="ana")
    assert len(ledger.entries()) == 2


# Reading ---------------------------------------------------------------------------------

BOOKED = [
    # key, occurred_at, category, workflow, quantity, unit_price
    ("a", datetime(2026, 7, 31, 23, 59, tzinfo=timezone.utc), "training_compute", "tickets", "2", "1.006"),
    ("b", datetime(2026, 8, 1, 0, 0, tzinfo=timezone.utc), "training_compute", "tickets", "1", "1.006"),
    ("c", datetime(2026, 8, 2, tzinfo=timezone.utc), "evaluation", "tickets", "0.5", "0.1008"),
    ("d", datetime(2026, 8, 2, tzinfo=timezone.utc), "people", "contracts", "3", "110.64"),
    ("e", datetime(2026, 9, 1, tzinfo=timezone.utc), "frontier_api", "contracts", "1.234567", "3.00"),
]


@pytest.fixture
def booked(ledger):
    for key, when, category, workflow, quantity, price in BOOKED:
        ledger.append(
            new(
                key,
                occurred_at=when,
                category=category,
                workflow=workflow,
                quantity=quantity,
                unit_price=price,
            )
        )
    return ledger


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        (
            {},
            {
                "evaluation": "0.0504",
                "frontier_api": "3.703701",
                "people": "331.92",
                "training_compute": "3.018",
            },
        ),
        ({"group_by": ("workflow",)}, {"contracts": "335.623701", "tickets": "3.0684"}),
        (
            {"group_by": ("month", "category")},
            {
                ("2026-07", "training_compute"): "2.012",
                ("2026-08", "evaluation"): "0.0504",
                ("2026-08", "people"): "331.92",
                ("2026-08", "training_compute"): "1.006",
                ("2026-09", "frontier_api"): "3.703701",
            },
        ),
        (
            {"group_by": ("day",), "workflow": "tickets"},
            {"2026-07-31": "2.012", "2026-08-01": "1.006", "2026-08-02": "0.0504"},
        ),
        (
            {"group_by": ("category",), "since": date(2026, 8, 1), "until": date(2026, 9, 1)},
            {"evaluation": "0.0504", "people": "331.92", "training_compute": "1.006"},
        ),
        ({"group_by": ("currency",), "category": "people"}, {"USD": "331.92"}),
    ],
)
def test_totals(booked, kwargs, expected):
    assert booked.totals(**kwargs) == {k: Decimal(v) for k, v in expected.items()}


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, "338.692101"),
        ({"workflow": "tickets"}, "3.0684"),
        ({"category": "training_compute"}, "3.018"),
        ({"workflow": "contracts", "category": "training_compute"}, "0"),
        ({"since": datetime(2026, 8, 1, tzinfo=timezone.utc)}, "336.680101"),
        ({"until": datetime(2026, 8, 1, tzinfo=timezone.utc)}, "2.012"),
    ],
)
def test_total(booked, kwargs, expected):
    assert booked.total(**kwargs) == Decimal(expected)


def test_entries_filter_by_workflow_category_and_time(booked):
    assert [e.idempotency_key for e in booked.entries(workflow="tickets")] == ["a", "b", "c"]
    assert [e.idempotency_key for e in booked.entries(category="people")] == ["d"]
    assert [e.idempotency_key for e in booked.entries(since=date(2026, 8, 1), until=date(2026, 8, 2))] == [
        "b"
    ]
    assert booked.find("e").idempotency_key == "e" and booked.find("zz") is None


def test_reading_mistakes_are_clear(booked):
    with pytest.raises(ValueError, match="choose one or more of month"):
        booked.totals(("week",))
    with pytest.raises(ValueError, match="not one of"):
        booked.total(category="marketing")
    with pytest.raises(ValueError, match="no timezone"):
        booked.entries(since=datetime(2026, 8, 1))
    booked.append(new("eur", currency="EUR"))
    with pytest.raises(LedgerError, match="mix currencies"):
        booked.total()
    assert set(booked.totals(("currency",))) == {"EUR", "USD"}


# Append-only, enforced by the database -----------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE ledger_entries SET amount = '0' WHERE id = 1",
        "UPDATE ledger_entries SET description = 'edited'",
        "DELETE FROM ledger_entries WHERE id = 1",
        "DELETE FROM ledger_entries",  # SQLite's truncate shortcut is off when triggers exist
    ],
)
def test_the_database_refuses_update_and_delete(tmp_path, sql):
    path = tmp_path / "ledger.db"
    with Ledger(f"sqlite:///{path}") as ledger:
        entry = ledger.append(new())
    raw = sqlite3.connect(path)  # not through the Ledger: any client is refused
    try:
        with pytest.raises(sqlite3.IntegrityError, match="ledger is append-only"):
            raw.execute(sql)
        raw.rollback()
    finally:
        raw.close()
    with Ledger(f"sqlite:///{path}") as ledger:
        assert ledger.entries() == [entry]


# Schema and migrations ---------------------------------------------------------------------


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


def test_opening_again_migrates_nothing_and_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "ledger.db"
    Ledger(f"sqlite:///{path}").close()
    Ledger(f"sqlite:///{path}").close()
    raw = sqlite3.connect(path)
    assert raw.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall() == [("0002",)]
    raw.execute(f"UPDATE {VERSION_TABLE} SET version_num = '9999'")
    raw.commit()
    raw.close()
    with pytest.raises(LedgerError, match="newer than this code knows"):
        Ledger(f"sqlite:///{path}")


@pytest.mark.parametrize(
    "url, message",
    [
        ("not a url", "not a SQLAlchemy URL"),
        ("mysql://root@localhost/ledger", "only sqlite and postgresql"),
    ],
)
def test_unsupported_urls_are_refused(url, message):
    with pytest.raises(LedgerError, match=message):
        Ledger(url)


def test_an_in_memory_ledger_works_for_examples():
    with Ledger("sqlite://") as ledger:
        ledger.append(new())
        assert ledger.total() == Decimal("1.509")


# Concurrency: 8 writer processes ------------------------------------------------------------

WRITERS, OWN_ENTRIES, SHARED_ENTRIES = 8, 40, 10


def writer_entries(writer: int) -> list[NewEntry]:
    """Each writer's own entries, plus shared ones that every writer books (the same facts)."""
    own = [
        new(
            f"w{writer}-{i}",
            quantity=Decimal(i + 1) / 7,
            unit_price=Decimal("0.1008"),
            occurred_at=AUG + timedelta(minutes=i),
        )
        for i in range(OWN_ENTRIES)
    ]
    shared = [
        new(f"shared-{i}", quantity=Decimal(i + 1), unit_price=Decimal("1.006"))
        for i in range(SHARED_ENTRIES)
    ]
    return shared + own + shared[::-1]  # the shared ones first and last, to collide with the others


def concurrent_writer(url: str, writer: int, barrier) -> None:
    barrier.wait()  # all eight open the ledger (and migrate a brand-new file) at once
    with Ledger(url) as ledger:
        for entry in writer_entries(writer):
            ledger.append(entry)


def run_writers(url: str) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(WRITERS)
    processes = [context.Process(target=concurrent_writer, args=(url, w, barrier)) for w in range(WRITERS)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)
    assert [p.exitcode for p in processes] == [0] * WRITERS


def test_eight_concurrent_writers_on_sqlite_book_every_entry_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    run_writers(url)
    expected = {e.idempotency_key: e for w in range(WRITERS) for e in writer_entries(w)}
    with Ledger(url) as ledger:
        entries = ledger.entries()
        keys = [e.idempotency_key for e in entries]
        assert len(keys) == len(set(keys)) == WRITERS * OWN_ENTRIES + SHARED_ENTRIES
        assert set(keys) == set(expected)
        assert ledger.total() == sum(e.amount for e in expected.values())
        assert all(e.amount == expected[e.idempotency_key].amount for e in entries)
        assert ledger.verify() == []  # no hole in the ids and every hash matches, after eight racing writers


# Properties ------------------------------------------------------------------------------

money = st.decimals(
    min_value=Decimal("0"), max_value=Decimal("5000"), places=8, allow_nan=False, allow_infinity=False
)
quantities = st.decimals(
    min_value=Decimal("0"), max_value=Decimal("10000"), places=9, allow_nan=False, allow_infinity=False
)
entry_facts = st.tuples(
    st.sampled_from(CATEGORIES),
    st.sampled_from(["tickets", "contracts"]),
    quantities,
    money,
    st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(timezone.utc)
    ),
)


def entries_from(facts) -> list[NewEntry]:
    return [
        new(f"p{i}", category=c, workflow=w, quantity=q, unit_price=p, occurred_at=t)
        for i, (c, w, q, p, t) in enumerate(facts)
    ]


PROPERTY_SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(st.lists(entry_facts, max_size=12))
def test_totals_are_the_exact_sum_of_amounts(facts):
    with Ledger("sqlite://") as ledger:
        for entry in entries_from(facts):
            ledger.append(entry)
        entries = ledger.entries()
        total = sum((e.amount for e in entries), Decimal(0))
        assert all(e.amount == amount_of(e.quantity, e.unit_price) for e in entries)
        assert ledger.total() == total
        assert sum(ledger.totals(("category",)).values(), Decimal(0)) == total
        assert sum(ledger.totals(("month", "category", "workflow")).values(), Decimal(0)) == total
        assert sum((ledger.total(workflow=w) for w in ("tickets", "contracts")), Decimal(0)) == total


@PROPERTY_SETTINGS
@given(st.lists(entry_facts, max_size=12), st.randoms(use_true_random=False))
def test_appending_the_same_entries_again_changes_nothing(facts, rnd):
    with Ledger("sqlite://") as ledger:
        entries = entries_from(facts)
        first = [ledger.append(e) for e in entries]
        before = (ledger.entries(), ledger.totals(("month", "category")))
        rnd.shuffle(entries)
        again = {ledger.append(e).id for e in entries}
        assert again == {e.id for e in first}
        assert (ledger.entries(), ledger.totals(("month", "category"))) == before


@PROPERTY_SETTINGS
@given(st.lists(entry_facts, min_size=1, max_size=10))
def test_reversing_everything_leaves_zero_everywhere(facts):
    with Ledger("sqlite://") as ledger:
        originals = [ledger.append(e) for e in entries_from(facts)]
        for e in originals:
            ledger.reverse(e.id, reason="test", source="property")
        assert ledger.total() == 0
        assert set(ledger.totals(("month", "category")).values()) == {Decimal(0)}
        assert len(ledger.entries()) == 2 * len(originals)


@PROPERTY_SETTINGS
@given(
    entry_facts,
    st.sampled_from(["quantity", "unit_price", "category", "workflow", "occurred_at", "description"]),
)
def test_any_change_under_the_same_key_is_a_conflict(fact, field):
    original = entries_from([fact])[0]
    changed = {
        "quantity": original.quantity + Decimal("0.000000001"),
        "unit_price": original.unit_price + Decimal("0.00000001"),
        "category": next(c for c in CATEGORIES if c != original.category),
        "workflow": original.workflow + "_x",
        "occurred_at": original.occurred_at + timedelta(microseconds=1),
        "description": "changed",
    }[field]
    with Ledger("sqlite://") as ledger:
        ledger.append(original)
        with pytest.raises(IdempotencyConflict):
            ledger.append(replace(original, **{field: changed}))
        assert len(ledger.entries()) == 1
