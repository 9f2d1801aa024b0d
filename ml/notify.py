"""Notifications: who is told what when a version waits, is rejected or promoted, or a run fails.

A workflow's `notify:` section (ml/workflows.py) names the events and the channels: email
addresses and one generic JSON webhook. This module composes the notice (one text for every
channel) and posts the webhook; it is plain Python, stdlib only, so the DAG files may import it
at parse time. Airflow's notifier mechanism calls it: `dags/_common.py::WorkflowNotifier` is the
BaseNotifier the DAGs hang on their callbacks, and it sends the email through the SMTP
provider's hook (Airflow connection `smtp_default`, or the one named in the workflow).

A notice is best effort by design: a mail server that is down must not fail a training run
or block a promotion, so the notifier logs a failed send and the run goes on.
"""

from __future__ import annotations

import html
import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

# The events a workflow may subscribe to, in the order they happen in a distill run.
EVENTS = ("approval_waiting", "rejected", "approval_timed_out", "promoted", "run_failed")
WEBHOOK_TIMEOUT_S = 10.0

_TITLES = {
    "approval_waiting": "{model} v{version} waits for approval",
    "rejected": "{model} v{version} was rejected",
    "approval_timed_out": "{model} v{version}: nobody decided in time",
    "promoted": "{model} v{version} is @champion",
    "run_failed": "{workflow}: run {run_id} failed",
}


class NotifyError(RuntimeError):
    """A notice could not be delivered; the message names the channel and the cause."""


@dataclass(frozen=True)
class Notice:
    """One event of one workflow, as every channel shows it (the webhook's JSON is `asdict`)."""

    event: str
    workflow: str
    subject: str
    message: str
    model: str | None = None
    version: str | None = None
    run_key: str | None = None
    url: str | None = None
    at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def payload(self) -> dict:
        return {"source": "mlops-posttrain", **asdict(self)}

    def html(self) -> str:
        """The email body; every value is escaped (a rejection reason is free text)."""
        rows = [
            ("workflow", self.workflow),
            ("model", self.model),
            ("version", self.version),
            ("run", self.run_key),
            ("link", self.url),
            ("at", self.at),
        ]
        cells = "".join(
            f"<tr><th align='left'>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows if v
        )
        return (
            f"<p>{html.escape(self.message).replace(chr(10), '<br>')}</p><table>{cells}</table>"
            f"<p style='color:#666'>event: {html.escape(self.event)}</p>"
        )


def compose(
    event: str,
    workflow: str,
    *,
    message: str = "",
    model: str | None = None,
    version: str | None = None,
    run_key: str | None = None,
    url: str | None = None,
) -> Notice:
    """The notice for `event`; `message` says what happened and, where there is one, what to do."""
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}; one of {', '.join(EVENTS)}.")
    run_id = (run_key or "").split("/", 1)[-1] or "?"
    subject = "[mlops] " + _TITLES[event].format(
        model=model or f"{workflow}_student", version=version or "?", workflow=workflow, run_id=run_id
    )
    return Notice(
        event=event,
        workflow=workflow,
        subject=subject,
        message=message or subject,
        model=model,
        version=None if version is None else str(version),
        run_key=run_key,
        url=url,
    )


def approval_event(result: dict) -> str | None:
    """The notice one look of the approval sensor sends (ml.pipeline.distill.await_approval's result).

    Only that task knows these moments; each is sent once: a rejection or a timeout ends the
    task, and only the look that opened the wait says so (`opened`).
    """
    state = result.get("state")
    if state == "waiting":
        return "approval_waiting" if result.get("opened") else None
    return {"rejected": "rejected", "timed_out": "approval_timed_out"}.get(state)


def post_webhook(url: str, notice: Notice, *, timeout_s: float = WEBHOOK_TIMEOUT_S) -> int:
    """POST the notice as JSON; returns the HTTP status. Raises NotifyError naming the URL and cause."""
    body = json.dumps(notice.payload()).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "mlops-posttrain"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - URL checked at load
            return response.status
    except urllib.error.HTTPError as exc:
        raise NotifyError(
            f"webhook {url} answered HTTP {exc.code} to the {notice.event} notice; check the receiver's logs."
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotifyError(
            f"webhook {url} not reachable for the {notice.event} notice ({reason}); "
            "check notify.webhook in the workflows file."
        ) from None


def check_config(on, email, webhook) -> list[str]:
    """Problems with a `notify:` section, each naming the key and the fix (empty when it is valid)."""
    problems = []
    unknown = [e for e in on if e not in EVENTS]
    if unknown:
        problems.append(f"on: {unknown[0]!r} is not an event; choose from {', '.join(EVENTS)}")
    bad = [a for a in email if a.count("@") != 1 or a.startswith("@") or a.endswith("@") or " " in a]
    if bad:
        problems.append(f"email: {bad[0]!r} is not an email address (name@example.com)")
    if webhook is not None and not webhook.startswith(("http://", "https://")):
        problems.append(f"webhook: {webhook!r} must be an http:// or https:// URL")
    return problems
