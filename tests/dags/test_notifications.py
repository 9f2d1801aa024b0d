"""Notifications through Airflow's notifier mechanism, in a real DAG run (dag.test() on SQLite).

A probe DAG wired exactly as dags/distill.py wires its events, with dags/_common.py's
WorkflowNotifier: a task that notifies from inside (approval_waiting, as the approval sensor
does), a task success callback (promoted, from the task's return value), and a DAG failure
callback (run_failed). Email goes through the SMTP provider's hook to a local SMTP server, the
webhook to a local HTTP receiver, both on 127.0.0.1 in this process. Also: the distill DAGs hang
the callbacks only for the events a workflow subscribes to, and a channel that is down is
logged without failing the task. About half a minute: one `airflow db migrate`, one DAG run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from local_receivers import SmtpReceiver, WebhookReceiver  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

PROBE_DAG = textwrap.dedent("""
    import sys
    sys.path.insert(0, {dags!r})
    import pendulum
    from airflow.sdk import dag, task
    from _common import WorkflowNotifier, notifiers, workflows

    wf = workflows()[0]

    @dag(dag_id="notify_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
         on_failure_callback=notifiers(wf, "run_failed") or None)
    def probe():
        @task
        def wait_for_approval(*, dag_run=None):
            WorkflowNotifier(wf, "approval_waiting", message="v3 waits: mlops models approve 3 --reason TEXT",
                             version="3").send({{"dag_run": dag_run}})
            # A channel that is down: logged, the task goes on.
            WorkflowNotifier(wf, "approval_waiting", smtp_conn_id="smtp_down").send({{"dag_run": dag_run}})

        @task(on_success_callback=notifiers(wf, "promoted"))
        def promote():
            return {{"model": wf.model_name, "champion": "3", "promoted": True}}

        @task(retries=0)
        def cost_report():
            raise RuntimeError("ledger unreachable: disk full")

        wait_for_approval() >> promote() >> cost_report()

    the_dag = probe()

    if __name__ == "__main__":
        the_dag.test()
""")

WORKFLOWS = """
workflows:
  tickets:
    labels: [billing, login]
    notify:
      on: [approval_waiting, promoted, run_failed]
      email: [owner@example.com, oncall@example.com]
      webhook: {webhook}
"""


@pytest.mark.integration
def test_each_event_reaches_the_local_smtp_server_and_webhook(tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "notify_probe.py").write_text(PROBE_DAG.format(dags=str(ROOT / "dags")))
    with SmtpReceiver() as smtp, WebhookReceiver() as hook:
        (tmp_path / "workflows.yaml").write_text(WORKFLOWS.format(webhook=hook.url))
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(tmp_path / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "MLOPS_STATE_DIR": str(tmp_path / "state"),
            "MLOPS_WORKFLOWS_FILE": str(tmp_path / "workflows.yaml"),
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "extra": {
                        "disable_ssl": True,
                        "disable_tls": True,
                        "from_email": "airflow@example.com",
                        "timeout": 10,
                        "retry_limit": 0,
                    },
                }
            ),
            # Nothing listens on port 9 (discard): the down channel.
            "AIRFLOW_CONN_SMTP_DOWN": json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": 9,
                    "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 5, "retry_limit": 0},
                }
            ),
        }
        airflow = str(Path(sys.executable).parent / "airflow")
        migrated = subprocess.run(
            [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600
        )
        assert migrated.returncode == 0, migrated.stdout[-2000:] + migrated.stderr[-2000:]
        run = subprocess.run(
            [sys.executable, str(dags / "notify_probe.py")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        log = run.stdout + run.stderr
        received = [h["json"] for h in hook.wait_for(4)]
        mails = smtp.wait_for(3)

    # The notice whose email channel was down still reached the webhook: every channel is tried.
    assert sorted(h["event"] for h in received) == [
        "approval_waiting",
        "approval_waiting",
        "promoted",
        "run_failed",
    ], log[-4000:]
    hooks = {h["event"]: h for h in received if h["message"] != h["subject"]}
    assert (
        hooks["approval_waiting"]["message"].startswith("v3 waits")
        and hooks["approval_waiting"]["version"] == "3"
    )
    # The success callback read the version from the task's return value.
    assert (hooks["promoted"]["model"], hooks["promoted"]["version"]) == ("tickets_student", "3")
    failed = hooks["run_failed"]
    assert failed["run_key"].startswith("notify_probe/") and "notify_probe/" in failed["message"]
    assert "failed" in failed["message"] and failed["workflow"] == "tickets"

    subjects = sorted(m["message"]["Subject"] for m in mails)
    assert subjects == sorted(
        [
            "[mlops] tickets_student v3 waits for approval",
            "[mlops] tickets_student v3 is @champion",
            f"[mlops] tickets: run {failed['run_key'].split('/', 1)[1]} failed",
        ]
    ), log[-4000:]
    for mail in mails:
        assert mail["from"] == "airflow@example.com"
        assert sorted(mail["to"]) == ["oncall@example.com", "owner@example.com"]
    waiting = next(m for m in mails if "waits" in m["message"]["Subject"])
    assert "mlops models approve 3 --reason TEXT" in waiting["message"].get_body(("html",)).get_content()
    # The down channel was logged and the task went on (promote ran after it).
    assert "notification not delivered" in log and "smtp_down" in log


PARSE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": list(bag.import_errors)}
for dag_id, dag in bag.dags.items():
    if dag_id.startswith("distill__"):
        out[dag_id.split("__", 1)[1]] = {
            "dag_failure": [type(c).__name__ for c in (dag.on_failure_callback or [])],
            "promote_success": [c.event for c in dag.task_dict["promote"].on_success_callback]}
print("RESULT" + json.dumps(out))
"""

# One parse, one workflow per case (each parse of the DAG folder takes several seconds).
SUBSCRIPTIONS = {
    "subscribed": (
        "{on: [promoted, run_failed], webhook: 'http://127.0.0.1:1/x'}",
        (["WorkflowNotifier"], ["promoted"]),
    ),
    "other_events": ("{on: [approval_waiting], email: [a@example.com]}", ([], [])),
    "no_channel": ("{on: [promoted, run_failed]}", ([], [])),  # nothing to call
    "no_section": (None, ([], [])),
}


def test_distill_hangs_notifiers_only_for_subscribed_events(tmp_path):
    lines = ["workflows:"]
    for name, (notify, _) in SUBSCRIPTIONS.items():
        lines += [f"  {name}:", "    labels: [billing, login]"] + (
            [f"    notify: {notify}"] if notify else []
        )
    (tmp_path / "workflows.yaml").write_text("\n".join(lines) + "\n")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLOPS_STATE_DIR": str(tmp_path / "state"),
        "MLOPS_WORKFLOWS_FILE": str(tmp_path / "workflows.yaml"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PARSE, str(ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(
        next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))[len("RESULT") :]
    )
    assert parsed.pop("errors") == []
    got = {name: (dag["dag_failure"], dag["promote_success"]) for name, dag in parsed.items()}
    assert got == {name: expected for name, (_, expected) in SUBSCRIPTIONS.items()}


@pytest.mark.parametrize(
    "result, event",
    [
        ({"state": "waiting", "opened": True}, "approval_waiting"),
        ({"state": "waiting", "opened": False}, None),  # a later look of the same wait: told once
        ({"state": "waiting"}, None),
        ({"state": "rejected"}, "rejected"),
        ({"state": "timed_out"}, "approval_timed_out"),
        ({"state": "approved"}, None),  # promote's success callback tells
        ({"state": "not_needed"}, None),
    ],
)
def test_the_approval_sensor_sends_each_notice_once(result, event):
    from ml.notify import approval_event

    assert approval_event(result) == event
