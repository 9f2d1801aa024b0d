"""watch_upstream: notice when the open-weight base model or the teacher changes, and say so once.

1. **check_upstream** — fingerprints the base model (content hash of its directory, or the
   registered version / pinned revision it names) and the teacher (the newest frontier
   model_version in the accepted call logs, or a local teacher's hash / registered version).
   The first run records a baseline. On a change, emits the workflow's upstream Asset with the
   old and new fingerprints in its extra, which schedules `distill`; otherwise it is skipped.
   A change the Asset's recent events already carry is never emitted twice (retries, re-runs,
   restarts). A missing or unreadable source fails the task naming the fix; nothing is emitted.
2. **acknowledge_change** — the new fingerprints become the state the next run compares with.

State: `<state>/upstream/<workflow>.jsonl` (history) and `.acknowledged.json`.
Scheduled by `schedule.watch_upstream` in dags/workflows.yaml.
"""

from __future__ import annotations

import os
import sys

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

# Every Airflow component (dag-processor, workers, `dags test`) must find the sibling module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_ARGS, START, cron, doc_md, run_key, upstream_asset, workflows

# How many of the Asset's newest events are searched for a change already emitted. Only the
# newest one can be un-acknowledged (one run at a time); the rest is slack for events emitted
# by hand or by another producer of the same Asset.
RECENT_EVENTS = 20


def build(wf):
    upstream = upstream_asset(wf.name)

    @dag(
        dag_id=f"watch_upstream__{wf.name}",
        schedule=cron(wf.schedule.watch_upstream) if wf.schedule.watch_upstream else None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mlops", "keeping-current", wf.name],
        doc_md=doc_md(__doc__, wf),
        params={"workflow": wf.name},
    )
    def watch_upstream():
        @task(inlets=[upstream], outlets=[upstream])
        def check_upstream(*, dag_run=None, inlet_events=None, outlet_events=None) -> dict:
            from ml.pipeline.watch_upstream import check
            from ml.upstream import UpstreamError

            recent = inlet_events[upstream].ascending(False).limit(RECENT_EVENTS)
            emitted = [e.extra.get("change_key") for e in recent if e.extra]
            try:
                change = check(wf.name, run_key(dag_run), emitted)
            except UpstreamError as exc:
                raise AirflowFailException(str(exc)) from None  # a retry cannot bring a missing model back
            if change is None:
                raise AirflowSkipException("upstream unchanged, or this change was emitted before; no event")
            outlet_events[upstream].extra = change
            return {
                "change_key": change["change_key"],
                "changed": change["changed"],
                "from_acknowledged": change["from_acknowledged"],
                "new": change["new"],
            }

        @task
        def acknowledge_change(change: dict, *, dag_run=None) -> dict:
            from ml.pipeline.watch_upstream import acknowledge

            return acknowledge(wf.name, run_key(dag_run), change)

        acknowledge_change(check_upstream())

    return watch_upstream()


for _wf in workflows():
    build(_wf)
