"""A mistyped MLOPS_STATE_DIR is said out loud (issue 16.13), and so is the workflow a command picked (13.4).

Commands run in-process through `ml.cli.main`, as `mlops` does, with their stdout and stderr captured.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ml.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def state(tmp_path, monkeypatch):
    for var in ("MLOPS_STATE_DIR", "MLOPS_WORKFLOWS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "stat"))  # meant: .../state
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(ROOT / "dags" / "workflows.yaml"))
    return tmp_path / "stat"


def test_a_command_on_a_state_folder_that_does_not_exist_says_so(state, capsys):
    assert main(["data", "versions", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert "does not exist: this is a new, empty state" in captured.err and str(state) in captured.err
    assert "MLOPS_STATE_DIR" in captured.err


def test_an_existing_but_empty_state_folder_is_named_too(state, capsys):
    (state / "data").mkdir(parents=True)  # what an earlier command on the mistyped path left
    main(["data", "versions"])
    assert "holds no dataset and no Airflow run yet" in capsys.readouterr().err


def test_a_state_folder_with_data_is_not_flagged(state, capsys):
    (state / "data" / "wf").mkdir(parents=True)
    (state / "data" / "wf" / "train.parquet").write_bytes(b"PAR1")
    main(["data", "versions", "-w", "ticket_routing"])
    assert "note:" not in capsys.readouterr().err


def test_doctor_warns_on_a_new_state_folder(state, capsys, monkeypatch):
    from ml.cli import lifecycle

    monkeypatch.setattr(lifecycle, "_check", lambda name, fn: {"check": name, "ok": True, "detail": "ok"})
    assert main(["doctor", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    warned = [c for c in report["checks"] if c.get("warning")]
    assert report["warnings"] == 1 and "new, empty state" in warned[0]["detail"]


def test_the_workflow_is_named_when_not_given_and_not_when_given(state, capsys):
    main(["data", "versions"])
    err = capsys.readouterr().err
    assert "workflow 'ticket_routing' (the first in" in err and "choose with -w NAME" in err
    main(["data", "versions", "-w", "ticket_routing"])
    assert "the first in" not in capsys.readouterr().err


def test_the_hint_after_an_import_names_the_workflow(state, tmp_path, capsys):
    from ml.workflows import load_workflows

    wf = next(iter(load_workflows(ROOT / "dags" / "workflows.yaml").values()))
    label = sorted(wf.labels)[0]
    data = tmp_path / "batch.csv"
    data.write_text(f"{wf.text_column},{wf.label_column}\nplease refund my order,{label}\n")
    assert main(["data", "import", str(data)]) == 0
    assert f"mlops run --only ingest_validate -w {wf.name}" in capsys.readouterr().out
