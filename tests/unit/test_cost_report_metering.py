"""Storage metering in the cost_report DAG: each day is booked once, whatever runs in between."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(ROOT / "dags" / "workflows.yaml"))
    from ml.config import load_settings

    settings = load_settings()
    settings.ensure_dirs()
    return settings


def test_metering_twice_on_a_day_with_new_data_books_once_and_never_conflicts(state):
    from ml.costs.ledger import Category, Ledger
    from ml.pipeline.cost_report import book_metered

    data = state.data_dir / "ticket_routing"
    data.mkdir(parents=True)
    (data / "train.parquet").write_bytes(b"x" * 3_000_000)
    assert book_metered("ticket_routing")["storage_entries"] == 1
    (data / "eval.parquet").write_bytes(b"y" * 1_000_000)  # the size changes later the same day
    assert book_metered("ticket_routing")["storage_entries"] == 0
    with Ledger(state.ledger_url) as ledger:
        entries = ledger.entries(workflow="ticket_routing", category=Category.VERSIONING_STORAGE.value)
    assert len(entries) == 1 and entries[0].unit == "GB-month" and entries[0].amount > 0
    shutil.rmtree(data)
