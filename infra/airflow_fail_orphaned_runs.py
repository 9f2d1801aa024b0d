"""Mark `airflow dags test` runs that no live process works on any more as failed.

`mlops run` drives each DAG through `airflow dags test`. When that process dies without
finishing (kill -9, a closed terminal, Ctrl-C), Airflow's record of the run stays `running`
for ever, and with max_active_runs=1 a scheduler would never start the DAG again. `ml` never
imports airflow, so `mlops run` calls this script (with AIRFLOW_HOME set) before each run and
after an interrupt:

    python infra/airflow_fail_orphaned_runs.py DAG_ID [--logical-date ISO]

Only runs that `dags test` started (triggered_by=test) are touched, and not one whose running
task instance belongs to a process still alive on this host. Prints a JSON list of what it
marked: [{"run_id": ..., "failed_tasks": [...]}].
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, alive
    return True


def fail_orphaned_runs(dag_id: str, logical_date: datetime | None = None) -> list[dict]:
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
        for run in session.scalars(query).all():
            tis = run.get_task_instances(session=session)
            here = get_hostname()
            if any(
                ti.state == TaskInstanceState.RUNNING and ti.hostname not in (None, "", here) for ti in tis
            ):
                continue  # a worker elsewhere: not ours to judge
            if any(ti.state == TaskInstanceState.RUNNING and _alive(ti.pid) for ti in tis):
                continue  # still being worked on by a live process on this host
            failed_tasks = []
            for ti in tis:
                if ti.state in finished:
                    continue
                if ti.state in (None, TaskInstanceState.SCHEDULED):
                    ti.state = TaskInstanceState.UPSTREAM_FAILED  # never started: nothing of it ran
                    continue
                ti.state = TaskInstanceState.FAILED  # it was running (or queued, or between tries)
                failed_tasks.append(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]")
            run.set_state(DagRunState.FAILED)
            marked.append({"run_id": run.run_id, "failed_tasks": failed_tasks})
    return marked


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dag_id")
    parser.add_argument(
        "--logical-date", type=datetime.fromisoformat, help="only the run of this logical date"
    )
    args = parser.parse_args()
    print(json.dumps(fail_orphaned_runs(args.dag_id, args.logical_date)))
