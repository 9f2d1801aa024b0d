"""The watch_upstream DAG run for real (`airflow dags test` / `airflow tasks test`), asset events read
from Airflow's own metadata DB.

One story in a throw-away state folder, each test a step of it (they run in file order):
the baseline is recorded, then no change → no event; a new base directory → exactly one event
with the old and new fingerprints; the emitting task re-run after its acknowledgement was lost
→ still one event; the same re-run after another change → that change's event (so a re-run
can emit, and the previous assertion could fail); a missing base → the task fails with a clear
error and nothing is emitted. Takes two to three minutes: each Airflow command starts a
process that parses the DAGs and imports torch (the base model's hash lives in ml.train.student).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from ml import airflow_runner  # not its test_dag by name: pytest would collect it as a test
from ml.airflow_runner import AirflowRunError, migrate, run_airflow

pytestmark = pytest.mark.integration

WF = "watch_it"
DAG = f"watch_upstream__{WF}"
WORKFLOWS = """
workflows:
  watch_it:
    labels: [billing, login]
    base_model: {base}
    teacher: {{kind: call_log, model: frontier-large}}
    schedule: {{cron: null, on_new_data: true, ingest: null, cost_report: null}}
"""


def write_base(path: Path, weights: bytes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "bert"}')
    (path / "model.safetensors").write_bytes(weights)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("watch")
    base = write_base(root / "base", b"weights-v1")
    (root / "workflows.yaml").write_text(WORKFLOWS.format(base=base))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_STATE_DIR", str(root / "state"))
        mp.setenv("MLOPS_WORKFLOWS_FILE", str(root / "workflows.yaml"))
        from ml.config import load_settings

        settings = load_settings()
        settings.ensure_dirs()
        migrate(settings)
        yield {
            "root": root,
            "base": base,
            "settings": settings,
            "db": settings.airflow_home / "airflow.db",
            "upstream": settings.state_dir / "upstream",
        }


def query(world, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(world["db"]) as db:
        return db.execute(sql, args).fetchall()


def events(world) -> list[dict]:
    rows = query(
        world,
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.name = ? ORDER BY e.id",
        f"{WF}.upstream",
    )
    return [json.loads(extra) for (extra,) in rows]


def task_states(world, run_id: str) -> dict[str, tuple[str, int]]:
    rows = query(
        world,
        "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
        DAG,
        run_id,
    )
    return {task: (state, tries) for task, state, tries in rows}


def latest_run_id(world) -> str:
    return query(world, "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", DAG)[0][0]


def rerun_check_task(world, run_id: str) -> None:
    """Run check_upstream of an existing DAG run again, as a retry or a cleared task would."""
    log = world["settings"].airflow_home / "logs" / "tasks_test.log"
    proc = run_airflow(
        world["settings"], ["tasks", "test", DAG, "check_upstream", run_id], log_path=log, check=False
    )
    assert proc.returncode == 0, log.read_text()[-3000:]


def history(world) -> list[dict]:
    path = world["upstream"] / f"{WF}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_first_observation_is_a_baseline_without_an_event(world):
    from ml.pipeline.watch_upstream import check

    # The same step the task calls; a first Airflow run would do exactly this (tests/unit covers it).
    assert check(WF, "setup/baseline", []) is None
    assert [h["event"] for h in history(world)] == ["baseline", "acknowledged"]


def test_no_change_no_event(world):
    airflow_runner.test_dag(world["settings"], DAG)
    run_id = latest_run_id(world)
    assert task_states(world, run_id) == {
        "check_upstream": ("skipped", 1),
        "acknowledge_change": ("skipped", 0),
    }
    assert events(world) == []


def test_a_new_base_directory_emits_exactly_one_event(world):
    from ml.train.student import fingerprint_model_dir

    old = fingerprint_model_dir(world["base"])
    world["ack_before_change"] = (world["upstream"] / f"{WF}.acknowledged.json").read_bytes()
    write_base(world["base"], b"weights-v2")
    airflow_runner.test_dag(world["settings"], DAG)
    world["change_run"] = run_id = latest_run_id(world)
    assert task_states(world, run_id) == {
        "check_upstream": ("success", 1),
        "acknowledge_change": ("success", 1),
    }
    [event] = events(world)
    assert event["changed"] == ["base_model"]
    assert event["old"]["base_model"]["value"] == old
    assert event["new"]["base_model"]["value"] == fingerprint_model_dir(world["base"]) != old
    acknowledged = json.loads((world["upstream"] / f"{WF}.acknowledged.json").read_text())
    assert acknowledged["id"] == event["change_key"]


def test_the_emitting_task_re_run_after_a_lost_acknowledgement_emits_nothing(world):
    # As if acknowledge_change had crashed: the state folder still holds the pre-change fingerprints.
    (world["upstream"] / f"{WF}.acknowledged.json").write_bytes(world["ack_before_change"])
    rerun_check_task(world, world["change_run"])
    assert len(events(world)) == 1
    assert history(world)[-2]["event"] == "already_emitted"
    acknowledged = json.loads((world["upstream"] / f"{WF}.acknowledged.json").read_text())
    assert acknowledged["id"] == events(world)[0]["change_key"]


def test_the_same_re_run_after_another_change_emits_that_change(world):
    write_base(world["base"], b"weights-v3")
    rerun_check_task(world, world["change_run"])
    first, second = events(world)
    assert second["change_key"] != first["change_key"]
    assert second["old"]["base_model"]["value"] == first["new"]["base_model"]["value"]


def test_a_missing_base_fails_the_watcher_and_emits_nothing(world):
    missing = world["root"] / "moved-away"
    (world["root"] / "workflows.yaml").write_text(WORKFLOWS.format(base=missing))
    before = len(events(world))
    with pytest.raises(AirflowRunError):
        airflow_runner.test_dag(world["settings"], DAG)
    run_id = latest_run_id(world)
    # AirflowFailException: a retry cannot bring the model back, so the first try is the last.
    assert task_states(world, run_id)["check_upstream"] == ("failed", 1)
    assert len(events(world)) == before
    log = (world["settings"].airflow_home / "logs" / "dags_test" / f"{DAG}.log").read_text()
    assert str(missing) in log and "set base_model to" in log


def test_the_watchers_compute_is_booked_as_keeping_current(world):
    from ml.costs.ledger import Ledger

    with Ledger(world["settings"].ledger_url) as ledger:
        booked = [e for e in ledger.entries(workflow=WF) if e.source.startswith(DAG)]
    assert booked and {e.category for e in booked} == {"keeping_current"}
