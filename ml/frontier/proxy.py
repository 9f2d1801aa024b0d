"""`mlops proxy`: an OpenAI-compatible endpoint that applications call instead of the provider.

It forwards `POST /v1/chat/completions` (streamed or not) through the instrumented client, relays
the upstream answer unchanged, and answers failures the way an OpenAI client expects: the
provider's own error body, or 504 on a timeout and 502 when upstream sent nothing usable. The
caller's Authorization header is ignored: the proxy holds the only key (MLOPS_FRONTIER_API_KEY).

Every call becomes one call-log row in the format ingestion reads for the workflow's task: the
label the answer names (`response_label`), or for a workflow that declares fields the answer's
JSON text as returned (`response_json`; curation refuses a malformed one, naming why).

Shadow mode: after the frontier answered, the champion student scores the same request on a
background thread, and agreement, both latencies and both costs go to a shadow log. A full
shadow queue drops the request from the shadow (counted), never delays the caller.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ml.frontier.calllog import CallLog
from ml.frontier.client import Call, FrontierClient

log = logging.getLogger(__name__)


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def _failure(call: Call) -> Response:
    if call.status == "saturated":
        response = _error(
            503, "saturated", "the proxy has its maximum of calls in flight to the upstream; retry shortly"
        )
        response.headers["Retry-After"] = "1"
        return response
    if call.status == "timeout":
        return _error(504, "timeout", "the upstream model did not answer in time")
    if call.body and call.http_status and call.http_status >= 400:
        return Response(call.body, status_code=call.http_status, media_type=call.content_type)
    return _error(502, call.error or "upstream_error", f"upstream failed ({call.error})")


def build_app(client: FrontierClient) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        yield
        await client.aclose()

    app = FastAPI(title="mlops frontier proxy", docs_url=None, redoc_url=None, lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True, "workflow": client.workflow, **client.saturation()}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(
                400, "invalid_request_error", "the body is not JSON; send an OpenAI chat completion request"
            )
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "invalid_request_error", "expected a JSON object with a 'messages' list")
        if body.get("stream"):
            call, chunks = await client.stream(body)
            if chunks is None:
                return _failure(call)
            return StreamingResponse(chunks, media_type="text/event-stream")
        call = await client.complete(body)
        if call.status != "ok":
            return _failure(call)
        return Response(call.body, status_code=call.http_status or 200, media_type=call.content_type)

    return app


class Shadow:
    """Scores each answered request with the student, off the request path, beside the frontier."""

    def __init__(
        self,
        predict: Callable[[str], str],
        log_: CallLog,
        *,
        student: str,
        student_cost_per_call_usd: Decimal,
        max_pending: int = 1000,
    ):
        self.predict, self.log, self.student = predict, log_, student
        # One figure for every call: the student's serving month at the declared volume, per call
        # (ml.costs.unit_costs), the same the gate and the break-even use for this version.
        self.student_cost_per_call_usd = Decimal(str(student_cost_per_call_usd))
        self.dropped = self.failed = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    @classmethod
    def for_model_dir(cls, model_dir: Path, log_: CallLog, *, max_length: int = 64, **kwargs) -> "Shadow":
        from ml.evaluate.serving import load_classifier, predict_probs

        config = json.loads((Path(model_dir) / "config.json").read_text())
        if any(str(a).endswith("ForTokenClassification") for a in config.get("architectures") or ()):
            raise ValueError(
                f"{model_dir}: the champion is a field tagger (a workflow that declares fields); shadow mode "
                "compares one label per call and does not score field answers yet: start the proxy without --shadow."
            )
        model, tokenizer = load_classifier(Path(model_dir))
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

        def predict(text: str) -> str:
            return labels[int(predict_probs(model, tokenizer, [text], max_length=max_length)[0].argmax())]

        predict("warm-up")  # the first call pays for lazy initialisation; it is not the student's latency
        return cls(predict, log_, **kwargs)

    def submit(self, row: dict) -> None:
        if row.get("status") != "ok" or not row.get("request_text"):
            return
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """Score what is queued, then close the shadow log."""
        self._queue.put(None)
        self._thread.join()
        self.log.close()

    def _run(self) -> None:
        while (row := self._queue.get()) is not None:
            try:
                t0 = time.perf_counter()
                label = self.predict(row["request_text"])
                latency_ms = (time.perf_counter() - t0) * 1000
            except Exception:  # noqa: BLE001 - a student failure must not stop the shadow
                self.failed += 1
                log.exception("shadow: the student failed on call %s", row["call_id"])
                continue
            cost = self.student_cost_per_call_usd
            frontier = row.get("response_label")
            self.log.append(
                {
                    "call_id": row["call_id"],
                    "ts": row["ts"],
                    "workflow": row["workflow"],
                    "student": self.student,
                    "student_label": label,
                    "frontier_label": frontier,
                    "agree": None if frontier is None else label == frontier,
                    "student_latency_ms": round(latency_ms, 2),
                    "frontier_latency_ms": row["latency_ms"],
                    "frontier_cost_usd": row.get("cost_usd"),
                    "student_cost_usd": str(cost),
                }
            )


class ServerThread:
    """The app served by uvicorn on a background thread (tests, benchmarks): `with ServerThread(app) as url:`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.url = f"http://{host}:{self._socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server on {self.url} did not start; see the log above.")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=20)
        self._socket.close()
