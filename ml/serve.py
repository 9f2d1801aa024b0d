"""Serving the workflow's `@champion`: an HTTP app (`mlops serve`) and batch scoring (`mlops predict`).

HTTP, built by `create_app(settings, workflow)`:

- `POST /predict` takes `{"texts": ["...", ...]}` or `{"instances": [{"text": "..."}, ...]}` and
  answers `labels`, `scores`, `probs`, `model_version` and `latency_ms` (also in the `X-Latency-Ms`
  header). The request is checked against the served version's MLflow signature before the model
  sees it; a bad one gets 422 (400 for a body that is not JSON) with `detail` naming the problem.
- `GET /health` names the served version, when it was loaded, when @champion was last looked up,
  the last refresh error and the latency of recent requests; 503 while no version is loaded.

A background thread looks up @champion at most every `refresh_s` seconds. A new version is
loaded beside the one serving and swapped in with one assignment, so no request waits for a
load and a request in flight finishes on the model it started with; the version before is kept,
so a rollback swaps back at once. Models load with `mlflow.pyfunc.load_model`, which runs the
logged `serving_model.py`: the scoring side needs the registry, not this package's training code.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import mlflow
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from ml import registry
from ml.config import Settings
from ml.workflows import Workflow

log = logging.getLogger(__name__)

DEFAULT_REFRESH_S = 10.0
DEFAULT_MAX_BATCH = 256
LATENCY_WINDOW = 1000  # recent requests /health summarises
TEXT = "text"
OUTPUT_COLUMNS = ("label", "score", "probs")
# JSON types a signature's column types accept (bool is an int in Python, never a number here).
_JSON_TYPES = {"string": (str,), "binary": (str,), "boolean": (bool,), "integer": (int,), "long": (int,),
               "float": (int, float), "double": (int, float)}


class RequestError(ValueError):
    """A prediction request the model's signature does not accept; the message says what to send."""


@dataclass(frozen=True)
class Served:
    """One loaded version. Requests take the current one once and keep it to the end."""

    version: str
    model: object  # mlflow.pyfunc.PyFuncModel
    columns: dict[str, tuple[str, bool]]  # input column -> (signature type, required)
    loaded_at: str
    # The fast tokenizer must not be called from two threads at once ("Already borrowed").
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        with self.lock:
            return self.model.predict(frame)


def signature_columns(model) -> dict[str, tuple[str, bool]]:
    """Input columns of a loaded pyfunc's signature; a model logged without one takes `text`."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return {TEXT: ("string", True)}
    return {str(spec.name): (getattr(spec.type, "name", str(spec.type)), bool(getattr(spec, "required", True)))
            for spec in schema.inputs}


def _describe(columns: dict[str, tuple[str, bool]]) -> str:
    return ", ".join(f"{name}: {typ}{'' if required else ' (optional)'}" for name, (typ, required) in columns.items())


def parse_request(body, columns: dict[str, tuple[str, bool]], *, max_batch: int, max_text_chars: int) -> list[dict]:
    """The rows a prediction request asks for, checked against the signature's columns.

    Raises RequestError naming the first problem and what to send instead.
    """
    usage = 'send {"texts": ["..."]} or {"instances": [{"text": "..."}]}'
    if not isinstance(body, dict):
        raise RequestError(f"the body is a JSON {type(body).__name__}, not an object; {usage}.")
    if ("texts" in body) == ("instances" in body):
        raise RequestError(f"the body needs exactly one of 'texts' and 'instances'; {usage}.")
    key = "texts" if "texts" in body else "instances"
    items = body[key]
    if not isinstance(items, list):
        raise RequestError(f"'{key}' is a JSON {type(items).__name__}, not a list; {usage}.")
    if not items:
        raise RequestError(f"'{key}' is empty; send at least one.")
    if len(items) > max_batch:
        raise RequestError(f"'{key}' has {len(items)} items; at most {max_batch} per request: split the batch.")
    if key == "texts":
        needed = {name for name, (_, required) in columns.items() if required}
        if needed - {TEXT}:
            raise RequestError(f"this model's signature needs {_describe(columns)}; send 'instances' with those fields.")
        items = [{TEXT: text} for text in items]
    rows = []
    for i, item in enumerate(items):
        where = f"texts[{i}]" if key == "texts" else f"instances[{i}]"
        if not isinstance(item, dict):
            raise RequestError(f"{where} is a JSON {type(item).__name__}, not an object like {{\"text\": \"...\"}}.")
        for name, (typ, required) in columns.items():
            if name not in item or item[name] is None:
                if required:
                    raise RequestError(f"{where} has no '{name}'; the model's signature needs {_describe(columns)}.")
                continue
            value, accepted = item[name], _JSON_TYPES.get(typ)
            at = where if key == "texts" else f"{where}.{name}"
            if accepted and (not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted)):
                raise RequestError(f"{at} is a JSON {type(value).__name__} ({json.dumps(value)[:40]}), "
                                   f"not a {typ}; the model's signature says {name}: {typ}.")
            if isinstance(value, str) and len(value) > max_text_chars:
                raise RequestError(f"{at} has {len(value)} characters; at most {max_text_chars}: shorten it.")
        rows.append({name: item.get(name) for name in columns})
    return rows


class ChampionWatcher:
    """Which version serves: looks @champion up, loads a new version, swaps it in."""

    def __init__(self, settings: Settings, model_name: str, refresh_s: float):
        self.settings, self.model_name, self.refresh_s = settings, model_name, refresh_s
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
            self.last_error = (f"{self.model_name} has no @champion; promote a version "
                               "(`mlops models approve VERSION`) or run the distill DAG.")
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
            model = mlflow.pyfunc.load_model(f"models:/{self.model_name}/{version}")
            loaded = Served(version, model, signature_columns(model),
                            datetime.now(timezone.utc).isoformat(timespec="seconds"))
        except Exception as exc:
            self._failed_version = version
            still = f"still serving v{self.served.version}" if self.served else "nothing to serve"
            raise RuntimeError(f"v{version} of {self.model_name} failed to load ({type(exc).__name__}: {exc}); "
                               f"{still}. Promote another version.") from exc
        self.served, self.previous = loaded, self.served  # one assignment: requests see old or new, whole
        self.last_error = self._failed_version = None
        log.info("%s: serving v%s (loaded in %.0f ms)", self.model_name, version, (time.perf_counter() - started) * 1000)

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


def _percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 3)


def create_app(settings: Settings, workflow: Workflow, *, refresh_s: float = DEFAULT_REFRESH_S,
               max_batch: int = DEFAULT_MAX_BATCH, max_text_chars: int | None = None) -> FastAPI:
    """The prediction service of `workflow`'s @champion.

    max_text_chars defaults to the workflow's `validation.max_text_chars`: the model never saw
    longer texts in training, and a caller should hear so rather than get a truncated guess.
    """
    max_text_chars = workflow.validation.max_text_chars if max_text_chars is None else max_text_chars
    for flag, value in (("--refresh-s", refresh_s), ("--max-batch", max_batch), ("--max-text-chars", max_text_chars)):
        if not value > 0:
            raise ValueError(f"{flag}={value} must be positive.")
    if settings.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.torch_threads)
    # JSON spends at most 12 bytes on a character (an escaped surrogate pair), plus keys around each text.
    max_body_bytes = max_batch * (12 * max_text_chars + 64) + 1024
    watcher = ChampionWatcher(settings, workflow.model_name, refresh_s)
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
        yield
        watcher.stop()

    app = FastAPI(title=f"{workflow.model_name} @champion", lifespan=lifespan,
                  description=f"Predictions of the {workflow.name} workflow's champion student.")
    app.state.watcher = watcher

    def unavailable() -> JSONResponse:
        return JSONResponse({"detail": f"no version of {workflow.model_name} is loaded yet: "
                                       f"{watcher.last_error or 'loading'}"}, status_code=503)

    @app.post("/predict")
    async def predict(request: Request):
        started = time.perf_counter()
        served = watcher.served  # this request's model, whatever a refresh does meanwhile
        if served is None:
            return unavailable()
        raw = b""
        async for chunk in request.stream():  # read no more than a valid request can need
            raw += chunk
            if len(raw) > max_body_bytes:
                counts["rejected"] += 1
                return JSONResponse({"detail": f"the body is over {max_body_bytes} bytes, more than {max_batch} texts "
                                               f"of {max_text_chars} characters need; split the batch."},
                                    status_code=413)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            counts["rejected"] += 1
            return JSONResponse({"detail": f"the body is not valid JSON ({exc}); "
                                           'send {"texts": ["..."]}'}, status_code=400)
        try:
            rows = parse_request(body, served.columns, max_batch=max_batch, max_text_chars=max_text_chars)
        except RequestError as exc:
            counts["rejected"] += 1
            return JSONResponse({"detail": str(exc), "signature": _describe(served.columns)}, status_code=422)
        out = await run_in_threadpool(served.predict, pd.DataFrame(rows, columns=list(served.columns)))
        latency_ms = (time.perf_counter() - started) * 1000
        latencies_ms.append(latency_ms)
        counts["requests"] += 1
        log.info("predict v%s n=%d latency_ms=%.1f", served.version, len(rows), latency_ms)
        payload = {"model": workflow.model_name, "model_version": served.version,
                   "labels": [str(x) for x in out["label"]], "scores": [float(x) for x in out["score"]],
                   "probs": [json.loads(x) for x in out["probs"]] if "probs" in out else None,
                   "latency_ms": round(latency_ms, 3)}
        return JSONResponse(payload, headers={"X-Latency-Ms": f"{latency_ms:.3f}"})

    @app.get("/health")
    def health():
        served = watcher.served
        recent = list(latencies_ms)
        payload = {"status": "ok" if served else "unavailable", "model": workflow.model_name,
                   "model_version": served.version if served else None,
                   "loaded_at": served.loaded_at if served else None, "champion_checked_at": watcher.checked_at,
                   "refresh_s": refresh_s, "last_error": watcher.last_error,
                   "signature": _describe(served.columns) if served else None,
                   "max_batch": max_batch, "max_text_chars": max_text_chars, **counts,
                   "latency_p50_ms": _percentile_ms(recent, 0.50), "latency_p99_ms": _percentile_ms(recent, 0.99)}
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


def write_table(frame: pd.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix in (".parquet", ".pq"):
        frame.to_parquet(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        raise ValueError(f"{path}: unknown file type {suffix!r}; use .csv, .parquet or .jsonl.")


def predict_file(settings: Settings, workflow: Workflow, path: Path, *, out: Path | None = None,
                 text_col: str | None = None) -> dict:
    """Score every row of a CSV/Parquet/JSONL file with @champion; write it back with label, score, probs.

    @champion is resolved to a version once, and that version is loaded, so the whole file is
    scored by one model and the summary can name it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; pass a CSV, Parquet or JSONL file with a text column.")
    out = Path(out) if out else path.with_name(f"{path.stem}.predictions{path.suffix}")
    text_col = text_col or workflow.text_column
    frame = read_table(path)
    if text_col not in frame.columns:
        raise ValueError(f"{path}: no column {text_col!r} (it has {', '.join(map(str, frame.columns))}); "
                         "name the text column with --text-col.")
    clash = [c for c in OUTPUT_COLUMNS if c in frame.columns]
    if clash:
        raise ValueError(f"{path}: already has a {clash[0]!r} column, which the predictions would overwrite; "
                         "rename or drop it first.")
    missing = frame.index[frame[text_col].isna()].tolist()
    if missing:
        raise ValueError(f"{path}: {len(missing)} rows have no {text_col!r} (rows {missing[:5]}); drop or fill them.")
    client = registry.configure(settings)
    champion = registry.version_by_alias(client, workflow.model_name, registry.CHAMPION)
    if champion is None:
        raise LookupError(f"{workflow.model_name} has no @champion; run `mlops run --only distill` "
                          "or promote a version with `mlops models approve VERSION`.")
    version = str(champion.version)
    started = time.perf_counter()
    model = mlflow.pyfunc.load_model(f"models:/{workflow.model_name}/{version}")
    scored = model.predict(pd.DataFrame({TEXT: frame[text_col].astype(str).tolist()}))
    result = frame.copy()
    for column in OUTPUT_COLUMNS:
        result[column] = scored[column].to_numpy()
    write_table(result, out)
    return {"model": workflow.model_name, "model_version": version, "rows": len(result), "input": str(path),
            "out": str(out), "seconds": round(time.perf_counter() - started, 3)}
