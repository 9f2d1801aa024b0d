"""The distill DAG's approval step, as parsed: a reschedule-mode sensor between registration and
promotion, whose backstop timeout follows the workflow's approval_timeout_hours."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ml.registry import WAIT_POLL_MAX_S

ROOT = Path(__file__).resolve().parents[2]
TWO = ROOT / "tests" / "fixtures" / "workflows_two.yaml"

PARSE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {}
for wf in ("ticket_routing", "clause_classification"):
    dag = bag.dags[f"distill__{wf}"]
    wait = dag.task_dict["wait_for_approval"]
    out[wf] = {"mode": wait.mode, "timeout": wait.timeout, "is_sensor": getattr(wait, "_is_sensor", False),
               "max_wait_s": wait.max_wait.total_seconds(),
               "upstream": sorted(wait.upstream_task_ids), "downstream": sorted(wait.downstream_task_ids),
               "promote_upstream": sorted(dag.task_dict["promote"].upstream_task_ids)}
print("RESULT" + json.dumps(out))
"""


def test_wait_for_approval_is_a_reschedule_sensor_between_register_and_promote(tmp_path):
    workflows = tmp_path / "workflows.yaml"
    workflows.write_text(
        TWO.read_text().replace(
            "gate: {approval: manual}", "gate: {approval: manual, approval_timeout_hours: 2}"
        )
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLOPS_STATE_DIR": str(tmp_path / "state"),
        "MLOPS_WORKFLOWS_FILE": str(workflows),
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
    for wf, wait in parsed.items():
        # Reschedule: no worker slot is held while a model owner takes hours to decide.
        assert (wait["is_sensor"], wait["mode"]) == (True, "reschedule"), wf
        assert wait["upstream"] == ["register_challenger"] and wait["downstream"] == ["promote"], wf
        assert wait["promote_upstream"] == ["register_challenger", "wait_for_approval"], wf
        # The CLI reads a wait as abandoned when its deadline is older than two of the longest looks.
        assert wait["max_wait_s"] == WAIT_POLL_MAX_S, wf
    # The registry deadline fails the run; the sensor's own timeout is a later backstop.
    assert parsed["clause_classification"]["timeout"] > 2 * 3600
    assert parsed["clause_classification"]["timeout"] < parsed["ticket_routing"]["timeout"]  # 72 h by default
