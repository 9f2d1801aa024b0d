"""The MLflow UI pages a model owner opens, rendered by headless Chromium against a real `mlflow server`:
the version page shows the gate's checks, the approval and the @champion move in its description;
the logged model's page lists its registered version (not "Not registered") and its evaluation
dataset; the registered model's page reads the alias history as lines. Screenshots are kept in
the test's tmp folder. Needs Chromium (`make browser`); skipped with the reason without it.
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from ml import registry
from ml.evaluate.gate import decide
from ml.workflows import Gate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mlflow_server import mlflow_server  # noqa: E402

pytestmark = pytest.mark.integration

TINY_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Echo())
"""
NAME = "tickets_student"
EVAL_MD5 = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Chromium is not installed: `make browser` (apt-get install chromium)")
    return path


def page_text(chromium: str, url: str, folder: Path, name: str) -> str:
    """The text of the page once Chromium ran its scripts and the requests went quiet; a screenshot beside."""
    common = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={folder / ('profile-' + name)}",
        "--virtual-time-budget=30000",
        "--window-size=1400,1600",
    ]
    shot = subprocess.run(
        [*common, f"--screenshot={folder / (name + '.png')}", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom.stdout, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlflow_pages")
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with mlflow_server(folder / "server") as url:
        mlflow.set_tracking_uri(url)
        mlflow.set_registry_uri(url)
        client = MlflowClient()
        exp = client.create_experiment("tickets")
        (folder / "tiny.py").write_text(TINY_MODEL)
        data = pd.DataFrame({"text": ["refund please", "reset my password"], "label": ["billing", "login"]})
        dataset = mlflow.data.from_pandas(
            data,
            name="tickets-eval",
            digest=EVAL_MD5,
            source=f"s3://dvc/tickets/files/md5/{EVAL_MD5[:2]}/{EVAL_MD5[2:]}",
        )
        models = {}
        for key in ("registered", "unregistered"):
            with mlflow.start_run(experiment_id=exp) as run:
                mlflow.log_metrics({"eval.macro_f1": 0.81})
                info = mlflow.pyfunc.log_model(
                    name="model", python_model=str(folder / "tiny.py"), pip_requirements=[]
                )
                mlflow.log_input(dataset, context="evaluation")
                mlflow.log_metrics({"eval.macro_f1": 0.81}, model_id=info.model_id, dataset=dataset)
            models[key] = (run.info.run_id, info)
        run_id, info = models["registered"]
        decision = decide(
            {
                "macro_f1": 0.81,
                "per_class_f1": {"billing": 0.7, "login": 0.9},
                "latency_p99_ms": 4.2,
                "cost_per_1k_calls_usd": 0.01,
            },
            None,
            Gate(),
            latency_sla_p99_ms=50.0,
            max_cost_per_1k_calls_usd=0.4,
        ).to_dict()
        version = registry.register(
            client,
            NAME,
            info.model_uri,
            run_id,
            idempotency_key="run-1",
            tags={"workflow": "tickets"},
            description=registry.describe_gate(decision),
        )
        registry.record_decision(client, NAME, version, "approved", why="checked the matrix", who="ada")
        registry.move_alias(
            client,
            NAME,
            registry.CHAMPION,
            version,
            expected_from=None,
            why="approved: checked the matrix",
            who="ada",
            kind="promote",
        )
        yield {
            "url": url,
            "exp": exp,
            "version": version,
            "folder": folder,
            "model_id": info.model_id,
            "unregistered_id": models["unregistered"][1].model_id,
        }
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


def test_the_version_page_shows_the_gate_the_approval_and_the_champion_move(server, chromium):
    text = page_text(
        chromium, f"{server['url']}/#/models/{NAME}/versions/{server['version']}", server["folder"], "version"
    )
    assert "Gate: PASSED (no champion: absolute thresholds)" in text
    for check in ("min_macro_f1", "per_class_f1_floor", "latency_sla", "cost_per_1k_calls"):
        assert re.search(rf"ok {check} ?:", text), check  # the name is in <code>
    assert "(observed 4.2, threshold 50)" in text
    assert "Approval: approved by ada" in text and "checked the matrix" in text
    assert "@champion: since " in text and "(promote, the first champion) by ada" in text


def test_the_logged_model_page_lists_its_version_and_dataset(server, chromium):
    base = f"{server['url']}/#/experiments/{server['exp']}/models"
    text = page_text(chromium, f"{base}/{server['model_id']}", server["folder"], "logged_model")
    versions = text.split("Model versions", 1)[1][:200]
    assert f"{NAME} v{server['version']}" in versions
    assert f"tickets-eval (#{EVAL_MD5})" in text
    # The control: a logged model nobody registered lists no version there.
    control = page_text(chromium, f"{base}/{server['unregistered_id']}", server["folder"], "unregistered")
    assert "Model versions" in control and NAME not in control.split("Model versions", 1)[1][:200]


def test_the_registered_model_page_reads_the_alias_history_as_lines(server, chromium):
    text = page_text(chromium, f"{server['url']}/#/models/{NAME}", server["folder"], "registered_model")
    assert (
        "alias_history.000001 " in text
        and f"@champion none → v{server['version']} (promote) by ada: approved: checked the matrix" in text
    )
    assert '"seq"' not in text  # no JSON on the page
