"""A bad setting fails at once: the DAG file's import error names it, and a configuration error
raised in a task (a refused label, a setting a retry cannot fix) fails the task without retries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import distill
from airflow.sdk.exceptions import AirflowFailException
from ml.teachers import TeacherMismatchError
from ml.workflows import WorkflowError
out = {}
for exc in (WorkflowError("training.epochs: -1"), TeacherMismatchError("label 'x?' unknown"), RuntimeError("disk full")):
    try:
        with distill.fail_without_retry_on_config_errors():
            raise exc
    except Exception as raised:
        out[type(exc).__name__] = [type(raised).__name__, str(raised)]
# Then the same DAG file parsed against a workflows file with an out-of-range value.
os.environ["MLOPS_WORKFLOWS_FILE"] = sys.argv[2]
from airflow.dag_processing.dagbag import DagBag
out["import_errors"] = list(DagBag(dag_folder=sys.argv[1] + "/distill.py").import_errors.values())
print("RESULT" + json.dumps(out))
"""


def test_config_errors_fail_at_once_and_a_bad_value_is_the_dag_files_import_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "dags" / "workflows.yaml").read_text().replace("max_epochs: 3", "max_epochs: -1"))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLOPS_STATE_DIR": str(tmp_path / "state"),
        "MLOPS_WORKFLOWS_FILE": str(ROOT / "dags" / "workflows.yaml"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(ROOT / "dags"), str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))[len("RESULT") :])
    assert out["WorkflowError"] == ["AirflowFailException", "WorkflowError: training.epochs: -1"]
    assert out["TeacherMismatchError"][0] == "AirflowFailException"
    assert out["RuntimeError"] == ["RuntimeError", "disk full"]  # may be transient: Airflow's retries apply
    assert any("training.max_epochs: -1.0 is out of range" in e for e in out["import_errors"]), out
