"""A `mlops run` killed mid-task (issue 16.5), swept against a real Airflow metadata DB.

One `mlops run` (airflow_runner.test_dag in a child process) of a one-task probe DAG is killed
with SIGKILL, `airflow dags test` and all, while its task runs; the MLflow run the task would
have opened (tag airflow_run_key) is left RUNNING. The sweep `mlops run` makes before the next
run of the DAG must then mark the DAG run and its task instance failed, the MLflow run FAILED,
and book the killed try's compute once, ended at the last write of the run's log (set here to
7.5 min after the start, as a long training would leave it, so the test waits for nothing); a
second sweep books nothing more. About a minute: one `airflow db migrate`, one `dags test` start,
two sweeps.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from ml import airflow_runner
from ml.config import load_settings
from ml.costs.ledger import Ledger
from ml.costs.pricebook import PriceBook

DAG = "distill__orphan_probe"
WORKFLOW = "orphan_probe"
PROBE_DAG = """
import os, time
from pathlib import Path

import pendulum
from airflow.sdk import dag, task


@dag(dag_id="{dag}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def probe():
    @task(queue="gpu")
    def train_student():
        print("step 1 of a long training", flush=True)
        Path(os.environ["ORPHAN_READY"]).write_text("running")
        deadline = time.monotonic() + 300  # a leaked process ends by itself
        while time.monotonic() < deadline:
            time.sleep(0.2)

    train_student()


probe()
"""
LAST_WRITE_AFTER_START = timedelta(minutes=7, seconds=30)  # 0.125 h


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    root = tmp_path_factory.mktemp("orphan")
    dags = root / "dags"
    dags.mkdir()
    (dags / "probe.py").write_text(PROBE_DAG.format(dag=DAG))
    ready = root / "ready"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_STATE_DIR", str(root / "state"))
        mp.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(dags))
        mp.delenv("MLOPS_LEDGER_URL", raising=False)
        mp.delenv("MLOPS_MLFLOW_TRACKING_URI", raising=False)
        settings = load_settings()
        settings.ensure_dirs()
        airflow_runner.migrate(settings)
        mlops_run = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from ml import airflow_runner; from ml.config import load_settings; "
                f"airflow_runner.test_dag(load_settings(), {DAG!r}, show_progress=False)",
            ],
            env={**os.environ, "ORPHAN_READY": str(ready)},
            cwd=settings.project_dir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: killed with its Airflow child below
        )
        try:
            # Meanwhile, the MLflow side: the task's run of this DAG run is opened once its id is
            # known; another DAG run's RUNNING run must stay untouched.
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
            experiment = client.create_experiment(
                WORKFLOW, artifact_location=(root / "artifacts").resolve().as_uri()
            )
            other = client.create_run(experiment, tags={"airflow_run_key": f"{DAG}/manual__another"})
            deadline = time.monotonic() + 240
            while not ready.exists() and mlops_run.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert ready.exists(), "the probe task never started (see the dags_test log in the state folder)"
        finally:
            os.killpg(mlops_run.pid, signal.SIGKILL)  # kill -9: mlops, `airflow dags test`, the task
            mlops_run.wait(timeout=60)
        db = settings.airflow_home / "airflow.db"
        with sqlite3.connect(db) as conn:
            run_id, state, start, pid = conn.execute(
                "SELECT ti.run_id, ti.state, ti.start_date, ti.pid FROM task_instance ti WHERE ti.dag_id = ?",
                (DAG,),
            ).fetchone()
        assert state == "running" and pid
        deadline = time.monotonic() + 60
        while _alive(pid) and time.monotonic() < deadline:  # SIGKILL is delivered asynchronously
            time.sleep(0.1)
        assert not _alive(pid)  # the running task instance is owned by a dead process
        ours = client.create_run(experiment, tags={"airflow_run_key": f"{DAG}/{run_id}"})
        marker = settings.airflow_home / "locks" / f"{DAG}.unfinished"
        logical = marker.read_text().strip()  # what the killed `mlops run` left behind
        started = _utc(start)
        log_path, _ = airflow_runner.run_files(settings, DAG, datetime.fromisoformat(logical))
        last = started + LAST_WRITE_AFTER_START
        os.utime(log_path, ns=(time.time_ns(), int(last.timestamp()) * 10**9 + last.microsecond * 1000))
        first = airflow_runner.fail_orphaned_runs(settings, DAG, logical_date=logical)
        second = airflow_runner.fail_orphaned_runs(settings, DAG, logical_date=logical)
        yield {
            "settings": settings,
            "db": db,
            "run_id": run_id,
            "started": started,
            "last_write": last,
            "client": client,
            "ours": ours.info.run_id,
            "other": other.info.run_id,
            "first": first,
            "second": second,
        }


def test_the_dag_run_and_its_running_task_are_marked_failed(killed):
    with sqlite3.connect(killed["db"]) as conn:
        runs = conn.execute("SELECT run_id, state FROM dag_run WHERE dag_id = ?", (DAG,)).fetchall()
        tis = conn.execute(
            "SELECT task_id, state, end_date FROM task_instance WHERE dag_id = ?", (DAG,)
        ).fetchall()
    assert runs == [(killed["run_id"], "failed")]
    assert tis == [("train_student", "failed", None)]  # the open end tells a later sweep it was running
    assert [(m["run_id"], m["failed_tasks"]) for m in killed["first"]] == [
        (killed["run_id"], ["train_student"])
    ]


def test_its_mlflow_run_is_marked_failed_at_the_last_write_and_no_other(killed):
    client = killed["client"]
    ours, other = client.get_run(killed["ours"]).info, client.get_run(killed["other"]).info
    assert ours.status == "FAILED"
    assert ours.end_time == int(killed["last_write"].timestamp() * 1000)
    assert client.get_run(killed["ours"]).data.tags["mlops.failure"].startswith("orphaned")
    assert other.status == "RUNNING"
    assert f"MLflow run {killed['ours']} marked FAILED" in killed["first"][0]["settled"]


def test_the_killed_try_is_booked_once_up_to_its_last_log_write(killed):
    settings = killed["settings"]
    with Ledger(settings.ledger_url) as ledger:
        entries = ledger.entries()
    assert len(entries) == 1, entries  # the second sweep found the run again and booked nothing more
    (entry,) = entries
    assert entry.idempotency_key == f"task:{DAG}/{killed['run_id']}/train_student/-1/1"
    assert entry.occurred_at == killed["started"]
    assert entry.quantity == Decimal("0.125")  # 7.5 min: the log's last write, not the sweep's now
    assert entry.resource == PriceBook.load(settings.price_book_file).resource_class_for_queue("gpu")
    assert (entry.category, entry.workflow) == ("training_compute", WORKFLOW)
    assert any("booked up to its last log write" in line for line in killed["first"][0]["settled"])


def test_a_second_sweep_finds_nothing_new_to_mark(killed):
    # It reports the run again (its try's end is still open), and the booking is the same entry.
    (again,) = killed["second"]
    assert again["already_failed"] and again["run_id"] == killed["run_id"]
    assert not any("marked FAILED" in line for line in again["settled"])
    first_entry = [line for line in killed["first"][0]["settled"] if "booked" in line]
    assert [line for line in again["settled"] if "booked" in line] == first_entry


def test_the_last_write_is_the_logs_or_the_tasks_progress_snapshot(tmp_path):
    settings = load_settings({"MLOPS_STATE_DIR": str(tmp_path / "state")})
    logical = "2026-12-01T10:00:00.123456+00:00"
    assert airflow_runner.last_write(settings, DAG, logical, "train_student") is None
    log_path, progress_path = airflow_runner.run_files(settings, DAG, datetime.fromisoformat(logical))
    log_path.parent.mkdir(parents=True)
    log_path.write_text("step 1\n")
    os.utime(log_path, ns=(0, 1_700_000_000_000_001_000))
    progress_path.write_text(json.dumps({"task": "evaluate_and_gate", "step": 3}))
    os.utime(progress_path, ns=(0, 1_700_000_100_000_000_000))
    at = airflow_runner.last_write(settings, DAG, logical, "train_student")
    assert at == datetime(2023, 11, 14, 22, 13, 20, 1, tzinfo=timezone.utc)  # another task's snapshot: not it
    progress_path.write_text(json.dumps({"task": "train_student", "step": 3}))
    os.utime(progress_path, ns=(0, 1_700_000_100_000_000_000))
    at = airflow_runner.last_write(settings, DAG, logical, "train_student")
    assert at == datetime(2023, 11, 14, 22, 15, 0, tzinfo=timezone.utc)
