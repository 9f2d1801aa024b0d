"""Mark `airflow dags test` runs that no live process works on any more as failed.

`mlops run` drives each DAG through `airflow dags test`. When that process dies without
finishing (kill -9, a closed terminal, Ctrl-C), Airflow's record of the run stays `running`
for ever, and with max_active_runs=1 a scheduler would never start the DAG again. `ml` never
imports airflow, so `mlops run` calls this script (with AIRFLOW_HOME set) before each run and
after an interrupt:

    python infra/airflow_fail_orphaned_runs.py DAG_ID [--logical-date ISO]

Only runs that `dags test` started (triggered_by=test) are touched, and not one whose running
task instance belongs to a process still alive on this host. Prints a JSON list of what it
marked: [{"run_id": ..., "logical_date": ..., "failed_tasks": [...], "killed_tries": [...]}].
killed_tries are the facts of each try that was running when its process died (start, try
number, queue, pool, declared resource class and category, last heartbeat): the cost listener
never saw them end, so `mlops` books them (ml/airflow_runner.py). Such a try is left without an
end date; with --logical-date, a run already marked failed that still has one is reported again
(already_failed: true), so a sweep interrupted before it booked is finished by the next one
(the booking is idempotent).
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime
from pathlib import Path


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    try:  # a killed process not yet reaped by its parent is a zombie: it works on nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def fail_orphaned_runs(dag_id: str, logical_date: datetime | None = None) -> list[dict]:
    from airflow._shared.timezones import timezone
    from airflow.models.dagrun import DagRun
    from airflow.utils.net import get_hostname
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select

    finished = {
        TaskInstanceState.SUCCESS,
        TaskInstanceState.FAILED,
        TaskInstanceState.SKIPPED,
        TaskInstanceState.UPSTREAM_FAILED,
        TaskInstanceState.REMOVED,
    }
    marked = []
    with create_session() as session:
        query = select(DagRun).where(
            DagRun.dag_id == dag_id,
            DagRun.state == DagRunState.RUNNING,
            DagRun.triggered_by == DagRunTriggeredByType.TEST,
        )
        if logical_date is not None:
            query = query.where(DagRun.logical_date == logical_date)
            marked.extend(_already_failed(session, dag_id, logical_date))
        for run in session.scalars(query).all():
            tis = run.get_task_instances(session=session)
            here = get_hostname()
            if any(
                ti.state == TaskInstanceState.RUNNING and ti.hostname not in (None, "", here) for ti in tis
            ):
                continue  # a worker elsewhere: not ours to judge
            if any(ti.state == TaskInstanceState.RUNNING and _alive(ti.pid) for ti in tis):
                continue  # still being worked on by a live process on this host
            failed_tasks, killed = [], []
            for ti in tis:
                if ti.state in finished:
                    continue
                if ti.state in (None, TaskInstanceState.SCHEDULED):
                    ti.state = TaskInstanceState.UPSTREAM_FAILED  # never started: nothing of it ran
                    continue
                if ti.state == TaskInstanceState.RUNNING and ti.start_date is not None:
                    killed.append(_try_facts(ti))  # its end is left open: the next sweep knows it
                else:  # queued or between tries: this try never ran, its previous one was booked
                    ti.end_date = ti.end_date or timezone.utcnow()
                ti.state = TaskInstanceState.FAILED
                failed_tasks.append(_label(ti))
            run.set_state(DagRunState.FAILED)
            marked.append(_report(run, failed_tasks, killed))
    return marked


def _already_failed(session, dag_id: str, logical_date: datetime) -> list[dict]:
    """A run of this date that an earlier sweep marked failed, with tries it left open."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy import select

    query = select(DagRun).where(
        DagRun.dag_id == dag_id,
        DagRun.state == DagRunState.FAILED,
        DagRun.triggered_by == DagRunTriggeredByType.TEST,
        DagRun.logical_date == logical_date,
    )
    out = []
    for run in session.scalars(query).all():
        open_tries = [
            ti
            for ti in run.get_task_instances(session=session)
            if ti.state == TaskInstanceState.FAILED and ti.start_date is not None and ti.end_date is None
        ]
        if open_tries:
            report = _report(run, [_label(ti) for ti in open_tries], [_try_facts(ti) for ti in open_tries])
            out.append(report | {"already_failed": True})
    return out


def _label(ti) -> str:
    return ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _report(run, failed_tasks: list[str], killed: list[dict]) -> dict:
    return {
        "run_id": run.run_id,
        "logical_date": _iso(run.logical_date),
        "failed_tasks": failed_tasks,
        "killed_tries": killed,
    }


def _try_facts(ti) -> dict:
    """What the cost listener would have read off the task instance at its end."""
    declared = ti.executor_config if isinstance(ti.executor_config, dict) else {}
    return {
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "try_number": ti.try_number,
        "queue": ti.queue,
        "pool": ti.pool,
        "resource_class": declared.get("resource_class"),
        "cost_category": declared.get("cost_category"),
        "start_date": _iso(ti.start_date),
        "last_heartbeat_at": _iso(ti.last_heartbeat_at),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dag_id")
    parser.add_argument(
        "--logical-date", type=datetime.fromisoformat, help="only the run of this logical date"
    )
    args = parser.parse_args()
    print(json.dumps(fail_orphaned_runs(args.dag_id, args.logical_date)))
