"""ingest_validate: gate every dropped batch before anything trains.

1. **list_batches** — files waiting in the workflow's drop folder (`mlops data import` puts them there).
2. **ingest_batch** (one mapped task per file) — curate, validate with Great Expectations; a failing
   batch is quarantined with its report and fails the run here, so nothing downstream runs;
   a passing batch joins the DVC-versioned training set.
3. **publish_dataset** — emits the workflow's dataset Asset (extra: the DVC version) when the
   training set changed, which schedules `distill`.
"""

from __future__ import annotations

import os
import sys

from airflow.sdk import dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

# Every Airflow component (dag-processor, workers, `dags test`) must find the sibling module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_ARGS, START, cron, dataset_asset, doc_md, run_key, workflows


def build(wf):
    dataset = dataset_asset(wf.name)

    @dag(dag_id=f"ingest_validate__{wf.name}", schedule=cron(wf.schedule.ingest) if wf.schedule.ingest else None, start_date=START, catchup=False,
         max_active_runs=1, default_args=DEFAULT_ARGS, tags=["mlops", "data", wf.name],
         doc_md=doc_md(__doc__, wf), params={"workflow": wf.name})
    def ingest_validate():
        @task
        def list_batches() -> list[str]:
            from ml.pipeline.ingest_validate import list_new_batches

            return list_new_batches(wf.name)

        @task
        def ingest_batch(name: str) -> dict:
            from ml.pipeline.ingest_validate import BatchRejected, ingest_batch

            try:
                return ingest_batch(wf.name, name)
            except BatchRejected as exc:
                raise AirflowFailException(str(exc)) from None  # a retry cannot fix bad data

        @task(outlets=[dataset])
        def publish_dataset(results: list[dict], *, dag_run=None, outlet_events=None) -> dict:
            from ml.pipeline.ingest_validate import publish_if_changed

            published = publish_if_changed(wf.name, run_key(dag_run))
            if published is None:
                raise AirflowSkipException("training set unchanged; no dataset event")
            outlet_events[dataset].extra = published
            return published

        publish_dataset(ingest_batch.expand(name=list_batches()))

    return ingest_validate()


for _wf in workflows():
    build(_wf)
