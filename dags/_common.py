"""What every DAG file shares: the workflows it is built from, the Assets, default arguments.

Parse-time work is reading one small YAML file; everything heavy is imported inside tasks.
Assets are defined here once, so a producer and its consumers cannot disagree on a name.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, CronTriggerTimetable

from ml.config import load_settings
from ml.workflows import Workflow, load_workflows

START = pendulum.datetime(2026, 1, 1, tz="UTC")
DEFAULT_ARGS = {"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=1)}


def workflows() -> list[Workflow]:
    return list(load_workflows(load_settings().workflows_file).values())


def dataset_asset(workflow: str) -> Asset:
    """A validated, DVC-versioned training set was accepted; extra = {'version': md5}."""
    return Asset(name=f"{workflow}.dataset", uri=f"mlops://{workflow}/dataset", group="dataset")


def model_asset(workflow: str) -> Asset:
    """@champion of the workflow's model moved; extra = {'version': N}."""
    return Asset(name=f"{workflow}.model", uri=f"mlops://{workflow}/model", group="model")


def upstream_asset(workflow: str) -> Asset:
    """The open-weight base or the teacher changed; extra = old and new fingerprints."""
    return Asset(name=f"{workflow}.upstream", uri=f"mlops://{workflow}/upstream", group="upstream")


PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}


def cron(expression: str) -> CronTriggerTimetable:
    """A cron expression or @preset from the workflows file as a timetable (UTC)."""
    return CronTriggerTimetable(PRESETS.get(expression, expression), timezone="UTC")


def run_key(dag_run) -> str:
    """Idempotency key of a DAG run: a retry or re-run of the same run maps to the same key."""
    return f"{dag_run.dag_id}/{dag_run.run_id}"


def doc_md(module_doc: str, wf: Workflow) -> str:
    return f"{module_doc}\n\n**Workflow:** `{wf.name}` — {wf.description}"
