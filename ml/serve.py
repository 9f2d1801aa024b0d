"""Serving the workflow's `@champion`: an HTTP app (`mlops serve`) and batch scoring (`mlops predict`).

HTTP, built by `create_app(settings, workflow)`:

- `POST /predict` takes `{"texts": ["...", ...]}` or `{"instances": [{"text": "..."}, ...]}`, and
  optionally `"include_probs": false`, and answers `labels`, `scores`, `probs`, `model_version`,
  `served_variant` and `latency_ms` (also in the `X-Latency-Ms` header). The request is checked
  against the served version's MLflow signature before the model sees it: a body that is not
  JSON (nested too deep included) gets 400, one of the wrong shape or with an empty text 422,
  each with `detail` naming the problem. The OpenAPI document (`/docs`) has both schemas.
- Concurrent requests are micro-batched: a model call takes every request waiting (up to
  `max_batch` texts), and waits up to `max_wait_ms` for requests already being read, so 32
  concurrent single texts cost a few model calls, not 32; a lone request never waits. Up to
  `workers` model calls run at once (default 1, with every CPU's intra-op thread): the served
  model is safe to call from several threads (ml/serving_model.py), so there is no global lock.
- An extraction model (`task: extraction`) takes `{"documents": ["...", ...]}` and answers
  `documents`: per document its `fields`, each {"value", "start", "end", "confidence"} (character
  offsets: value == document[start:end]) or null. A body of another shape, an empty document or
  one over ml/tasks/extraction.py's MAX_DOCUMENT_BYTES gets 400 with `reason` naming it
  (empty_document, document_too_large, ...) and `detail`.
- `GET /livez` answers while the process runs; `GET /readyz` once a version is loaded (503
  before); `GET /health` names the served version, when it was loaded and checked, the last
  refresh error and recent latency; `GET /metrics` is Prometheus text (prometheus-client):
  requests by status, latency histogram, batch sizes, the served version, model load time.

A background thread looks up @champion at most every `refresh_s` seconds. A new version is
loaded beside the one serving and swapped in with one assignment, so no request waits for a
load and a request in flight finishes on the model it started with; the version before is kept,
so a rollback swaps back at once. Models load with `mlflow.pyfunc.load_model`, which runs the
logged `serving_model.py`: the scoring side needs the registry, not this package's training code,
and an ONNX-served version never imports torch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from ml import registry
from ml.config import Settings
from ml.evaluate.latency import percentile_ms
from ml.workflows import Workflow

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 10.0
DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_WAIT_MS = 2.0
LATENCY_WINDOW = 1000  # recent requests /health summarises
TEXT = "text"
# JSON types a signature's column types accept (bool is an int in Python, never a number here).
_JSON_TYPES = {
    "string": (str,),
    "binary": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "long": (int,),
    "float": (int, float),
    "double": (int, float),
}
USAGE = 'send {"texts": ["..."]} or {"instances": [{"text": "..."}]}'


class RequestError(ValueError):
    """A prediction request the model's signature does not accept; the message says what to send."""


class PredictRequest(BaseModel):
    """Exactly one of `texts` and `instances` (an extraction model: `documents`)."""

    texts: list[str] | None = Field(
        None,
        description="Texts to classify (non-empty strings).",
        examples=[["I was charged twice for my order"]],
    )
    instances: list[dict[str, Any]] | None = Field(
        None, description='Rows with the signature\'s columns, e.g. [{"text": "..."}].'
    )
    include_probs: bool | None = Field(
        None,
        description="false leaves the probability vectors out (default: the server's --omit-probs setting).",
    )
    documents: list[str] | None = Field(
        None,
        description="An extraction model's documents (send this alone): each answered with its fields, "
        "each field's value, start, end (characters) and confidence, or null.",
    )


class PredictResponse(BaseModel):
    model: str
    model_version: str
    served_variant: str = Field(description="torch_fp32, onnx_fp32, onnx_int8 or torch_bf16")
    labels: list[str]
    scores: list[float] = Field(description="probability of each text's label")
    probs: list[dict[str, float]] | None = Field(None, description="every label's probability, per text")
    latency_ms: float


class ErrorResponse(BaseModel):
    detail: str


@dataclass(frozen=True)
class Served:
    """One loaded version. Requests take the current one once and keep it to the end."""

    version: str
    model: object  # mlflow.pyfunc.PyFuncModel
    columns: dict[str, tuple[str, bool]]  # input column -> (signature type, required)
    loaded_at: str
    variant: str = "torch_fp32"
    load_s: float = 0.0
    task: str = "classification"  # the served model's model_config names it (ml/export.py)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return self.model.predict(frame)  # thread-safe (ml/serving_model.py): no lock here


def signature_columns(model) -> dict[str, tuple[str, bool]]:
    """Input columns of a loaded pyfunc's signature; a model logged without one takes `text`."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return {TEXT: ("string", True)}
    return {
        str(spec.name): (getattr(spec.type, "name", str(spec.type)), bool(getattr(spec, "required", True)))
        for spec in schema.inputs
    }


def _describe(columns: dict[str, tuple[str, bool]]) -> str:
    return ", ".join(
        f"{name}: {typ}{'' if required else ' (optional)'}" for name, (typ, required) in columns.items()
    )


def _preview(value) -> str:
    # Never serialise a nested value: a request nested hundreds deep must not recurse here.
    if isinstance(value, (list, dict)):
        return "[...]" if isinstance(value, list) else "{...}"
    return json.dumps(value)[:40]


def parse_request(
    body, columns: dict[str, tuple[str, bool]], *, max_batch: int, max_text_chars: int
) -> list[dict]:
    """The rows a prediction request asks for, checked against the signature's columns.

    Raises RequestError naming the first problem and what to send instead.
    """
    if not isinstance(body, dict):
        raise RequestError(f"the body is a JSON {type(body).__name__}, not an object; {USAGE}.")
    if ("texts" in body) == ("instances" in body):
        raise RequestError(f"the body needs exactly one of 'texts' and 'instances'; {USAGE}.")
    if body.get("include_probs") is not None and not isinstance(body["include_probs"], bool):
        raise RequestError(
            f"'include_probs' is a JSON {type(body['include_probs']).__name__}; send true or false."
        )
    key = "texts" if "texts" in body else "instances"
    items = body[key]
    if not isinstance(items, list):
        raise RequestError(f"'{key}' is a JSON {type(items).__name__}, not a list; {USAGE}.")
    if not items:
        raise RequestError(f"'{key}' is empty; send at least one.")
    if len(items) > max_batch:
        raise RequestError(
            f"'{key}' has {len(items)} items; at most {max_batch} per request: split the batch."
        )
    if key == "texts":
        needed = {name for name, (_, required) in columns.items() if required}
        if needed - {TEXT}:
            raise RequestError(
                f"this model's signature needs {_describe(columns)}; send 'instances' with those fields."
            )
        items = [{TEXT: text} for text in items]
    rows = []
    for i, item in enumerate(items):
        where = f"texts[{i}]" if key == "texts" else f"instances[{i}]"
        if not isinstance(item, dict):
            raise RequestError(
                f'{where} is a JSON {type(item).__name__}, not an object like {{"text": "..."}}.'
            )
        for name, (typ, required) in columns.items():
            if name not in item or item[name] is None:
                if required:
                    raise RequestError(
                        f"{where} has no '{name}'; the model's signature needs {_describe(columns)}."
                    )
                continue
            value, accepted = item[name], _JSON_TYPES.get(typ)
            at = where if key == "texts" else f"{where}.{name}"
            if accepted and (
                not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted)
            ):
                raise RequestError(
                    f"{at} is a JSON {type(value).__name__} ({_preview(value)}), "
                    f"not a {typ}; the model's signature says {name}: {typ}."
                )
            if isinstance(value, str) and not value.strip():
                raise RequestError(f"{at} is empty; send a text with something to classify.")
            if isinstance(value, str) and len(value) > max_text_chars:
                raise RequestError(f"{at} has {len(value)} characters; at most {max_text_chars}: shorten it.")
        rows.append({name: item.get(name) for name in columns})
    return rows


DOCUMENTS_USAGE = 'send {"documents": ["...", ...]}'


def parse_documents(body, *, max_batch: int) -> list[dict]:
    """The rows of an extraction request; BadDocument (its `reason` a name) when it cannot be read."""
    from ml.tasks.extraction import BadDocument, check_documents

    if not isinstance(body, dict) or "documents" not in body:
        what = f"keys {sorted(body)}" if isinstance(body, dict) else f"a JSON {type(body).__name__}"
        raise BadDocument("no_documents", f"the body is {what}; {DOCUMENTS_USAGE}")
    documents = body["documents"]
    if isinstance(documents, list) and not documents:
        raise BadDocument("no_documents", f"'documents' is empty; {DOCUMENTS_USAGE}")
    if isinstance(documents, list) and len(documents) > max_batch:
        raise BadDocument(
            "too_many_documents",
            f"'documents' has {len(documents)}; at most {max_batch} per request: split it",
        )
    return [{TEXT: doc} for doc in check_documents(documents)]


class ChampionWatcher:
    """Which version serves: looks @champion up, loads a new version, swaps it in."""

    def __init__(self, settings: Settings, model_name: str, refresh_s: float, threads: int = 0):
        self.settings, self.model_name, self.refresh_s, self.threads = (
            settings,
            model_name,
            refresh_s,
            threads,
        )
        self.served: Served | None = None
        self.previous: Served | None = None
        self.checked_at: str | None = None
        self.last_error: str | None = None
        self._failed_version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        """One look at @champion; loads and swaps in a version that differs from the one serving."""
        client = registry.configure(self.settings)
        champion = registry.version_by_alias(client, self.model_name, registry.CHAMPION)
        self.checked_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if champion is None:
            # Keep serving what we have: an alias deleted by hand should not take the service down.
            self.last_error = (
                f"{self.model_name} has no @champion; promote a version "
                "(`mlops models approve VERSION`) or run the distill DAG."
            )
            return
        version = str(champion.version)
        if self.served is not None and self.served.version == version:
            self.last_error = None
            return
        if version == self._failed_version:
            return  # it failed to load once; wait for the alias to move instead of retrying forever
        if self.previous is not None and self.previous.version == version:
            self.served, self.previous = self.previous, self.served  # a rollback: no load needed
            log.info("%s: @champion back to v%s (kept loaded)", self.model_name, version)
            return
        started = time.perf_counter()
        try:
            model = load_served_model(f"models:/{self.model_name}/{version}", self.threads)
            config = getattr(model, "model_config", None) or {}
            loaded = Served(
                version,
                model,
                signature_columns(model),
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
                variant=str(config.get("variant", "torch_fp32")),
                load_s=time.perf_counter() - started,
                task=str(config.get("task", "classification")),
            )
        except Exception as exc:
            self._failed_version = version
            still = f"still serving v{self.served.version}" if self.served else "nothing to serve"
            raise RuntimeError(
                f"v{version} of {self.model_name} failed to load ({type(exc).__name__}: {exc}); "
                f"{still}. Promote another version."
            ) from exc
        self.served, self.previous = loaded, self.served  # one assignment: requests see old or new, whole
        self.last_error = self._failed_version = None
        log.info(
            "%s: serving v%s (%s, loaded in %.0f ms)",
            self.model_name,
            version,
            loaded.variant,
            loaded.load_s * 1000,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the service keeps serving the version it has
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: champion refresh failed: %s", self.model_name, self.last_error)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="champion-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


def load_served_model(uri: str, threads: int = 0):
    """A registered version as its pyfunc, with `threads` intra-op threads per call (0: the runtime's choice)."""
    return mlflow.pyfunc.load_model(uri, model_config={"threads": threads} if threads > 0 else None)


class MicroBatcher:
    """Requests' rows queued and scored together: one model call for what waits, up to max_batch texts.

    A batch takes what is queued; it waits up to max_wait_ms longer only while other requests are
    still being read (`reading`), so a lone request is scored at once. At most `workers` batches
    run at the same time; while all are busy, new requests queue and form the next batch.
    """

    def __init__(self, *, max_batch: int, max_wait_ms: float, workers: int, observe_batch=lambda n: None):
        self.max_batch, self.max_wait_s, self.workers = max_batch, max_wait_ms / 1000, workers
        self.observe_batch = observe_batch
        self.reading = 0  # requests between their first byte and submit(), all on the event loop
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.workers)
        self._task = asyncio.create_task(self._collect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def submit(self, served: Served, rows: list[dict]) -> pd.DataFrame:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((served, rows, future))
        return await future

    async def _collect(self) -> None:
        loop, carried = asyncio.get_running_loop(), None
        while True:
            await self._slots.acquire()
            first = carried or await self._queue.get()
            carried, items, n_rows = None, [first], len(first[1])
            deadline = loop.time() + self.max_wait_s
            while n_rows < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left_s = deadline - loop.time()
                    if self.reading <= 0 or left_s <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), left_s)
                    except TimeoutError:
                        break
                if n_rows + len(item[1]) > self.max_batch:
                    carried = item  # the next batch starts with it
                    break
                items.append(item)
                n_rows += len(item[1])
            task = asyncio.create_task(self._score(items, n_rows))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _score(self, items: list, n_rows: int) -> None:
        try:
            self.observe_batch(n_rows)
            by_model: dict[int, list] = {}
            for item in items:  # a refresh may swap the model between two queued requests
                by_model.setdefault(id(item[0]), []).append(item)
            for group in by_model.values():
                served = group[0][0]
                frame = pd.DataFrame(
                    [row for _, rows, _ in group for row in rows], columns=list(served.columns)
                )
                try:
                    out = await run_in_threadpool(served.predict, frame)
                except Exception as exc:  # noqa: BLE001 - each waiting request hears of it
                    for _, _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for _, rows, future in group:
                    if not future.done():
                        future.set_result(out.iloc[start : start + len(rows)])
                    start += len(rows)
        finally:
            self._slots.release()


class ServingMetrics:
    """Prometheus metrics of one app (its own registry: two apps in one process do not collide)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlops_serve_requests", "Prediction requests by HTTP status", ["status"], registry=self.registry
        )
        self.latency = Histogram(
            "mlops_serve_request_latency_seconds",
            "Time from request to answer (/predict)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "mlops_serve_batch_size",
            "Texts per model call (micro-batches)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "mlops_serve_model_info",
            "1 for the version serving now",
            ["version", "variant"],
            registry=self.registry,
        )
        self.load_seconds = Gauge(
            "mlops_serve_model_load_seconds",
            "How long the serving version took to load",
            registry=self.registry,
        )

    def render(self, served: Served | None) -> bytes:
        from prometheus_client import generate_latest

        self.model_info.clear()
        if served is not None:
            self.model_info.labels(version=served.version, variant=served.variant).set(1)
            self.load_seconds.set(served.load_s)
        return generate_latest(self.registry)


def create_app(
    settings: Settings,
    workflow: Workflow,
    *,
    refresh_s: float = DEFAULT_REFRESH_S,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_text_chars: int | None = None,
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS,
    workers: int | None = None,
    include_probs: bool = True,
) -> FastAPI:
    """The prediction service of `workflow`'s @champion.

    max_text_chars defaults to the workflow's `validation.max_text_chars`: the model never saw
    longer texts in training, and a caller should hear so rather than get a truncated guess.
    workers (model calls at once) defaults to 1: each call then has every CPU for its intra-op
    threads (or `torch_threads` when that is set), and concurrent requests share it as one
    micro-batch (`benchmarks/serving.py --serve-args "--workers 2"` compares).
    """
    max_text_chars = workflow.validation.max_text_chars if max_text_chars is None else max_text_chars
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = 1 if workers is None else workers
    for flag, value in (
        ("--refresh-s", refresh_s),
        ("--max-batch", max_batch),
        ("--max-text-chars", max_text_chars),
        ("--workers", workers),
    ):
        if not value > 0:
            raise ValueError(f"{flag}={value} must be positive.")
    if not max_wait_ms >= 0:
        raise ValueError(f"--max-wait-ms={max_wait_ms} must be 0 or more.")
    threads = settings.torch_threads if settings.torch_threads > 0 else max(1, cpus // workers)
    # JSON spends at most 12 bytes on a character (an escaped surrogate pair), plus keys around each text.
    max_body_bytes = max_batch * (12 * max_text_chars + 64) + 1024
    if workflow.task == "extraction":  # long documents: a request may carry one of the largest, escaped
        from ml.tasks.extraction import MAX_DOCUMENT_BYTES

        max_body_bytes = 6 * MAX_DOCUMENT_BYTES + 1024
    watcher = ChampionWatcher(settings, workflow.model_name, refresh_s, threads=threads)
    metrics = ServingMetrics()
    batcher = MicroBatcher(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        workers=workers,
        observe_batch=metrics.batch_size.observe,
    )
    latencies_ms: deque[float] = deque(maxlen=LATENCY_WINDOW)
    counts = {"requests": 0, "rejected": 0}

    @asynccontextmanager
    async def lifespan(app):
        # The first load happens before the port answers, so a started server is a ready one;
        # without a champion yet it starts anyway and answers 503 until one is promoted.
        try:
            await run_in_threadpool(watcher.check)
        except Exception as exc:  # noqa: BLE001
            watcher.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("%s: no model loaded at start: %s", workflow.model_name, watcher.last_error)
        watcher.start()
        batcher.start()
        yield
        await batcher.stop()
        watcher.stop()

    app = FastAPI(
        title=f"{workflow.model_name} @champion",
        lifespan=lifespan,
        description=f"Predictions of the {workflow.name} workflow's champion student.",
    )
    app.state.watcher = watcher
    app.state.batcher = batcher

    def reply(payload: dict, status: int, headers: dict | None = None) -> JSONResponse:
        metrics.requests.labels(status=str(status)).inc()
        if status != 200:
            counts["rejected"] += status < 500
        return JSONResponse(payload, status_code=status, headers=headers)

    def unavailable() -> JSONResponse:
        return reply(
            {
                "detail": f"no version of {workflow.model_name} is loaded yet: "
                f"{watcher.last_error or 'loading'}"
            },
            503,
        )

    errors = {
        code: {"model": ErrorResponse, "description": why}
        for code, why in (
            (400, "the body is not JSON (or is nested too deep)"),
            (413, "the body is larger than any valid request"),
            (422, "valid JSON of the wrong shape: the detail names the problem"),
            (503, "no version loaded yet"),
        )
    }
    request_body = {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }

    @app.post(
        "/predict",
        response_model=PredictResponse,
        responses=errors,
        openapi_extra={"requestBody": request_body},
    )
    async def predict(request: Request):
        started = time.perf_counter()
        served = watcher.served  # this request's model, whatever a refresh does meanwhile
        if served is None:
            return unavailable()
        batcher.reading += 1
        try:
            raw = b""
            async for chunk in request.stream():  # read no more than a valid request can need
                raw += chunk
                if len(raw) > max_body_bytes:
                    return reply(
                        {
                            "detail": f"the body is over {max_body_bytes} bytes, more than {max_batch} texts "
                            f"of {max_text_chars} characters need; split the batch."
                        },
                        413,
                    )
            try:
                body = json.loads(raw)
            except RecursionError:
                return reply({"detail": f"the body is JSON nested too deep to read; {USAGE}"}, 400)
            except ValueError as exc:
                return reply({"detail": f"the body is not valid JSON ({str(exc)[:200]}); {USAGE}"}, 400)
            if served.task == "extraction":
                from ml.tasks.extraction import BadDocument

                try:
                    rows = parse_documents(body, max_batch=max_batch)
                except BadDocument as exc:
                    return reply({"detail": str(exc), "reason": exc.reason}, 400)
            else:
                try:
                    rows = parse_request(
                        body, served.columns, max_batch=max_batch, max_text_chars=max_text_chars
                    )
                except RequestError as exc:
                    return reply({"detail": str(exc), "signature": _describe(served.columns)}, 422)
        finally:
            batcher.reading -= 1
        with_probs = include_probs if body.get("include_probs") is None else body["include_probs"]
        out = await batcher.submit(served, rows)
        latency_ms = (time.perf_counter() - started) * 1000
        latencies_ms.append(latency_ms)
        metrics.latency.observe(latency_ms / 1000)
        counts["requests"] += 1
        log.debug("predict v%s n=%d latency_ms=%.1f", served.version, len(rows), latency_ms)
        if served.task == "extraction":
            answers = {"documents": [{"fields": json.loads(x)} for x in out["fields"]]}
        else:
            answers = {
                "labels": [str(x) for x in out["label"]],
                "scores": [float(x) for x in out["score"]],
                "probs": [json.loads(x) for x in out["probs"]] if with_probs and "probs" in out else None,
            }
        payload = {
            "model": workflow.model_name,
            "model_version": served.version,
            "served_variant": served.variant,
            **answers,
            "latency_ms": round(latency_ms, 3),
        }
        return reply(payload, 200, headers={"X-Latency-Ms": f"{latency_ms:.3f}"})

    @app.get("/livez", responses={200: {"description": "the process answers"}})
    def livez():
        return {"status": "alive"}

    @app.get(
        "/readyz", responses={200: {"description": "a version is loaded"}, 503: {"model": ErrorResponse}}
    )
    def readyz():
        served = watcher.served
        if served is None:
            return JSONResponse({"detail": f"not ready: {watcher.last_error or 'loading'}"}, status_code=503)
        return {"status": "ready", "model_version": served.version, "served_variant": served.variant}

    @app.get("/metrics", response_class=Response)
    def prometheus_metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(watcher.served), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    def health():
        served = watcher.served
        recent = list(latencies_ms)
        p50, p99 = percentile_ms(recent, 0.50), percentile_ms(recent, 0.99)
        payload = {
            "status": "ok" if served else "unavailable",
            "model": workflow.model_name,
            "model_version": served.version if served else None,
            "served_variant": served.variant if served else None,
            "loaded_at": served.loaded_at if served else None,
            "champion_checked_at": watcher.checked_at,
            "refresh_s": refresh_s,
            "last_error": watcher.last_error,
            "signature": _describe(served.columns) if served else None,
            "max_batch": max_batch,
            "max_wait_ms": max_wait_ms,
            "workers": workers,
            "threads_per_call": threads,
            "max_text_chars": max_text_chars,
            **counts,
            "latency_p50_ms": None if p50 is None else round(p50, 3),
            "latency_p99_ms": None if p99 is None else round(p99, 3),
        }
        return JSONResponse(payload, status_code=200 if served else 503)

    return app


# Batch scoring: a file in, the same file with the champion's answers out.


def read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".jsonl", ".ndjson"):
        return pd.read_json(path, lines=True, dtype=False)
    raise ValueError(f"{path}: unknown file type {suffix!r}; use .csv, .parquet or .jsonl.")


_TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson")


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write atomically: a reader (or a crash) never sees half a file."""
    suffix = path.suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise ValueError(f"{path}: unknown file type {suffix!r}; use .csv, .parquet or .jsonl.")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if suffix == ".csv":
            frame.to_csv(tmp, index=False)
        elif suffix in (".parquet", ".pq"):
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_json(tmp, orient="records", lines=True, force_ascii=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_output(source: Path, out: Path) -> None:
    """Refuse, before any scoring, an output that cannot be written or would overwrite the input."""
    if out.suffix.lower() not in _TABLE_SUFFIXES:
        raise ValueError(f"--out {out}: unknown file type {out.suffix!r}; use .csv, .parquet or .jsonl.")
    if out.resolve() == source.resolve() or (out.exists() and os.path.samefile(out, source)):
        raise ValueError(f"--out {out} is the input file; scoring would overwrite it. Name another file.")
    folder = out.parent
    if not folder.is_dir():
        raise ValueError(
            f"--out {out}: the folder {folder} does not exist; create it (mkdir -p {folder}) "
            "or name a file in an existing folder."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(
            f"--out {out}: the folder {folder} is not writable by this user; name another folder."
        )
    if out.is_dir():
        raise ValueError(
            f"--out {out} is a folder; name a file such as {out / ('predictions' + source.suffix)}."
        )


def predict_file(
    settings: Settings,
    workflow: Workflow,
    path: Path,
    *,
    out: Path | None = None,
    text_col: str | None = None,
) -> dict:
    """Score every row of a CSV/Parquet/JSONL file with @champion; write it back with the task's
    answers (label, score, probs; an extraction model's `fields` as JSON).

    @champion is resolved to a version once, and that version is loaded, so the whole file is
    scored by one model and the summary can name it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; pass a CSV, Parquet or JSONL file with a text column."
        )
    out = Path(out) if out else path.with_name(f"{path.stem}.predictions{path.suffix}")
    if path.suffix.lower() not in _TABLE_SUFFIXES:
        raise ValueError(f"{path}: unknown file type {path.suffix.lower()!r}; use .csv, .parquet or .jsonl.")
    check_output(path, out)
    from ml.tasks import task_module

    output_columns = task_module(workflow.task).SERVING_OUTPUT  # label, score, probs; or fields
    text_col = text_col or workflow.text_column
    frame = read_table(path)
    if text_col not in frame.columns:
        raise ValueError(
            f"{path}: no column {text_col!r} (it has {', '.join(map(str, frame.columns))}); "
            "name the text column with --text-col."
        )
    clash = [c for c in output_columns if c in frame.columns]
    if clash:
        raise ValueError(
            f"{path}: already has a {clash[0]!r} column, which the predictions would overwrite; "
            "rename or drop it first."
        )
    missing = frame.index[frame[text_col].isna()].tolist()
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} rows have no {text_col!r} (rows {missing[:5]}); drop or fill them."
        )
    client = registry.configure(settings)
    champion = registry.version_by_alias(client, workflow.model_name, registry.CHAMPION)
    if champion is None:
        raise LookupError(
            f"{workflow.model_name} has no @champion; run `mlops run --only distill` "
            "or promote a version with `mlops models approve VERSION`."
        )
    version = str(champion.version)
    started = time.perf_counter()
    model = load_served_model(f"models:/{workflow.model_name}/{version}", settings.torch_threads)
    scored = model.predict(pd.DataFrame({TEXT: frame[text_col].astype(str).tolist()}))
    result = frame.copy()
    for column in output_columns:
        result[column] = scored[column].to_numpy()
    write_table(result, out)
    return {
        "model": workflow.model_name,
        "model_version": version,
        "rows": len(result),
        "input": str(path),
        "out": str(out),
        "seconds": round(time.perf_counter() - started, 3),
    }
