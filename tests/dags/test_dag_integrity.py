"""DAG integrity: the DAG files import cleanly, stay light at parse time, and are wired as designed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TWO = ROOT / "tests" / "fixtures" / "workflows_two.yaml"

# Parsing happens in a child process: a clean sys.modules shows what the DAG files import,
# and AIRFLOW_HOME points at a throw-away folder.
PARSE = r"""
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = [m for m in ("torch", "transformers", "mlflow", "great_expectations", "dvc", "sklearn") if m in sys.modules]
def names(cond):
    if cond is None:
        return []
    if hasattr(cond, "objects"):
        return [n for o in cond.objects for n in names(o)]
    return [cond.name] if hasattr(cond, "name") else []
out = {"errors": {k: v[-400:] for k, v in bag.import_errors.items()}, "heavy": heavy, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "file": dag.fileloc, "tags": sorted(dag.tags), "doc_md": bool(dag.doc_md),
        "retries": {t.task_id: t.retries for t in dag.tasks},
        "queues": {t.task_id: t.queue for t in dag.tasks},
        "schedule": type(dag.timetable).__name__, "timetable": repr(dag.timetable),
        "assets_in": sorted(names(getattr(dag.timetable, "asset_condition", None))),
        "outlets": sorted(o.name for t in dag.tasks for o in t.outlets),
    }
print("RESULT" + json.dumps(out))
"""


def parse(tmp_path: Path, workflows_file: Path) -> dict:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "MLOPS_STATE_DIR": str(tmp_path / "state"),
        "MLOPS_WORKFLOWS_FILE": str(workflows_file),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", PARSE, str(ROOT / "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> dict:
    return parse(tmp_path_factory.mktemp("dagbag"), TWO)


def test_no_import_errors(bag):
    assert bag["errors"] == {}


def test_no_heavy_imports_at_parse_time(bag):
    assert bag["heavy"] == [], "DAG files must import heavy libraries inside tasks, not at module level"


def test_one_dag_per_stage_and_workflow(bag):
    expected = {
        f"{stage}__{wf}"
        for stage in ("ingest_validate", "distill", "cost_report")
        for wf in ("ticket_routing", "clause_classification")
    }
    assert expected <= set(bag["dags"])


@pytest.mark.parametrize("field", ["tags", "doc_md"])
def test_every_dag_is_documented_and_tagged(bag, field):
    for dag_id, dag in bag["dags"].items():
        assert dag[field], f"{dag_id} has no {field}"


def test_dag_file_name_is_dag_id_prefix(bag):
    for dag_id, dag in bag["dags"].items():
        assert dag_id.split("__")[0] == Path(dag["file"]).stem


def test_every_task_retries_at_least_twice(bag):
    for dag_id, dag in bag["dags"].items():
        for task_id, retries in dag["retries"].items():
            assert retries >= 2, f"{dag_id}.{task_id} retries={retries}"


def test_dataset_asset_links_ingest_to_distill(bag):
    for wf in ("ticket_routing", "clause_classification"):
        assert f"{wf}.dataset" in bag["dags"][f"ingest_validate__{wf}"]["outlets"]
        assert f"{wf}.dataset" in bag["dags"][f"distill__{wf}"]["assets_in"]
        assert f"{wf}.model" in bag["dags"][f"distill__{wf}"]["outlets"]


def test_schedule_comes_from_the_workflows_file(bag):
    # ticket_routing: cron + data (+ upstream) → both; clause_classification: data + upstream only.
    assert bag["dags"]["distill__ticket_routing"]["schedule"] == "AssetOrTimeSchedule"
    assert bag["dags"]["distill__clause_classification"]["schedule"] == "AssetTriggeredTimetable"
    for wf in ("ticket_routing", "clause_classification"):
        assert f"{wf}.upstream" in bag["dags"][f"distill__{wf}"]["assets_in"]
        assert f"{wf}.upstream" in bag["dags"][f"watch_upstream__{wf}"]["outlets"]


def test_training_runs_on_the_gpu_queue(bag):
    for wf in ("ticket_routing", "clause_classification"):
        assert bag["dags"][f"distill__{wf}"]["queues"]["train_student"] == "gpu"


def test_changing_the_schedule_in_the_file_changes_the_dag(tmp_path):
    text = TWO.read_text().replace(
        'cron: "0 3 * * 0", on_new_data: true', 'cron: "30 1 * * *", on_new_data: false'
    )
    changed = tmp_path / "workflows.yaml"
    changed.write_text(text)
    dag = parse(tmp_path, changed)["dags"]["distill__ticket_routing"]
    assert dag["schedule"] == "AssetOrTimeSchedule" and "30 1 * * *" in dag["timetable"]
    assert "ticket_routing.dataset" not in dag["assets_in"] and "ticket_routing.upstream" in dag["assets_in"]


def test_ml_never_imports_airflow():
    code = (
        "import importlib, pkgutil, sys, ml\n"
        "for m in pkgutil.walk_packages(ml.__path__, 'ml.'):\n"
        "    if m.name != 'ml.serving_model' and '.migrations' not in m.name and not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "print([m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    for path in (ROOT / "ml").rglob("*.py"):
        source = path.read_text()
        assert "import airflow" not in source and "from airflow" not in source, path
