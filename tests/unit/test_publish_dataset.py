"""The dataset Asset event of ingest_validate: once per training-set version, again on a retry of its run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(ROOT / "dags" / "workflows.yaml"))
    from ml.config import load_settings
    from ml.pipeline.ingest_validate import store_for
    from ml.workflows import get_workflow

    settings = load_settings()
    return store_for(settings, get_workflow(settings.workflows_file, "ticket_routing"))


def accept(store, tmp_path, name: str, texts: list[str]) -> None:
    from ml.data.ingest import read_batch

    path = tmp_path / name
    pd.DataFrame({"text": texts, "label": ["billing_refund"] * len(texts)}).to_csv(path, index=False)
    store.accept(read_batch(path))


def test_one_event_per_training_set_version(store, tmp_path):
    from ml.pipeline.ingest_validate import publish_if_changed

    assert publish_if_changed("ticket_routing", "ingest/run-1") is None  # no data yet
    accept(store, tmp_path, "a.csv", ["refund my order please", "I want my money back"])
    first = publish_if_changed("ticket_routing", "ingest/run-1")
    assert first["version"] == store.current("train")["version"] and first["rows"] == 2
    assert publish_if_changed("ticket_routing", "ingest/run-2") is None  # nothing new for another run
    accept(store, tmp_path, "b.csv", ["charged twice for one order"])
    assert publish_if_changed("ticket_routing", "ingest/run-2")["rows"] == 3


def test_a_retry_of_the_publishing_run_publishes_again(store, tmp_path):
    # The first try wrote the marker and died before Airflow recorded the event: the retry re-emits it.
    from ml.pipeline.ingest_validate import publish_if_changed

    accept(store, tmp_path, "a.csv", ["refund my order please", "I want my money back"])
    first = publish_if_changed("ticket_routing", "ingest/run-1")
    assert publish_if_changed("ticket_routing", "ingest/run-1") == first
    assert publish_if_changed("ticket_routing", "ingest/run-9") is None
