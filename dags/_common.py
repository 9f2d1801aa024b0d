"""What every DAG file shares: the workflows it is built from, the Assets, default arguments.

Parse-time work is reading one small YAML file; everything heavy is imported inside tasks.
Assets are defined here once, so a producer and its consumers cannot disagree on a name.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, BaseNotifier, CronTriggerTimetable

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


# The sender when the SMTP connection names none (its extra `from_email` wins).
NOTIFY_FROM = "mlops-posttrain@localhost"


class WorkflowNotifier(BaseNotifier):
    """Tells the channels of a workflow's `notify:` section about one event (ml/notify.py composes it).

    Hung on DAG and task callbacks, or called by a task that knows the facts (`message`,
    `version`). Email goes through the SMTP provider's hook (connection `smtp_conn_id`), the
    webhook through ml.notify. Every channel is tried; a failure raises after all were tried,
    which Airflow logs without failing the run (a callback) and a task catches (`send`).
    """

    def __init__(
        self,
        wf: Workflow,
        event: str,
        *,
        message: str | None = None,
        version: str | None = None,
        smtp_conn_id: str = "smtp_default",
    ):
        super().__init__()
        self.workflow, self.model, self.event = wf.name, wf.model_name, event
        self.email, self.webhook = list(wf.notify.email), wf.notify.webhook
        self.message, self.version, self.smtp_conn_id = message, version, smtp_conn_id

    def render_template_fields(self, context, jinja_env=None) -> None:
        # Nothing to render (no template fields), and a free-text reason must never be read as a
        # Jinja template; `dags test` also hands DAG callbacks a serialized DAG that cannot render.
        return None

    def notify(self, context) -> None:
        from ml.notify import NotifyError, compose, post_webhook

        notice = compose(self.event, self.workflow, model=self.model, **_facts(self, context))
        errors = []
        if self.email:
            try:
                from airflow.providers.smtp.hooks.smtp import SmtpHook

                with SmtpHook(smtp_conn_id=self.smtp_conn_id) as smtp:
                    smtp.send_email_smtp(
                        to=self.email,
                        subject=notice.subject,
                        html_content=notice.html(),
                        from_email=smtp.from_email or NOTIFY_FROM,
                    )
            except Exception as exc:  # noqa: BLE001 - the webhook is still tried; all causes are raised below
                errors.append(
                    f"email to {', '.join(self.email)} via connection {self.smtp_conn_id!r} failed: {exc}"
                )
        if self.webhook:
            try:
                post_webhook(self.webhook, notice)
            except NotifyError as exc:
                errors.append(str(exc))
        if errors:
            raise NotifyError(f"{self.event} notice for {self.workflow}: " + "; ".join(errors))

    def send(self, context) -> None:
        """Notify from inside a task: a channel that is down is logged, never fails the task."""
        try:
            self(context)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            print(f"notification not delivered: {exc}", flush=True)


def _facts(notifier: WorkflowNotifier, context) -> dict:
    """Run, version and message of a notice, from the notifier or the callback's context."""
    dag_run, ti = context.get("dag_run"), context.get("ti")
    facts = {
        "run_key": run_key(dag_run) if dag_run is not None else None,
        "version": notifier.version,
        "message": notifier.message,
    }
    if notifier.event == "promoted" and ti is not None and notifier.version is None:
        result = ti.xcom_pull(task_ids=ti.task_id) or {}  # promote's return value
        facts["version"] = result.get("champion")
        facts["message"] = (
            facts["message"] or f"{result.get('model')} v{result.get('champion')} now serves as @champion."
        )
    if notifier.event == "run_failed" and not facts["message"]:
        failed = getattr(ti, "task_id", None)
        cause = context.get("exception") or context.get("reason") or "see the task logs"
        facts["message"] = (
            f"{facts['run_key']} failed" + (f" at task {failed}" if failed else "") + f": {cause}"
        )
    return facts


def notifiers(wf: Workflow, event: str) -> list[WorkflowNotifier]:
    """The callbacks for `event`: none when the workflow does not subscribe to it or has no channel."""
    if event not in wf.notify.on or not (wf.notify.email or wf.notify.webhook):
        return []
    return [WorkflowNotifier(wf, event)]
