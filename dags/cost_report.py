"""cost_report: keep the books, and answer "does post-training pay, and from when?".

1. **book_metered** — frontier spend from the accepted call logs (tokens × the price book),
   this month's storage of datasets and model artifacts, and the workflow's equal share of the
   control plane (the price book's tooling_monthly, every month), into the append-only ledger.
   (Every task's compute is booked by the cost listener plugin as the task finishes.)
2. **build_report** — the ninety-day constraints measured on the call log, break-even of the
   frontier API vs. fully loaded post-training (beside the naive compute-only answer), the
   verdict, and `breakeven.html` / `breakeven.json` / `costs_focus.csv` in the reports folder.

Also refreshed whenever @champion moves (the model Asset), since its throughput sets the
self-hosted cost per call.
"""

from __future__ import annotations

import os
import sys

from airflow.sdk import AssetOrTimeSchedule, dag, task

# Every Airflow component (dag-processor, workers, `dags test`) must find the sibling module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_ARGS, START, cron, doc_md, model_asset, workflows


def build(wf):
    schedule = model_asset(wf.name)
    if wf.schedule.cost_report:
        schedule = AssetOrTimeSchedule(timetable=cron(wf.schedule.cost_report), assets=schedule)

    @dag(
        dag_id=f"cost_report__{wf.name}",
        schedule=schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mlops", "costs", wf.name],
        doc_md=doc_md(__doc__, wf),
        params={"workflow": wf.name},
    )
    def cost_report():
        @task
        def book_metered() -> dict:
            from ml.pipeline.cost_report import book_metered

            return book_metered(wf.name)

        @task
        def build_report(booked: dict) -> dict:
            from ml.pipeline.cost_report import build_report

            return build_report(wf.name)

        build_report(book_metered())

    return cost_report()


for _wf in workflows():
    build(_wf)
