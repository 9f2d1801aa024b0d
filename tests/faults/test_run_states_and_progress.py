"""`mlops run` under concurrency and misleading logs (issue 16.6), and the progress it shows (13.4).

A stand-in `airflow` command plays the Airflow side, so these run in seconds: its `dags test`
writes a log that lies about the outcome, writes training snapshots to MLOPS_PROGRESS_FILE and
records task states; its `tasks states-for-dag-run -o json` answers from that record, after a
warning line on the same stream as Airflow's own CLI prints one. The verdict must come from
the states, each run must have its own log, and a second run of the same DAG must refuse.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from ml import airflow_runner
from ml.airflow_runner import AirflowRunError, DagAlreadyRunning, progress_line
from ml.config import load_settings

DAG = "distill__faults"

FAKE_AIRFLOW = r"""#!{python}
import json, os, sys, time
from pathlib import Path

record = Path(os.environ["FAKE_AIRFLOW_DIR"])
args = sys.argv[1:]
with open(record / "calls.txt", "a") as calls:
    calls.write(" ".join(args) + "\n")
if args[:2] == ["dags", "test"]:
    dag_id, when = args[2], args[3]
    # The log lies: a regex reading it would call this run failed or unknown.
    print(f"DagRun Finished: dag_id={{dag_id}}, state=failed (a line from some other run)")
    progress = Path(os.environ["MLOPS_PROGRESS_FILE"])
    for step in (5, 10) if (record / "slow").exists() else (10,):
        tmp = progress.with_name(".tmp")
        tmp.write_text(json.dumps({{"task": "train_student", "step": step, "total_steps": 10, "epoch": step / 10,
                                   "samples_per_s": 51.25, "eta_s": 65.0 * (10 - step) / 10, "val_macro_f1": 0.5 + step / 100,
                                   "updated_at": time.time()}}))
        os.replace(tmp, progress)
        if (record / "slow").exists():
            time.sleep(1.5)  # the watcher reads every second; the test never depends on seeing both
    if (record / "broken").exists():  # the DAG file does not import: no run is ever created
        print("ImportError: cannot import name 'nope' from 'ml.pipeline'")
        sys.exit(1)
    gate = record / "hold"
    deadline = time.monotonic() + 120
    while gate.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    outcome = (record / "outcome").read_text().strip() if (record / "outcome").exists() else "success"
    (record / f"states-{{when}}.json").write_text(json.dumps([
        {{"dag_id": dag_id, "task_id": "train_student", "state": outcome, "map_index": ""}},
        {{"dag_id": dag_id, "task_id": "ingest", "state": "success", "map_index": "0"}}]))
    sys.exit(0 if outcome == "success" else 1)
if args[:2] == ["tasks", "states-for-dag-run"]:
    states = record / f"states-{{args[3]}}.json"
    if not states.exists():
        sys.exit("DagRunNotFound")
    print("2026-12-01T10:00:00Z [warning  ] Could not import graphviz. [py.warnings]")
    print(json.dumps(json.loads(states.read_text()), indent=4))
    sys.exit(0)
sys.exit("unexpected call: " + " ".join(args))
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    record = tmp_path / "fake"
    record.mkdir()
    script = tmp_path / "airflow"
    script.write_text(FAKE_AIRFLOW.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setattr(airflow_runner, "airflow_bin", lambda: str(script))
    monkeypatch.setenv("FAKE_AIRFLOW_DIR", str(record))
    settings = load_settings({"MLOPS_STATE_DIR": str(tmp_path / "state")})
    settings.ensure_dirs()
    return settings, record


def test_success_is_read_from_airflows_states_not_from_the_log(fake):
    settings, _ = fake
    result = airflow_runner.test_dag(settings, DAG, echo=lambda m: None)
    assert result["state"] == "success"
    assert result["tasks"] == {"train_student": "success", "ingest[0]": "success"}
    assert "DagRun Finished" in Path(result["log"]).read_text()  # the lie was there, and ignored


def test_a_failed_task_fails_the_run_naming_it(fake):
    settings, record = fake
    (record / "outcome").write_text("failed")
    with pytest.raises(AirflowRunError, match=r"failed tasks: \['train_student'\]"):
        airflow_runner.test_dag(settings, DAG, echo=lambda m: None)


def test_a_run_that_airflow_never_created_fails_with_the_logs_reason(fake):
    settings, record = fake
    (record / "broken").write_text("")
    with pytest.raises(AirflowRunError, match="ImportError: cannot import name 'nope'"):
        airflow_runner.test_dag(settings, DAG, echo=lambda m: None)


def test_each_run_has_its_own_log_and_the_latest_is_linked(fake):
    settings, _ = fake
    first = airflow_runner.test_dag(settings, DAG, echo=lambda m: None)["log"]
    second = airflow_runner.test_dag(settings, DAG, echo=lambda m: None)["log"]
    assert first != second and Path(first).exists() and Path(second).exists()
    latest = settings.airflow_home / "logs" / "dags_test" / f"{DAG}.log"
    assert latest.resolve() == Path(second).resolve()


def test_a_second_run_of_the_same_dag_on_the_same_state_refuses_while_the_first_goes_on(fake):
    settings, record = fake
    (record / "hold").write_text("until the second run has been refused")
    outcome: dict = {}
    first = threading.Thread(
        target=lambda: outcome.update(airflow_runner.test_dag(settings, DAG, echo=lambda m: None))
    )
    first.start()
    try:
        deadline = time.monotonic() + 120
        while "dags test" not in _calls(record) and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(DagAlreadyRunning, match="already running on this state"):
            airflow_runner.test_dag(settings, DAG, echo=lambda m: None)
    finally:
        (record / "hold").unlink()
        first.join(timeout=180)
    assert outcome["state"] == "success"
    assert _calls(record).count("dags test") == 1  # the refused run never started Airflow


def test_a_run_left_unfinished_is_marked_failed_before_the_next_one(fake, monkeypatch):
    settings, _ = fake
    marker = settings.airflow_home / "locks" / f"{DAG}.unfinished"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("2026-12-01T10:00:00+00:00")  # what a killed `mlops run` leaves behind
    asked = []
    monkeypatch.setattr(
        airflow_runner,
        "fail_orphaned_runs",
        lambda s, d, logical_date=None: (
            asked.append((d, logical_date))
            or [
                {
                    "run_id": "manual__old",
                    "failed_tasks": ["train_student"],
                    "settled": ["train_student try 1 booked up to its last log write"],
                }
            ]
        ),
    )
    lines = []
    airflow_runner.test_dag(settings, DAG, echo=lines.append)
    assert asked == [(DAG, "2026-12-01T10:00:00+00:00")]
    assert any("manual__old failed" in line for line in lines)
    assert "    train_student try 1 booked up to its last log write" in lines  # what was settled is said
    assert not marker.exists()


def test_the_console_shows_the_running_task_and_the_training_snapshot(fake):
    settings, record = fake
    (record / "slow").write_text("give the watcher time to read each snapshot")
    lines: list[str] = []
    airflow_runner.test_dag(settings, DAG, echo=lines.append)
    shown = "\n".join(lines)
    assert "running: train_student" in shown
    assert "step 5/10" in shown or "step 10/10" in shown, shown
    assert "samples/s" in shown and "ETA" in shown and "val_macro_f1" in shown


def test_on_a_terminal_one_line_is_redrawn_as_a_bar(fake, capsys, monkeypatch):
    settings, record = fake
    (record / "slow").write_text("give the watcher time to read each snapshot")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    airflow_runner.test_dag(settings, DAG, echo=print)
    out = capsys.readouterr().out
    assert "\r\x1b[K" in out and "train_student  [" in out and "samples/s" in out
    assert out.endswith("\r\x1b[K")  # the bar is cleared before the run's result is printed


def test_the_progress_file_is_per_run_and_in_the_childs_environment(fake):
    settings, _ = fake
    result = airflow_runner.test_dag(settings, DAG, echo=lambda m: None)
    snapshot = Path(result["log"]).with_suffix(".progress.json")
    assert json.loads(snapshot.read_text())["step"] == 10


@pytest.mark.parametrize(
    "snap, expected",
    [
        (None, ""),
        ({"task": "t"}, ""),
        (
            {
                "step": 40,
                "total_steps": 760,
                "samples_per_s": 51.2,
                "eta_s": 410.0,
                "val_macro_f1": 0.81,
                "epoch": 1,
            },
            "[#...................] step 40/760  epoch 1  51.2 samples/s  val_macro_f1 0.810  ETA 6m50s",
        ),
        ({"step": 3}, "step 3"),
    ],
)
def test_progress_line(snap, expected):
    assert progress_line(snap) == expected


def _calls(record: Path) -> str:
    path = record / "calls.txt"
    return path.read_text() if path.exists() else ""


def test_mlops_progress_file_is_not_an_unknown_setting():
    # The task processes load settings with MLOPS_PROGRESS_FILE set by `mlops run`.
    load_settings(
        {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")},
            "MLOPS_PROGRESS_FILE": "/tmp/x.json",
        }
    )
