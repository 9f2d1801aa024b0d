"""`mlops serve` and `mlops predict` against a real `mlflow server` (SQLite) on 127.0.0.1.

The app runs under uvicorn on a free port and is called over HTTP: predictions equal the
registered version's own pyfunc output, bad requests get 4xx naming the problem, latency is
reported, and a new @champion (and a rollback) is picked up while the same server keeps answering.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import time

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow_server import ROOT, client_env, log_tiny_classifier, mlflow_server

from ml import registry
from ml.cli import serve as serve_cli
from ml.config import load_settings
from ml.frontier.proxy import ServerThread
from ml.serve import create_app
from ml.workflows import get_workflow

pytestmark = pytest.mark.integration

WORKFLOW = get_workflow(ROOT / "dags" / "workflows.yaml", "ticket_routing")
MAX_BATCH, MAX_TEXT_CHARS = 8, 200
REFRESH_S = 0.5
SWAP_WAIT_S = 60.0
TEXTS = ["I was charged twice for my order", "where is my parcel?", "reset my password please"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory, tiny_base_model):
    """The registry with two versions of the workflow's student (v1 @champion) and the app serving it."""
    import torch

    folder = tmp_path_factory.mktemp("serve")
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri(), torch.get_num_threads()
    with mlflow_server(folder / "server") as url, pytest.MonkeyPatch.context() as env:
        for key, value in client_env(url, folder / "state").items():
            env.setenv(key, value)
        settings = load_settings()
        settings.ensure_dirs()
        client = registry.configure(settings)
        experiment_id = registry.ensure_experiment(settings, WORKFLOW.name)
        versions = []
        for seed in (0, 1):  # two differently initialised heads: two versions that answer differently
            model_uri, run_id = log_tiny_classifier(
                tiny_base_model,
                WORKFLOW.labels,
                folder / f"model{seed}",
                seed=seed,
                experiment_id=experiment_id,
                max_length=WORKFLOW.training.max_length,
            )
            versions.append(
                registry.register(
                    client,
                    WORKFLOW.model_name,
                    model_uri,
                    run_id,
                    idempotency_key=f"run-{seed}",
                    tags={"workflow": WORKFLOW.name},
                )
            )
        versions.append(register_onnx_version(client, experiment_id, folder / "model0", folder / "onnx"))
        registry.move_alias(
            client, WORKFLOW.model_name, registry.CHAMPION, versions[0], expected_from=None, why="first"
        )
        app = create_app(
            settings, WORKFLOW, refresh_s=REFRESH_S, max_batch=MAX_BATCH, max_text_chars=MAX_TEXT_CHARS
        )
        with ServerThread(app) as app_url:
            yield {
                "url": app_url,
                "mlflow_url": url,
                "settings": settings,
                "client": client,
                "versions": versions,
                "folder": folder,
            }
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])
    torch.set_num_threads(before[2])


def register_onnx_version(client, experiment_id: str, model_dir, out_dir) -> str:
    """v3: v1's weights served as onnx_fp32, logged the way the distill step logs a winning ONNX variant."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ml.export import export_onnx, log_served_model

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True)
    path = export_onnx(
        model.eval(), AutoTokenizer.from_pretrained(model_dir, local_files_only=True), out_dir / "model.onnx"
    )
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = log_served_model("onnx_fp32", model_dir, path, max_length=WORKFLOW.training.max_length)
    return registry.register(
        client,
        WORKFLOW.model_name,
        info.model_uri,
        run.info.run_id,
        idempotency_key="run-onnx",
        tags={"workflow": WORKFLOW.name, "served_variant": "onnx_fp32"},
    )


def direct(version: str, texts: list[str]) -> pd.DataFrame:
    """What the registered version itself answers, loaded the way any scoring host would."""
    return mlflow.pyfunc.load_model(f"models:/{WORKFLOW.model_name}/{version}").predict(
        pd.DataFrame({"text": texts})
    )


def post(srv, body, **kwargs) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(f"{srv['url']}/predict", content=body, timeout=30, **kwargs)
    return httpx.post(f"{srv['url']}/predict", json=body, timeout=30, **kwargs)


def test_health_names_the_served_version_and_its_signature(srv):
    health = httpx.get(f"{srv['url']}/health", timeout=10)
    assert health.status_code == 200
    body = health.json()
    assert (body["status"], body["model"], body["model_version"]) == (
        "ok",
        WORKFLOW.model_name,
        srv["versions"][0],
    )
    assert body["signature"] == "text: string" and body["last_error"] is None


def test_predict_answers_the_champion_s_labels_scores_version_and_latency(srv):
    response = post(srv, {"texts": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = direct(srv["versions"][0], TEXTS)
    assert body["model_version"] == srv["versions"][0]
    assert body["labels"] == list(expected["label"])
    assert body["scores"] == pytest.approx(list(expected["score"]), abs=1e-6)
    assert all(
        set(p) == set(WORKFLOW.labels) and sum(p.values()) == pytest.approx(1, abs=1e-4)
        for p in body["probs"]
    )
    assert body["latency_ms"] > 0
    assert float(response.headers["X-Latency-Ms"]) == pytest.approx(body["latency_ms"], abs=1e-3)
    # The other request shape answers the same.
    same = post(srv, {"instances": [{"text": t} for t in TEXTS]}).json()
    assert (same["labels"], same["model_version"]) == (body["labels"], body["model_version"])
    stats = httpx.get(f"{srv['url']}/health", timeout=10).json()
    assert stats["requests"] >= 2 and stats["latency_p99_ms"] >= stats["latency_p50_ms"] > 0


# (body, status, words the reason must contain)
BAD_REQUESTS = {
    "not JSON": (b"texts=hello", 400, ["not valid JSON"]),
    "a list, not an object": ([{"text": "hi"}], 422, ["not an object", '{"texts"']),
    "neither texts nor instances": ({"text": "hi"}, 422, ["exactly one of 'texts' and 'instances'"]),
    "both texts and instances": ({"texts": ["a"], "instances": [{"text": "a"}]}, 422, ["exactly one"]),
    "texts is a string": ({"texts": "hello"}, 422, ["'texts' is a JSON str, not a list"]),
    "empty list": ({"texts": []}, 422, ["'texts' is empty"]),
    "too many texts": (
        {"texts": ["hi"] * (MAX_BATCH + 1)},
        422,
        [f"{MAX_BATCH + 1} items", f"at most {MAX_BATCH}"],
    ),
    "a number among the texts": (
        {"texts": ["hi", 42]},
        422,
        ["texts[1] is a JSON int (42), not a string", "text: string"],
    ),
    "a null text": ({"texts": ["hi", None]}, 422, ["texts[1] has no 'text'"]),
    "an instance without text": (
        {"instances": [{"text": "a"}, {"body": "b"}]},
        422,
        ["instances[1] has no 'text'", "text: string"],
    ),
    "an instance that is a string": (
        {"instances": ["a"]},
        422,
        ["instances[0] is a JSON str, not an object"],
    ),
    "a boolean text": ({"instances": [{"text": True}]}, 422, ["instances[0].text is a JSON bool"]),
    "a body no valid request needs": (
        json.dumps({"texts": ["x" * 13 * MAX_TEXT_CHARS] * MAX_BATCH}).encode(),
        413,
        ["bytes", "split the batch"],
    ),
    "a text over the limit": (
        {"texts": ["x" * (MAX_TEXT_CHARS + 1)]},
        422,
        [f"texts[0] has {MAX_TEXT_CHARS + 1} characters", f"at most {MAX_TEXT_CHARS}"],
    ),
}


@pytest.mark.parametrize("body, status, reason", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_a_bad_request_gets_a_4xx_naming_the_problem(srv, body, status, reason):
    response = post(srv, body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert all(word in detail for word in reason), detail


def test_probes_metrics_and_answers_without_probabilities(srv):
    assert httpx.get(f"{srv['url']}/livez", timeout=10).json() == {"status": "alive"}
    ready = httpx.get(f"{srv['url']}/readyz", timeout=10).json()
    assert ready == {"status": "ready", "model_version": srv["versions"][0], "served_variant": "torch_fp32"}
    lean = post(srv, {"texts": TEXTS, "include_probs": False}).json()
    assert lean["probs"] is None and len(lean["labels"]) == len(TEXTS)
    metrics = httpx.get(f"{srv['url']}/metrics", timeout=10).text
    assert (
        'mlops_serve_requests_total{status="200"}' in metrics and "mlops_serve_batch_size_bucket" in metrics
    )
    assert f'mlops_serve_model_info{{variant="torch_fp32",version="{srv["versions"][0]}"}} 1.0' in metrics
    assert (
        "mlops_serve_model_load_seconds" in metrics
        and "mlops_serve_request_latency_seconds_bucket" in metrics
    )


def test_concurrent_single_requests_each_get_their_own_answer(srv):
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"ticket {i}: {TEXTS[i % 3]}" for i in range(24)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda t: post(srv, {"texts": [t]}).json(), texts))
    expected = direct(srv["versions"][0], texts)
    assert [a["labels"][0] for a in answers] == list(expected["label"])
    assert [a["scores"][0] for a in answers] == pytest.approx(list(expected["score"]), abs=1e-6)


def test_without_a_champion_the_service_starts_and_answers_503(srv):
    nobody = dataclasses.replace(WORKFLOW, name="nothing_yet")  # no registered model at all
    with ServerThread(create_app(srv["settings"], nobody, refresh_s=REFRESH_S)) as url:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 503
        assert httpx.get(f"{url}/livez", timeout=10).status_code == 200
        health = httpx.get(f"{url}/health", timeout=10)
        assert (
            health.status_code == 503
            and "nothing_yet_student has no @champion" in health.json()["last_error"]
        )
        response = httpx.post(f"{url}/predict", json={"texts": ["hi"]}, timeout=10)
        assert (
            response.status_code == 503
            and "no version of nothing_yet_student is loaded" in response.json()["detail"]
        )


@pytest.mark.parametrize(
    "flag, kwargs",
    [
        ("--refresh-s", {"refresh_s": 0}),
        ("--max-batch", {"max_batch": 0}),
        ("--max-text-chars", {"max_text_chars": -1}),
    ],
)
def test_settings_that_cannot_work_are_refused(srv, flag, kwargs):
    with pytest.raises(ValueError, match=f"{flag}=.* must be positive"):
        create_app(srv["settings"], WORKFLOW, **kwargs)


def run_cli(*argv: str) -> int:
    """The `serve`/`predict` commands through their own argparse wiring."""
    parser = argparse.ArgumentParser(prog="mlops")
    serve_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_predict_file_writes_the_rows_back_with_the_champion_s_answers(srv, tmp_path, capsys, suffix):
    source = tmp_path / f"tickets{suffix}"
    frame = pd.DataFrame({"ticket_id": [11, 12, 13], "body": TEXTS})
    {
        ".csv": lambda p: frame.to_csv(p, index=False),
        ".parquet": lambda p: frame.to_parquet(p, index=False),
        ".jsonl": lambda p: frame.to_json(p, orient="records", lines=True),
    }[suffix](source)
    out = tmp_path / f"scored{suffix}"
    assert run_cli("predict", str(source), "--text-col", "body", "--out", str(out), "--json") == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows"], summary["model_version"], summary["out"]) == (3, srv["versions"][0], str(out))
    scored = {
        ".csv": pd.read_csv,
        ".parquet": pd.read_parquet,
        ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False),
    }[suffix](out)
    expected = direct(srv["versions"][0], TEXTS)
    assert list(scored.columns) == ["ticket_id", "body", "label", "score", "probs"]
    assert list(scored["ticket_id"]) == [11, 12, 13] and list(scored["body"]) == TEXTS
    assert list(scored["label"]) == list(expected["label"])
    assert list(scored["score"]) == pytest.approx(list(expected["score"]), abs=1e-6)


PREDICT_FILE_ERRORS = {
    "no such text column": (
        "tickets.csv",
        {"body": ["hi"]},
        "no column 'text' (it has body); name the text column with --text-col",
    ),
    "a label column already": (
        "gold.csv",
        {"text": ["hi"], "label": ["billing_refund"]},
        "already has a 'label' column",
    ),
    "empty texts": (
        "tickets.csv",
        {"text": ["hi", None, "yo"]},
        "1 rows have no 'text' (rows [1]); drop or fill them",
    ),
    "unknown file type": ("tickets.xlsx", None, "unknown file type '.xlsx'; use .csv, .parquet or .jsonl"),
    "missing file": ("absent.csv", None, "no such file"),
}


@pytest.mark.parametrize(
    "file_name, columns, message", PREDICT_FILE_ERRORS.values(), ids=PREDICT_FILE_ERRORS.keys()
)
def test_predict_file_refuses_input_it_cannot_score(srv, tmp_path, file_name, columns, message):
    source = tmp_path / file_name
    if columns is not None:
        pd.DataFrame(columns).to_csv(source, index=False)
    elif file_name != "absent.csv":
        source.write_text("not a table")
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(message)):
        run_cli("predict", str(source))


# A scoring host without this repository: `ml` cannot be imported, the cwd is elsewhere.
NO_ML_SCRIPT = """
import json, sys
sys.modules["ml"] = None  # any `import ml...` now fails
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.DataFrame({"text": json.loads(sys.argv[2])}))
print(json.dumps({"labels": list(out["label"]), "ml_modules": [m for m in sys.modules if m.startswith("ml.")]}))
"""


def test_a_version_loads_and_predicts_without_the_ml_package(srv, tmp_path):
    uri = f"models:/{WORKFLOW.model_name}/{srv['versions'][0]}"
    done = subprocess.run(
        [sys.executable, "-c", NO_ML_SCRIPT, uri, json.dumps(TEXTS)],
        cwd=tmp_path,
        timeout=120,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "MLFLOW_TRACKING_URI": srv["mlflow_url"],
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"labels": list(direct(srv["versions"][0], TEXTS)["label"]), "ml_modules": []}


# An ONNX-served version loaded by a bare scoring host (MLflow alone: the platform is not imported),
# then the way `mlops serve` loads it (its CLI module and ml.serve): neither imports torch nor transformers.
NO_TORCH_SCRIPT = """
import json, sys
import mlflow, pandas as pd
texts = pd.DataFrame({"text": json.loads(sys.argv[2])})
out = mlflow.pyfunc.load_model(sys.argv[1]).predict(texts)
heavy = lambda: sorted(m for m in ("torch", "transformers", "ml") if m in sys.modules)
bare = heavy()
import ml.cli.serve, ml.serve
again = ml.serve.load_served_model(sys.argv[1], threads=1).predict(texts)
print(json.dumps({"labels": list(out["label"]), "scores": list(out["score"]), "imported": bare,
                  "serve_labels": list(again["label"]), "imported_by_serve": heavy()}))
"""


def test_an_onnx_served_version_scores_like_torch_without_importing_torch(srv, tmp_path):
    onnx_version = srv["versions"][2]
    uri = f"models:/{WORKFLOW.model_name}/{onnx_version}"
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, uri, json.dumps(TEXTS)],
        cwd=ROOT,
        timeout=120,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "MLFLOW_TRACKING_URI": srv["mlflow_url"],
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
            "MLOPS_STATE_DIR": str(tmp_path / "state"),
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    torch_answer = direct(srv["versions"][0], TEXTS)  # the same weights under torch
    assert result["imported"] == [] and result["imported_by_serve"] == ["ml"]
    assert result["labels"] == result["serve_labels"] == list(torch_answer["label"])
    assert result["scores"] == pytest.approx(list(torch_answer["score"]), abs=1e-4)
    # The weights stay with the run, for lineage and re-scoring.
    assert (registry.download_weights(WORKFLOW.model_name, onnx_version) / "config.json").exists()


def wait_for_version(srv, version: str) -> list[int]:
    """Poll /health until it serves `version`, predicting on each round; the statuses seen meanwhile."""
    statuses, deadline = [], time.monotonic() + SWAP_WAIT_S
    while httpx.get(f"{srv['url']}/health", timeout=10).json()["model_version"] != version:
        response = post(srv, {"texts": TEXTS})
        statuses.append(response.status_code)
        assert response.json().get("model_version") in srv["versions"]
        assert time.monotonic() < deadline, f"still not serving v{version} after {SWAP_WAIT_S:.0f} s"
        time.sleep(0.05)
    return statuses


def test_a_new_champion_and_a_rollback_are_served_without_a_restart(srv):
    # Runs last in this module: it moves @champion (and moves it back).
    v1, v2 = srv["versions"][:2]
    registry.move_alias(
        srv["client"], WORKFLOW.model_name, registry.CHAMPION, v2, expected_from=v1, why="better"
    )
    statuses = wait_for_version(srv, v2)
    assert set(statuses) <= {200}  # requests kept being answered while v2 loaded
    after, expected = post(srv, {"texts": TEXTS}).json(), direct(v2, TEXTS)
    assert after["model_version"] == v2 and after["labels"] == list(expected["label"])
    assert after["scores"] == pytest.approx(list(expected["score"]), abs=1e-6)
    assert after["scores"] != pytest.approx(
        list(direct(v1, TEXTS)["score"]), abs=1e-6
    )  # really another model

    registry.rollback(srv["client"], WORKFLOW.model_name, why="test rollback")
    assert set(wait_for_version(srv, v1)) <= {200}
    assert post(srv, {"texts": TEXTS}).json()["model_version"] == v1
    assert httpx.get(f"{srv['url']}/health", timeout=10).json()["last_error"] is None
