"""Books every task instance's compute into the cost ledger (an Airflow 3.3 listener plugin).

After each try of each task (success, failure, or failure before a retry) the worker calls
the hooks below; they read the facts off the task instance and hand them to
ml.costs.capture.book_try, which prices and books them, or spools them when the ledger
is unreachable (`mlops` books a try whose process was killed the same way). Nothing here may fail a task: every error is logged and swallowed.

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

        # A RuntimeTaskInstance on a worker has .task; the API server's TaskInstance (a state
        # set by hand) may not, so every attribute is read defensively.
        task = getattr(ti, "task", None)
        dag = getattr(task, "dag", None)
        executor_config = getattr(task, "executor_config", None) or getattr(ti, "executor_config", None) or {}
        capture.book_try(
            load_settings(),
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            try_number=ti.try_number,
            map_index=getattr(ti, "map_index", -1),
            # The task's own queue first: dag.test() leaves the worker-side ti.queue "default".
            queue=getattr(task, "queue", None) or getattr(ti, "queue", None),
            pool=getattr(task, "pool", None) or getattr(ti, "pool", None),
            declared=executor_config,
            started_at=getattr(ti, "start_date", None),
            ended_at=getattr(ti, "end_date", None),
            triggering_asset_names=_triggering_asset_names(ti),
            dag_params=getattr(dag, "params", None),
            dag_tags=getattr(dag, "tags", None),
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
