"""Books every task instance's compute into the cost ledger (an Airflow 3.3 listener plugin).

After each try of each task (success, failure, or failure before a retry) the worker calls
the hooks below; they read the facts off the task instance and hand them to
ml.costs.capture.book_task_run, which prices and books them, or spools them when the ledger
is unreachable. Nothing here may fail a task: every error is logged and swallowed.

A task can declare what the listener would otherwise infer, in its executor_config:
    @task(queue="gpu", executor_config={"resource_class": "gpu_h100", "cost_category": "evaluation"})
resource_class must be a compute_hourly class of the price book; by default the class comes
from the task's pool (when named after a class), then its queue (the price book's `queues:`).
A task that reports the device it computed on (ml.costs.capture.report_device; the training
task does) is priced by that device (the price book's `devices:`), which wins over all of these.
"""

from __future__ import annotations

import logging
import sys

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)


@hookimpl
def on_task_instance_success(previous_state, task_instance):
    _book(task_instance)


@hookimpl
def on_task_instance_skipped(previous_state, task_instance):
    # A task that decided to skip (no change upstream, teachers agree) still ran and cost.
    _book(task_instance)


@hookimpl
def on_task_instance_failed(previous_state, task_instance, error):
    # Called for a failed try that will be retried as well as for the last one: each try ran
    # on a machine someone pays for.
    _book(task_instance)


def _book(ti) -> None:
    try:
        # Imported here: plugins load in every Airflow process, the ledger is needed only here.
        from ml.config import load_settings
        from ml.costs import capture

        settings = load_settings()
        # A RuntimeTaskInstance on a worker has .task; the API server's TaskInstance (a state
        # set by hand) may not, so every attribute is read defensively.
        task = getattr(ti, "task", None)
        dag = getattr(task, "dag", None)
        executor_config = getattr(task, "executor_config", None) or getattr(ti, "executor_config", None) or {}
        declared = executor_config if isinstance(executor_config, dict) else {}
        redistillation = capture.is_redistillation(_triggering_asset_names(ti))
        try:
            category = capture.category_for(
                ti.dag_id, ti.task_id, declared=declared.get("cost_category"), redistillation=redistillation
            )
        except ValueError as exc:  # a typo in the declaration must not lose the cost
            log.warning("Cost listener: %s Booking by the task's name instead.", exc)
            category = capture.category_for(ti.dag_id, ti.task_id, redistillation=redistillation)
        ran_on = (
            capture.reported_device(settings.state_dir, ti.dag_id, ti.run_id, ti.task_id, ti.try_number) or {}
        )
        capture.book_task_run(
            settings.ledger_url,
            settings.state_dir / "spool",
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=ti.try_number,
            map_index=getattr(ti, "map_index", -1),
            # The task's own queue first: dag.test() leaves the worker-side ti.queue "default".
            queue=getattr(task, "queue", None) or getattr(ti, "queue", None),
            pool=getattr(task, "pool", None) or getattr(ti, "pool", None),
            resource=declared.get("resource_class"),
            started_at=getattr(ti, "start_date", None),
            ended_at=getattr(ti, "end_date", None),
            workflow=capture.workflow_for(
                ti.dag_id, getattr(dag, "params", None), getattr(dag, "tags", None)
            ),
            category=category,
            price_book=settings.price_book_file,
            device=ran_on.get("device"),
            device_name=ran_on.get("device_name"),
        )
    except Exception:  # noqa: BLE001 - the cost of a task is never worth failing it
        log.exception("Cost listener: could not book %s", getattr(ti, "task_id", ti))


def _triggering_asset_names(ti) -> list[str]:
    """Names of the assets that triggered this run (only known on a worker's task instance)."""
    if type(ti).__name__ != "RuntimeTaskInstance":
        return []
    try:
        return [
            getattr(asset, "name", str(asset))
            for asset in ti.get_template_context()["triggering_asset_events"]
        ]
    except Exception:  # noqa: BLE001 - not knowing only means the run is not counted as re-distillation
        log.debug("Cost listener: no triggering asset events for %s", ti.task_id, exc_info=True)
        return []


class CostListenerPlugin(AirflowPlugin):
    name = "mlops_cost_listener"
    listeners = [sys.modules[__name__]]
