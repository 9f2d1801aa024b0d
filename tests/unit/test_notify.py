"""Notices (ml/notify.py) and the workflows file's `notify:` section; the webhook against a receiver
on 127.0.0.1 (tests/integration/local_receivers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ml.notify import EVENTS, NotifyError, compose, post_webhook
from ml.workflows import Notify, WorkflowError, load_workflows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from local_receivers import WebhookReceiver  # noqa: E402

BASE = "workflows:\n  tickets:\n    labels: [billing, login]\n"


def load(tmp_path: Path, notify: str):
    path = tmp_path / "workflows.yaml"
    path.write_text(BASE + f"    notify: {notify}\n")
    return load_workflows(path)["tickets"]


def test_notify_section_reads_on_email_and_webhook(tmp_path):
    wf = load(
        tmp_path,
        "{on: [approval_waiting, run_failed], email: [owner@example.com], "
        "webhook: 'https://hooks.example.com/x'}",
    )
    # `on` is a YAML 1.1 boolean key; it must still be read as the event list.
    assert wf.notify == Notify(
        on=("approval_waiting", "run_failed"),
        email=("owner@example.com",),
        webhook="https://hooks.example.com/x",
    )
    assert load(tmp_path, "{email: one@example.com}").notify.email == ("one@example.com",)
    assert load(tmp_path, "{}").notify.on == EVENTS  # every event, sent nowhere until a channel is set


@pytest.mark.parametrize(
    "notify, names",
    [
        ("{on: [approval_wait]}", "'approval_wait' is not an event"),
        ("{email: [owner.example.com]}", "'owner.example.com' is not an email address"),
        ("{webhook: 'ftp://x'}", "must be an http:// or https:// URL"),
        ("{on: run_failed, mail: [a@b.c]}", "unknown key 'mail'"),
        ("{on: {run_failed: true}}", "expected a list"),
    ],
)
def test_bad_notify_section_names_key_and_fix(tmp_path, notify, names):
    with pytest.raises(WorkflowError, match="notify") as err:
        load(tmp_path, notify)
    assert names in str(err.value)


def test_notice_subject_message_and_escaped_html():
    notice = compose(
        "rejected",
        "tickets",
        model="tickets_student",
        version=7,
        run_key="distill__tickets/manual_1",
        message="too slow <script>alert(1)</script>",
    )
    assert notice.subject == "[mlops] tickets_student v7 was rejected"
    assert notice.payload()["event"] == "rejected" and notice.payload()["version"] == "7"
    assert "<script>" not in notice.html() and "&lt;script&gt;" in notice.html()
    assert "distill__tickets/manual_1" in notice.html()
    assert (
        compose("run_failed", "tickets", run_key="distill__tickets/r9").subject
        == "[mlops] tickets: run r9 failed"
    )
    with pytest.raises(ValueError, match="unknown notification event"):
        compose("exploded", "tickets")


def test_webhook_posts_the_notice_as_json():
    notice = compose(
        "approval_waiting",
        "tickets",
        model="tickets_student",
        version="3",
        message="mlops models approve 3 --reason TEXT",
    )
    with WebhookReceiver() as hook:
        assert post_webhook(hook.url, notice) == 204
        got = hook.wait_for(1)
    assert len(got) == 1 and got[0]["content_type"] == "application/json"
    body = got[0]["json"]
    assert (body["event"], body["workflow"], body["model"], body["version"]) == (
        "approval_waiting",
        "tickets",
        "tickets_student",
        "3",
    )
    assert body["message"] == "mlops models approve 3 --reason TEXT" and body["source"] == "mlops-posttrain"


def test_webhook_failures_name_the_url_and_cause():
    notice = compose("promoted", "tickets", version="2")
    with WebhookReceiver(fail_with=500) as hook:
        with pytest.raises(NotifyError, match=r"answered HTTP 500 to the promoted notice"):
            post_webhook(hook.url, notice)
        url = hook.url
    with pytest.raises(NotifyError, match="not reachable") as err:  # the receiver is gone now
        post_webhook(url, notice, timeout_s=5)
    assert url in str(err.value)
