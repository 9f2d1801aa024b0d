"""frontier_report: the ninety-day test of the frontier API, and the training data its log yields.

1. **export_for_curation** — completed days of the proxy's call log (`mlops proxy`) become one
   call-log batch in the drop folder, which ingest_validate gates and versions; a stable sample
   of answered calls (param `gold_share`) is held out of training and written, without the
   teacher's answer, to `<state>/labeling/<workflow>/` for human gold labels.
2. **build_report** — latency p50/p95/p99 against the SLA, tokens and cost per call and cost per
   month against the budget, error and timeout rate and availability against the target, over the
   last `window_days` (90), with the verdict; where the workflow's task curates answers (an
   extraction workflow), the teacher's errors by reason as curation refuses them; written to
   `<reports>/<workflow>/frontier_constraints.json`.

Runs on the workflow's `schedule.cost_report` cadence (daily by default), which it feeds.
"""

from __future__ import annotations

import os
import sys

from airflow.sdk import dag, task

# Every Airflow component (dag-processor, workers, `dags test`) must find the sibling module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_ARGS, START, cron, doc_md, workflows

from ml.costs.unit_costs import NINETY_DAY_WINDOW_DAYS  # plain constants: cheap at parse time


def build(wf):
    @dag(
        dag_id=f"frontier_report__{wf.name}",
        schedule=cron(wf.schedule.cost_report or "@daily"),
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mlops", "frontier", wf.name],
        doc_md=doc_md(__doc__, wf),
        params={"workflow": wf.name, "window_days": NINETY_DAY_WINDOW_DAYS, "gold_share": 0.05},
    )
    def frontier_report():
        @task
        def export_for_curation(*, params=None) -> dict:
            from ml.frontier import export_for_curation

            return export_for_curation(wf.name, gold_share=float(params["gold_share"]))

        @task
        def build_report(exported: dict, *, params=None) -> dict:
            from ml.frontier import build_report

            # With no call logged yet the report says "not measured yet": nothing to retry.
            report = build_report(wf.name, window_days=int(params["window_days"]))
            return {
                "verdict": report["verdict"],
                "failing": report["constraints_failing"],
                "path": report["path"],
            }

        build_report(export_for_curation())

    return frontier_report()


for _wf in workflows():
    build(_wf)
