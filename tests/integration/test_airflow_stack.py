"""ml.airflow_stack for real: LocalExecutor on the embedded SQLite, a trivial DAG folder.

A producer DAG emits an Asset event, the scheduler creates the consumer's asset-triggered run,
a failing DAG's error names the DAG, the run, the task and its log, and after the `with` block
no process of the stack is left. About a minute: four Airflow components start on SQLite.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from ml.airflow_stack import AirflowStack, AirflowStackError
from ml.config import load_settings

pytestmark = pytest.mark.integration

DAGS = textwrap.dedent("""
    import pendulum
    from airflow.sdk import Asset, dag, task

    SIGNAL = Asset(name="stack_test.signal", uri="mlops://stack_test/signal")
    START = pendulum.datetime(2026, 1, 1, tz="UTC")

    @dag(dag_id="produce", schedule=None, start_date=START, catchup=False)
    def produce():
        @task(outlets=[SIGNAL])
        def emit(*, outlet_events=None):
            outlet_events[SIGNAL].extra = {"answer": 42}

        emit()

    @dag(dag_id="consume", schedule=[SIGNAL], start_date=START, catchup=False)
    def consume():
        @task
        def read(*, triggering_asset_events=None):
            events = triggering_asset_events[SIGNAL]
            assert [e.extra for e in events] == [{"answer": 42}], events

        read()

    @dag(dag_id="break", schedule=None, start_date=START, catchup=False, default_args={"retries": 0})
    def broken():
        @task
        def explode():
            raise ValueError("the input is bad; fix it")

        explode()

    produce()
    consume()
    broken()
""")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    (root / "dags").mkdir()
    (root / "dags" / "stack_test_dags.py").write_text(DAGS)
    settings = load_settings({"MLOPS_STATE_DIR": str(root / "state"), "MLOPS_TORCH_THREADS": "1"})
    with AirflowStack(settings, extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags")}) as stack:
        yield stack


def test_an_asset_event_triggers_the_consumer(stack):
    stack.unpause("consume")
    run_id = stack.trigger("produce")
    assert stack.wait_for_run("produce", run_id, timeout_s=300)["tasks"] == {"emit": "success"}
    consumer_run = stack.next_run("consume", run_type="asset_triggered", timeout_s=300)
    assert stack.wait_for_run("consume", consumer_run, timeout_s=300)["tasks"] == {"read": "success"}
    assert [r["run_type"] for r in stack.runs("consume")] == ["asset_triggered"]


def test_a_failed_run_names_the_dag_the_task_and_its_log(stack):
    run_id = stack.trigger("break")
    with pytest.raises(AirflowStackError) as failed:
        stack.wait_for_run("break", run_id, timeout_s=300)
    message = str(failed.value)
    assert f"DAG break run {run_id} ended failed" in message
    assert "task explode failed: ValueError: the input is bad; fix it" in message
    log = message.split("log: ")[1].split(";")[0]
    assert os.path.exists(log) and "the input is bad" in open(log).read()


def processes_with(marker: bytes) -> list[int]:
    """Pids whose environment holds `marker` (this stack's generated secret marks its processes)."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return found


def test_stop_leaves_no_process_behind(tmp_path):
    settings = load_settings({"MLOPS_STATE_DIR": str(tmp_path / "state")})
    with AirflowStack(settings, extra_env={"AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path)}) as stack:
        marker = f"AIRFLOW__API_AUTH__JWT_SECRET={stack.env['AIRFLOW__API_AUTH__JWT_SECRET']}".encode()
        assert stack.api("GET", "/monitor/health")["scheduler"]["status"] == "healthy"
        assert len(processes_with(marker)) >= 4  # api-server, scheduler, dag-processor, triggerer
    assert processes_with(marker) == []


def test_the_components_get_the_callers_settings(tmp_path):
    from ml.config import settings_env

    settings = load_settings({"MLOPS_STATE_DIR": str(tmp_path / "s"), "MLOPS_TORCH_THREADS": "3"})
    assert load_settings(settings_env(settings)) == settings
    stack = AirflowStack(settings, executor="CeleryExecutor", broker_url="redis://127.0.0.1:6379/0")
    assert (
        stack.env["MLOPS_TORCH_THREADS"] == "3" and stack.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    )
    assert (
        AirflowStack(settings).env["AIRFLOW__API_AUTH__JWT_SECRET"]
        != stack.env["AIRFLOW__API_AUTH__JWT_SECRET"]
    )
    with pytest.raises(ValueError, match="needs a broker"):
        AirflowStack(settings, executor="CeleryExecutor")
    with pytest.raises(ValueError, match="not one of LocalExecutor, CeleryExecutor"):
        AirflowStack(settings, executor="SequentialExecutor")


def test_stop_removes_the_stacks_keys_from_the_broker(tmp_path):
    import redis
    from production_services import REDIS_URL, require_redis

    require_redis()
    stack = AirflowStack(
        load_settings({"MLOPS_STATE_DIR": str(tmp_path)}), executor="CeleryExecutor", broker_url=REDIS_URL
    )
    client = redis.Redis.from_url(REDIS_URL)
    client.set(f"{stack.broker_prefix}_kombu.binding.gpu", "x")
    client.set("someone-elses-key-" + stack.broker_prefix, "kept")
    try:
        stack.stop()
        assert not client.exists(f"{stack.broker_prefix}_kombu.binding.gpu")
        assert client.get("someone-elses-key-" + stack.broker_prefix) == b"kept"
    finally:
        client.delete("someone-elses-key-" + stack.broker_prefix)
