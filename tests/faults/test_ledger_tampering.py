"""Fault injection on the cost ledger: rewriting a booked entry, and bad manual entries.

Each case was reproduced on the code before this test: REPLACE INTO and INSERT OR REPLACE
rewrote a booked amount (SQLite's REPLACE does not fire DELETE triggers), a tampered ledger was
reported and exported as if intact, and `mlops costs add --quantity -3 / 0 / 1e30` booked a
negative or empty cost or ended in a decimal.InvalidOperation traceback.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from ml.costs.ledger import Ledger, LedgerTampered, NewEntry

ROOT = Path(__file__).resolve().parents[2]
WHEN = datetime(2026, 8, 3, 9, 0, tzinfo=timezone.utc)


def _person_hours(key: str = "timesheet-7", hours: str = "1000") -> NewEntry:
    return NewEntry(
        idempotency_key=key,
        occurred_at=WHEN,
        category="people",
        workflow="ticket_routing",
        resource="people:ml_engineer",
        quantity=Decimal(hours),
        unit="hour",
        unit_price=Decimal("110.64"),
        source_kind="person",
        source="ana",
    )


@pytest.fixture
def booked(tmp_path):
    path = tmp_path / "ledger.db"
    with Ledger(f"sqlite:///{path}") as ledger:
        entry = ledger.append(_person_hours())
        ledger.append(_person_hours("timesheet-8", "2"))
    return path, entry


def _row(path: Path, entry_id: int) -> dict:
    raw = sqlite3.connect(path)
    raw.row_factory = sqlite3.Row
    try:
        return dict(raw.execute("SELECT * FROM ledger_entries WHERE id = ?", (entry_id,)).fetchone())
    finally:
        raw.close()


def _rewrite_sql(verb: str, row: dict) -> tuple[str, list]:
    row = dict(row, amount="0.00000000", quantity="0.000000000")
    names = ", ".join(row)
    return f"{verb} INTO ledger_entries ({names}) VALUES ({', '.join('?' for _ in row)})", list(row.values())


@pytest.mark.parametrize("verb", ["REPLACE", "INSERT OR REPLACE"])
@pytest.mark.parametrize("same", ["id", "idempotency_key"])
def test_replace_cannot_rewrite_a_booked_entry(booked, verb, same):
    path, entry = booked
    row = _row(path, entry.id)
    if same == "idempotency_key":  # a new id, the booked key: REPLACE would drop the booked row
        row["id"] = 999
    sql, values = _rewrite_sql(verb, row)
    raw = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="ledger is append-only"):
            raw.execute(sql, values)
        raw.rollback()
    finally:
        raw.close()
    with Ledger(f"sqlite:///{path}") as ledger:
        assert ledger.get(entry.id).amount == Decimal("110640.00000000")
        assert ledger.verify() == []


def _drop_triggers_and_edit(path: Path, sql: str) -> None:
    """What someone with the file can still do: drop the guards, then edit."""
    raw = sqlite3.connect(path)
    try:
        for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            raw.execute(f"DROP TRIGGER {name}")
        raw.execute(sql)
        raw.commit()
    finally:
        raw.close()


@pytest.mark.parametrize(
    "sql, problem",
    [
        ("UPDATE ledger_entries SET amount = '0.00000000' WHERE id = 1", "amount 0E-8 is not quantity"),
        (
            "UPDATE ledger_entries SET quantity = '0.000000000', amount = '0.00000000' WHERE id = 1",
            "do not match the payload hash",
        ),
        ("UPDATE ledger_entries SET category = 'tooling' WHERE id = 1", "do not match the payload hash"),
        (
            "UPDATE ledger_entries SET quantity = '-2.000000000', amount = '-221.28000000' WHERE id = 2",
            "do not match the payload hash",
        ),
    ],
)
def test_verify_names_an_entry_edited_around_the_triggers(booked, sql, problem):
    path, _ = booked
    _drop_triggers_and_edit(path, sql)
    with Ledger(f"sqlite:///{path}") as ledger:
        tampered = ledger.verify()
        assert len(tampered) == 1 and problem in tampered[0].problem
        with pytest.raises(LedgerTampered, match=f"#{tampered[0].id} "):
            ledger.check_intact()


def test_a_deleted_original_leaves_its_reversal_pointing_at_nothing(booked):
    path, entry = booked
    with Ledger(f"sqlite:///{path}") as ledger:
        ledger.reverse(entry.id, "typo", "ana")
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA foreign_keys = OFF")
    for (name,) in raw.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        raw.execute(f"DROP TRIGGER {name}")
    raw.execute("DELETE FROM ledger_entries WHERE id = ?", (entry.id,))
    raw.commit()
    raw.close()
    with Ledger(f"sqlite:///{path}") as ledger:
        assert [t.problem for t in ledger.verify()] == [
            f"entries {entry.id} are missing before entry {entry.id + 1}: deleted outside the ledger",
            f"it reverses entry {entry.id}, which is gone",
        ]


def test_an_entry_deleted_around_the_triggers_leaves_a_hole_that_verify_names(booked):
    path, entry = booked
    with Ledger(f"sqlite:///{path}") as ledger:
        last = ledger.append(_person_hours("timesheet-9", "3"))
    _drop_triggers_and_edit(path, f"DELETE FROM ledger_entries WHERE id = {entry.id + 1}")
    with Ledger(f"sqlite:///{path}") as ledger:
        [tampered] = ledger.verify()
    assert tampered.id == entry.id + 1 and f"missing before entry {last.id}" in tampered.problem


# The CLI: verify, and report/export refuse a tampered ledger ---------------------------------


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(ROOT / "dags" / "workflows.yaml"))
    from ml.config import load_settings

    settings = load_settings()
    settings.ensure_dirs()
    return settings


def _cli(capsys, *argv) -> tuple[int, str, str]:
    from ml.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_costs_verify_report_and_export_on_a_tampered_ledger(state, capsys):
    with Ledger(state.ledger_url) as ledger:
        entry = ledger.append(_person_hours())
    code, out, _ = _cli(capsys, "costs", "verify", "--json")
    assert code == 0 and json.loads(out)["intact"] is True
    _drop_triggers_and_edit(
        Path(state.ledger_url.split("///", 1)[1]),
        f"UPDATE ledger_entries SET quantity = '0.000000000', amount = '0' WHERE id = {entry.id}",
    )
    code, out, _ = _cli(capsys, "costs", "verify")
    assert code == 1 and f"#{entry.id} timesheet-7" in out
    for argv in (("costs", "export"), ("costs", "report", "--refresh")):
        code, out, err = _cli(capsys, *argv)
        assert code == 1 and "changed outside the ledger" in err and "Traceback" not in err
        assert "BilledCost" not in out  # nothing exported


@pytest.mark.parametrize(
    "quantity, message",
    [
        ("-3", "must be more than 0 hours"),
        ("0", "must be more than 0 hours"),
        ("1e30", "more than 1,000,000 in one entry"),
        ("NaN", "not a finite number"),
        ("three", "not a number"),
        ("1e-12", "below the ledger's precision"),  # would have been booked as 0
    ],
)
def test_costs_add_refuses_quantities_that_are_not_a_cost(state, capsys, quantity, message):
    code, out, err = _cli(capsys, "costs", "add", "--role", "ml_engineer", f"--quantity={quantity}")
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err
    with Ledger(state.ledger_url) as ledger:
        assert ledger.entries() == []


def test_a_huge_quantity_is_a_clear_error_not_an_invalid_operation():
    with pytest.raises(ValueError, match="too large for one entry"):
        _person_hours(hours="1e30")


@pytest.mark.parametrize(
    "on, message",
    [
        ("2026-13-01", "--on '2026-13-01' is not a date; write it as YYYY-MM-DD"),
        ("9999-12-31", "--on 9999-12-31 is in the future"),
    ],
)
def test_costs_add_refuses_a_day_that_is_not_a_past_date(state, capsys, on, message):
    code, out, err = _cli(capsys, "costs", "add", "--role", "ml_engineer", "--quantity", "2", "--on", on)
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1, err


def test_the_cost_review_page_names_a_tampered_ledger_instead_of_summing_it(booked, tmp_path):
    from ml.costs import review_page

    path, entry = booked
    _drop_triggers_and_edit(path, f"UPDATE ledger_entries SET amount = '0' WHERE id = {entry.id}")
    with Ledger(f"sqlite:///{path}") as ledger:
        shown = review_page.review("ticket_routing", "", tmp_path / "reports", ledger)
    assert shown.spend_usd == {} and "changed outside the ledger" in shown.ledger_problem
    assert "changed outside the ledger" in review_page.render_page([shown])
