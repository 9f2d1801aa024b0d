"""distill: teach a small student the teacher's behaviour, and promote it only if it is better.

1. **prepare_targets** — the teacher's labels / probabilities for the current training set.
2. **train_student** (`gpu` queue) — fine-tune the base model on the distillation loss;
   checkpoints let a retry resume; CUDA with bf16 where present, else the CPU.
3. **evaluate_and_gate** — challenger vs @champion on the frozen evaluation set in one process:
   macro-F1, per-class F1, p99 latency at batch 1 against the SLA, cost per 1,000 calls.
4. **register_challenger** — one MLflow model version per DAG run, lineage tags, `@challenger`.
5. **promote** — moves `@champion` (compare-and-set) when the gate passed and approval is
   automatic, and emits the model Asset.

Scheduled by the workflow's dataset Asset and/or its cron (`schedule:` in dags/workflows.yaml).
"""

from __future__ import annotations

import os
import sys

from airflow.sdk import AssetOrTimeSchedule, dag, task
from airflow.sdk.exceptions import AirflowSkipException

# Every Airflow component (dag-processor, workers, `dags test`) must find the sibling module.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import DEFAULT_ARGS, START, cron, dataset_asset, doc_md, model_asset, run_key, workflows


def schedule_for(wf):
    """cron, data-driven, or both — declared per workflow, never edited here."""
    data = dataset_asset(wf.name) if wf.schedule.on_new_data else None
    timed = cron(wf.schedule.cron) if wf.schedule.cron else None
    if data is not None and timed is not None:
        return AssetOrTimeSchedule(timetable=timed, assets=data)
    return data or timed


def build(wf):
    model = model_asset(wf.name)

    @dag(dag_id=f"distill__{wf.name}", schedule=schedule_for(wf), start_date=START, catchup=False,
         max_active_runs=1, default_args=DEFAULT_ARGS, tags=["mlops", "training", wf.name],
         doc_md=doc_md(__doc__, wf), params={"workflow": wf.name})
    def distill():
        @task
        def prepare_targets(*, dag_run=None) -> dict:
            from ml.pipeline.distill import prepare_targets

            return prepare_targets(wf.name, run_key(dag_run))

        @task(queue="gpu")
        def train_student(targets: dict, *, dag_run=None) -> dict:
            from ml.pipeline.distill import train

            return train(wf.name, run_key(dag_run), targets)

        @task
        def evaluate_and_gate(trained: dict, *, dag_run=None) -> dict:
            from ml.pipeline.distill import evaluate_and_gate

            return evaluate_and_gate(wf.name, run_key(dag_run), trained)

        @task
        def register_challenger(trained: dict, gate: dict, *, dag_run=None) -> dict:
            from ml.pipeline.distill import register_challenger

            return register_challenger(wf.name, run_key(dag_run), trained, gate)

        @task(outlets=[model])
        def promote(registered: dict, *, dag_run=None, outlet_events=None) -> dict:
            from ml.pipeline.distill import promote

            result = promote(wf.name, run_key(dag_run), registered)
            if not result["promoted"]:
                raise AirflowSkipException(f"@champion unchanged: {result}")
            outlet_events[model].extra = {"model": result["model"], "version": result["champion"]}
            return result

        trained = train_student(prepare_targets())
        promote(register_challenger(trained, evaluate_and_gate(trained)))

    return distill()


for _wf in workflows():
    build(_wf)
