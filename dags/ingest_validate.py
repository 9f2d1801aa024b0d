"""ingest_validate: gate every dropped batch before anything trains.

1. **list_batches** — files waiting in the workflow's drop folder (`mlops data import` puts them there);
   an entry that is not a plain file (a link, a FIFO) is set aside in quarantine, a hidden one is
   reported, and neither blocks the others.
2. **ingest_batch** (one mapped task per file) — curate, validate with Great Expectations; a failing
   batch is quarantined with its report; a passing batch joins the DVC-versioned training set.
3. **publish_dataset** — emits the workflow's dataset Asset (extra: the DVC version) when the
   training set changed, which schedules `distill`: the good batches of a run are published even
   when another batch of it was rejected.
4. **check_rejections** — fails the run, naming each quarantined batch, if any was rejected.
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

    @dag(
        dag_id=f"ingest_validate__{wf.name}",
        schedule=cron(wf.schedule.ingest) if wf.schedule.ingest else None,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        tags=["mlops", "data", wf.name],
        doc_md=doc_md(__doc__, wf),
        params={"workflow": wf.name},
    )
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
                # Quarantined with its report; a retry cannot fix bad data, and the run fails at
                # check_rejections, after the batches that passed are published.
                print(str(exc))
                return {"batch": name, "rejected": str(exc)}

        @task(outlets=[dataset], trigger_rule="none_failed")
        def publish_dataset(*, dag_run=None, outlet_events=None) -> dict:
            from ml.pipeline.ingest_validate import publish_if_changed

            published = publish_if_changed(wf.name, run_key(dag_run))
            if published is None:
                raise AirflowSkipException("training set unchanged; no dataset event")
            outlet_events[dataset].extra = published
            return published

        @task(trigger_rule="none_failed")
        def check_rejections(results: list[dict]) -> int:
            rejected = [r["rejected"] for r in results or [] if r and r.get("rejected")]
            if rejected:
                # One line first (what `mlops run` shows), the full reasons after it.
                firsts = " | ".join(r.splitlines()[0] for r in rejected)
                raise AirflowFailException(
                    f"{len(rejected)} batch(es) rejected: {firsts}\n" + "\n".join(rejected)
                )
            return len(results or [])

        results = ingest_batch.expand(name=list_batches())
        published = publish_dataset()
        results >> published
        published >> check_rejections(results)

    return ingest_validate()


for _wf in workflows():
    build(_wf)
