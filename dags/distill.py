"""distill: teach a small student the teacher's behaviour, and promote it only if it is better.

1. **probe_teachers** — when an upstream change triggered the run: how often the new teacher
   disagrees with the old one on a sample; below the workflow's threshold the run stops here
   ("skipped: teachers agree"). A base-model change, new data or the cron always re-distil.
   **prepare_targets** — the current teacher's labels / probabilities for the training set.
2. **train_student** (`gpu` queue) — fine-tune the base model on the distillation loss;
   checkpoints let a retry resume; CUDA with bf16 where present, else the CPU.
3. **evaluate_and_gate** — challenger vs @champion on the frozen evaluation set in one process:
   macro-F1, per-class F1, p99 latency at batch 1 against the SLA, cost per 1,000 calls.
4. **register_challenger** — one MLflow model version per DAG run, lineage tags, `@challenger`.
5. **wait_for_approval** — with `approval: manual` in the workflow's gate, waits for a model
   owner's `mlops models approve|reject VERSION --reason TEXT`, recorded on the version in the
   MLflow registry; passes at once with automatic approval or a failed gate. A rejection skips
   promote (the reason is in this task's log); no decision within `approval_timeout_hours`
   fails the run, @champion unchanged.
6. **promote** — moves `@champion` (compare-and-set against the champion the gate saw) when the
   gate passed and the version is approved, and emits the model Asset.

Why a sensor and not Airflow 3's HITL ApprovalOperator: the decision must be recordable with
the registry alone (`mlops models approve` needs no Airflow API, token or UI), and the registry
must stay the one record of who approved what. The HITL operator keeps its answer in Airflow's
metadata DB and takes it through the Airflow UI or REST API. So the waiting task is a sensor in
reschedule mode, which holds no worker slot between looks: it looks at once, again after a few
seconds, then ever less often (exponential backoff), at least every 5 minutes. `airflow dags
test` (`mlops run`) runs it too: dag.test()'s loop re-runs a task in up_for_reschedule once its
reschedule time has come (logging "No tasks to run" each second meanwhile).

Notifications (`notify:` in the workflows file) go through dags/_common.py's WorkflowNotifier:
the approval sensor sends approval_waiting (at the look that opens the wait), rejected and
approval_timed_out; promote's success callback sends promoted; the DAG's failure callback
sends run_failed.

Scheduled by the workflow's upstream Asset (watch_upstream), its dataset Asset and/or its cron
(`schedule:` in dags/workflows.yaml). Runs triggered by an upstream change are booked as
"keeping current" in the cost ledger.
"""

from __future__ import annotations

import contextlib
import os
import sys

from airflow.sdk import AssetOrTimeSchedule, PokeReturnValue, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

# Every Airflow component (dag-processor, workers, `dags test`) must find the sibling module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    DEFAULT_ARGS,
    START,
    WorkflowNotifier,
    cron,
    dataset_asset,
    doc_md,
    model_asset,
    notifiers,
    run_key,
    upstream_asset,
    workflows,
)

from ml.notify import approval_event

# How the approval sensor looks at the registry: first after this many seconds, then with
# exponential backoff up to ml.registry.WAIT_POLL_MAX_S (kept equal: the CLI reads a wait whose
# deadline passed that long ago as abandoned).
APPROVAL_FIRST_LOOK_S = 5
APPROVAL_LOOK_EVERY_S = 300


@contextlib.contextmanager
def fail_without_retry_on_config_errors():
    """A bad setting or a refused label fails the same way on every try: fail the task at once."""
    from ml.workflows import ConfigurationError

    try:
        yield
    except ConfigurationError as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from None


def schedule_for(wf):
    """Upstream changes always; new data and/or cron as declared per workflow, never edited here."""
    upstream = upstream_asset(wf.name)
    assets = (dataset_asset(wf.name) | upstream) if wf.schedule.on_new_data else upstream
    timed = cron(wf.schedule.cron) if wf.schedule.cron else None
    return AssetOrTimeSchedule(timetable=timed, assets=assets) if timed else assets


def build(wf):
    model = model_asset(wf.name)
    upstream = upstream_asset(wf.name)

    @dag(
        dag_id=f"distill__{wf.name}",
        schedule=schedule_for(wf),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mlops", "training", wf.name],
        doc_md=doc_md(__doc__, wf),
        params={"workflow": wf.name},
        on_failure_callback=notifiers(wf, "run_failed") or None,
    )
    def distill():
        @task
        def probe_teachers(*, dag_run=None, triggering_asset_events=None) -> dict:
            from ml.pipeline.redistill import probe_teachers

            events = [e.extra for e in (triggering_asset_events or {}).get(upstream, [])]
            result = probe_teachers(wf.name, run_key(dag_run), events)
            if result.get("skipped"):
                raise AirflowSkipException(f"skipped: {result['skipped']} ({result.get('reason')})")
            return result

        @task
        def prepare_targets(probe: dict, *, dag_run=None) -> dict:
            from ml.pipeline.distill import prepare_targets

            with fail_without_retry_on_config_errors():
                return prepare_targets(wf.name, run_key(dag_run), probe)

        @task(queue="gpu")
        def train_student(targets: dict, *, dag_run=None) -> dict:
            from ml.pipeline.distill import train

            with fail_without_retry_on_config_errors():
                return train(wf.name, run_key(dag_run), targets)

        @task
        def evaluate_and_gate(trained: dict, *, dag_run=None) -> dict:
            from ml.pipeline.distill import evaluate_and_gate

            with fail_without_retry_on_config_errors():
                return evaluate_and_gate(wf.name, run_key(dag_run), trained)

        @task
        def register_challenger(trained: dict, gate: dict, *, dag_run=None) -> dict:
            from ml.pipeline.distill import register_challenger

            return register_challenger(wf.name, run_key(dag_run), trained, gate)

        # The deadline is the one on the version (await_approval fails the run with a clear
        # message); the sensor's own timeout only backs it up, a few looks later.
        @task.sensor(
            mode="reschedule",
            poke_interval=APPROVAL_FIRST_LOOK_S,
            exponential_backoff=True,
            max_wait=APPROVAL_LOOK_EVERY_S,
            timeout=wf.gate.approval_timeout_hours * 3600 + 3 * APPROVAL_LOOK_EVERY_S,
        )
        def wait_for_approval(registered: dict, *, dag_run=None) -> PokeReturnValue:
            from ml.pipeline.distill import await_approval

            result = await_approval(wf.name, run_key(dag_run), registered)
            print(result["message"])
            event = approval_event(result)
            if event and notifiers(wf, event):
                WorkflowNotifier(
                    wf, event, message=result["message"], version=str(registered["version"])
                ).send({"dag_run": dag_run})
            if result["state"] == "rejected":
                raise AirflowSkipException(f"promote skipped: {result['message']}")
            if result["state"] == "timed_out":
                raise AirflowFailException(result["message"])  # no retry: the wait is over
            return PokeReturnValue(is_done=result["state"] != "waiting", xcom_value=result)

        @task(outlets=[model], on_success_callback=notifiers(wf, "promoted"))
        def promote(registered: dict, approval: dict, *, dag_run=None, outlet_events=None) -> dict:
            # `approval` only orders this task after the wait: promote reads the decision from
            # the registry, the record of who approved.
            from ml.pipeline.distill import promote

            result = promote(wf.name, run_key(dag_run), registered)
            if not result["promoted"]:
                raise AirflowSkipException(f"@champion unchanged: {result}")
            outlet_events[model].extra = {"model": result["model"], "version": result["champion"]}
            return result

        trained = train_student(prepare_targets(probe_teachers()))
        registered = register_challenger(trained, evaluate_and_gate(trained))
        promote(registered, wait_for_approval(registered))

    return distill()


for _wf in workflows():
    build(_wf)
