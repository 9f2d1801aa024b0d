"""Bad input to `mlops serve` and `mlops predict`, as an attacker or a tired operator would send it.

The HTTP cases run the real app with a stub model in place of a registry version (parsing and
checking happen before the model is called); the batch-scoring cases must fail before any model
is loaded, so nothing is scored in vain and nothing is overwritten.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

import ml.serve
from ml.cli import main
from ml.config import load_settings
from ml.serve import MicroBatcher, Served, create_app, predict_file
from ml.workflows import get_workflow

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = get_workflow(ROOT / "dags" / "workflows.yaml", "ticket_routing")


class StubModel:
    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        n = len(frame)
        return pd.DataFrame({"label": ["billing"] * n, "score": [0.9] * n, "probs": ['{"billing": 0.9}'] * n})


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = load_settings({"MLOPS_STATE_DIR": str(tmp_path_factory.mktemp("state"))})
    # Limits that let a 200 KB body through to the JSON parser (the default limits let far more through).
    app = create_app(settings, WORKFLOW, max_batch=8, max_text_chars=3000)
    app.state.watcher.served = Served("7", StubModel(), {"text": ("string", True)}, "now")
    return TestClient(app)  # no lifespan: the registry is never asked


DEEP = 100_000
BAD = {
    "JSON nested 100,000 deep": (b"[" * DEEP + b"]" * DEEP, 400, "nested too deep"),
    "an object nested 40,000 deep": (b'{"a":' * 40_000 + b"1" + b"}" * 40_000, 400, "nested too deep"),
    "texts nested 500 deep": (
        json.dumps({"texts": [json.loads("[" * 500 + "]" * 500)]}).encode(),
        422,
        "texts[0] is a JSON list ([...]), not a string",
    ),
    "not UTF-8": (b'{"texts": ["\xff\xfe"]}', 400, "not valid JSON"),
    "an empty text": (json.dumps({"texts": ["fine", ""]}).encode(), 422, "texts[1] is empty"),
    "a blank text": (
        json.dumps({"instances": [{"text": " \n\t"}]}).encode(),
        422,
        "instances[0].text is empty",
    ),
    "include_probs not a bool": (
        json.dumps({"texts": ["a"], "include_probs": "no"}).encode(),
        422,
        "'include_probs' is a JSON str",
    ),
}


@pytest.mark.parametrize("body, status, words", BAD.values(), ids=BAD.keys())
def test_bad_bodies_get_400_or_422_never_500(client, body, status, words):
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text[:300]
    assert words in response.json()["detail"]


def test_metrics_count_the_refusals_by_status(client):
    client.post("/predict", content=b"[" * DEEP + b"]" * DEEP)
    text = client.get("/metrics").text
    assert 'mlops_serve_requests_total{status="400"}' in text
    assert 'mlops_serve_model_info{variant="torch_fp32",version="7"} 1.0' in text


def test_the_openapi_document_has_the_request_and_response_schemas(client):
    spec = client.get("/openapi.json").json()["paths"]["/predict"]["post"]
    body = spec["requestBody"]["content"]["application/json"]["schema"]
    assert {"texts", "instances", "include_probs"} <= set(body["properties"])
    assert spec["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PredictResponse"
    )
    assert {"400", "413", "422", "503"} <= set(spec["responses"])


def test_micro_batching_gives_requests_that_wait_one_model_call():
    """While the only worker is busy, five requests queue; they are scored in one call, each gets its rows."""
    calls, release = [], threading.Event()

    class Blocking:
        def predict(self, frame):
            calls.append(list(frame["text"]))
            release.wait(30)
            return pd.DataFrame(
                {"label": list(frame["text"]), "score": [1.0] * len(frame), "probs": ["{}"] * len(frame)}
            )

    served = Served("1", Blocking(), {"text": ("string", True)}, "now")

    async def scenario():
        batcher = MicroBatcher(max_batch=6, max_wait_ms=0, workers=1)
        batcher.start()
        first = asyncio.create_task(batcher.submit(served, [{"text": "a"}]))
        while not calls:  # the first call is running and holds the only worker
            await asyncio.sleep(0.01)
        rest = [
            asyncio.create_task(batcher.submit(served, [{"text": t}, {"text": t + "2"}][: 1 + i % 2]))
            for i, t in enumerate("bcdef")
        ]
        while batcher._queue.qsize() < 5:
            await asyncio.sleep(0.01)
        release.set()
        outs = await asyncio.gather(first, *rest)
        await batcher.stop()
        return outs

    outs = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert calls == [
        ["a"],
        ["b", "c", "c2", "d", "e", "e2"],
        ["f"],
    ]  # 6 rows at most: f waits for the next call
    assert [list(o["label"]) for o in outs] == [["a"], ["b"], ["c", "c2"], ["d"], ["e", "e2"], ["f"]]


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the output was checked")

    monkeypatch.setattr(ml.serve, "load_served_model", refuse)
    monkeypatch.setattr(ml.serve.registry, "configure", refuse)


@pytest.mark.parametrize(
    "out_name, words",
    [
        ("missing/folder/scored.csv", "does not exist; create it"),
        ("tickets.csv", "is the input file"),
        ("./tickets.csv", "is the input file"),
        ("scored.xlsx", "unknown file type '.xlsx'"),
        ("a_folder", "unknown file type ''"),
    ],
)
def test_predict_refuses_an_output_it_cannot_write_before_scoring(
    tmp_path, monkeypatch, no_model_load, out_name, words
):
    source = tmp_path / "tickets.csv"
    pd.DataFrame({"text": ["hi", "yo"]}).to_csv(source, index=False)
    (tmp_path / "a_folder").mkdir()
    before = source.read_bytes()
    monkeypatch.chdir(tmp_path)
    settings = load_settings({"MLOPS_STATE_DIR": str(tmp_path / "state")})
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        predict_file(settings, WORKFLOW, source, out=Path(out_name))
    assert source.read_bytes() == before


def test_mlops_predict_says_it_in_one_line_without_a_traceback(tmp_path, capsys, monkeypatch, no_model_load):
    source = tmp_path / "tickets.csv"
    pd.DataFrame({"text": ["hi"]}).to_csv(source, index=False)
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    code = main(["predict", str(source), "--out", str(tmp_path / "nope" / "out.csv")])
    err = capsys.readouterr().err
    assert code != 0 and "does not exist; create it" in err and "Traceback" not in err
