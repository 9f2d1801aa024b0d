"""An instrumented client for any OpenAI-compatible chat completions endpoint.

Every call, whatever becomes of it, is turned into one call-log row (the format ml.data.ingest
reads) and handed to the sinks: the call log's queue, the shadow scorer. Failures are recorded by
class (RateLimitError, ServerError, Timeout, ...) and never by message: provider error texts can
echo headers, and the API key must not reach a log. The key lives only in the HTTP client's
default headers.

Retries: 429, 5xx and connection failures are retried with bounded exponential backoff (honouring
Retry-After up to the cap); a timeout is not, because the caller's time is already spent.

A hung upstream must not take the proxy with it: at most max_concurrency calls are in flight to
the upstream (the HTTP pool is sized to match, so no call waits on a pool slot), a call beyond
that is refused at once (`saturated`, the proxy answers 503 with Retry-After) rather than queued
behind hung ones, and every call has a deadline (deadline_s) over all its attempts and backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import httpx

from ml.costs import unit_costs
from ml.costs.pricebook import PriceBook, PriceBookError

log = logging.getLogger(__name__)


@dataclass
class Call:
    """What one call did: the outcome, and the upstream body to relay to the caller."""

    ts: str
    started_s: float  # time.perf_counter() at the first attempt
    status: str = "ok"  # ok | error | timeout, as ingest reads it
    error: str | None = None  # the error's class, never its message
    retries: int = 0
    http_status: int | None = None
    content_type: str = "application/json"
    body: bytes = b""
    response_text: str | None = None
    model_version: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    row: dict = field(default_factory=dict)

    def fail(self, status: str, error: str) -> None:
        self.status, self.error = status, error


def error_class(http_status: int) -> str:
    if http_status == 429:
        return "RateLimitError"
    if http_status >= 500:
        return "ServerError"
    return "AuthenticationError" if http_status in (401, 403) else "BadRequestError"


def request_text(body: dict) -> str:
    """The text the call is about (a ticket, a whole document): the last user message (text parts
    joined when it has several), never shortened: a long document's tokens are what it costs."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return "" if content is None else str(content)
    return ""


def parse_label(answer: str | None, labels: Sequence[str]) -> str | None:
    """The workflow's label the answer names (stripped, any case), else None."""
    if answer is None:
        return None
    wanted = answer.strip().casefold()
    return next((label for label in labels if label.casefold() == wanted), None)


class FrontierClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        workflow: str,
        labels: Sequence[str] = (),
        fields: Sequence[str] = (),
        price_book: PriceBook | None = None,
        sinks: Sequence[Callable[[dict], None]] = (),
        timeout_s: float = 30.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_concurrency: int = 64,
        deadline_s: float | None = None,
    ):
        if not base_url:
            raise ValueError(
                "no upstream URL; set MLOPS_FRONTIER_BASE_URL (e.g. https://api.openai.com/v1) "
                "or pass --upstream-url."
            )
        if max_retries < 0 or not timeout_s > 0:
            raise ValueError(f"max_retries={max_retries} must be >= 0 and timeout_s={timeout_s} > 0.")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency={max_concurrency!r} must be a whole number >= 1, e.g. 64.")
        # By default a call may use every attempt's timeout and the backoff between them, no more.
        deadline_s = (
            timeout_s * (max_retries + 1) + max_backoff_s * max_retries if deadline_s is None else deadline_s
        )
        if not deadline_s > 0:
            raise ValueError(f"deadline_s={deadline_s!r} must be > 0 seconds.")
        self.url = base_url.rstrip("/") + "/chat/completions"
        if labels and fields:
            raise ValueError(
                "pass labels (a label per call: response_label) or fields (a JSON object of fields per "
                "call: response_json), not both; a workflow declares one of them."
            )
        self.workflow, self.labels, self.fields, self.price_book, self.sinks = (
            workflow,
            tuple(labels),
            tuple(fields),
            price_book,
            list(sinks),
        )
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.max_concurrency, self.deadline_s = max_concurrency, float(deadline_s)
        self.in_flight = self.rejected = 0  # one event loop touches these: no lock needed
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # The pool holds every admitted call, so none waits for a connection (httpx's default pool
        # of 100 made an unrelated call wait behind 100 hung ones).
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            headers=headers,
        )

    def saturation(self) -> dict:
        """What /healthz reports: calls in flight against the bound, and calls refused so far."""
        return {
            "in_flight": self.in_flight,
            "max_concurrency": self.max_concurrency,
            "saturated": self.in_flight >= self.max_concurrency,
            "rejected": self.rejected,
            "deadline_s": self.deadline_s,
        }

    def _admit(self) -> bool:
        if self.in_flight >= self.max_concurrency:
            self.rejected += 1
            log.warning(
                "frontier %s: %d calls in flight (max_concurrency); refused one",
                self.workflow,
                self.in_flight,
            )
            return False
        self.in_flight += 1
        return True

    async def aclose(self) -> None:
        await self._http.aclose()

    async def complete(self, body: dict) -> Call:
        """One non-streamed completion; the Call holds the upstream body (or why there is none).

        A call refused for saturation has status "saturated" and is not a frontier call: no row.
        """
        call = _new_call()
        if not self._admit():
            call.fail("saturated", "Saturated")
            return call
        try:
            async with asyncio.timeout(self.deadline_s):
                resp = await self._send(body, call)
                if resp is not None:
                    try:
                        call.body = await resp.aread()
                    except httpx.TimeoutException:
                        call.fail("timeout", "Timeout")
                    except httpx.TransportError:
                        call.fail("error", "ConnectionError")
                    finally:
                        await resp.aclose()
        except TimeoutError:
            call.fail("timeout", "Deadline")
        finally:
            self.in_flight -= 1
            if call.status == "ok":
                try:
                    data = json.loads(call.body)
                    call.response_text = data["choices"][0]["message"]["content"]
                    self._usage(call, data)
                except (ValueError, KeyError, IndexError, TypeError):
                    call.fail("error", "MalformedResponse")
        self._finish(call, body)
        return call

    async def stream(self, body: dict) -> tuple[Call, AsyncIterator[bytes] | None]:
        """A streamed completion: (call, chunks to relay) once upstream answered 2xx, else (call, None).

        Usage is requested in the stream (a last chunk with empty choices, as OpenAI documents)
        unless the caller set stream_options itself; without it no tokens, so no cost.
        """
        body = {**body, "stream_options": body.get("stream_options") or {"include_usage": True}}
        call = _new_call()
        if not self._admit():
            call.fail("saturated", "Saturated")
            return call, None
        resp = None
        try:
            async with asyncio.timeout(self.deadline_s):  # until the headers; the relay checks it per chunk
                resp = await self._send(body, call)
                if resp is not None and call.status != "ok":
                    try:
                        call.body = await resp.aread()
                    except httpx.HTTPError:
                        pass  # the error body is a courtesy to the caller; the call is recorded either way
                    finally:
                        await resp.aclose()
        except TimeoutError:
            call.fail("timeout", "Deadline")
        except BaseException:
            self.in_flight -= 1
            raise
        if call.status != "ok":
            self.in_flight -= 1
            self._finish(call, body)
            return call, None
        return call, self._relay(call, body, resp)

    async def _relay(self, call: Call, body: dict, resp: httpx.Response) -> AsyncIterator[bytes]:
        pending, done, parts = b"", False, []
        try:
            async for chunk in resp.aiter_bytes():
                # A trickling upstream (a byte now and then, never a read timeout) would hold its
                # slot for ever: the call's deadline covers the stream too.
                if time.perf_counter() - call.started_s > self.deadline_s:
                    call.fail("timeout", "Deadline")
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    data = line.strip()[5:].strip() if line.startswith(b"data:") else b""
                    if data == b"[DONE]":
                        done = True
                    elif data:
                        try:
                            event = json.loads(data)
                            delta = (event.get("choices") or [{}])[0].get("delta") or {}
                            self._usage(call, event)
                        except (ValueError, AttributeError, TypeError, IndexError):
                            call.fail("error", "MalformedResponse")
                            continue
                        if delta.get("content"):
                            if call.ttft_ms is None:
                                call.ttft_ms = (time.perf_counter() - call.started_s) * 1000
                            parts.append(delta["content"])
                yield chunk
            if not done and call.status == "ok":
                call.fail("error", "StreamInterrupted")  # upstream closed without [DONE]
        except httpx.TimeoutException:
            call.fail("timeout", "Timeout")
        except httpx.TransportError:
            call.fail("error", "StreamInterrupted")
        except BaseException:  # the caller went away (cancelled): record it, then let it propagate
            call.fail("error", "ClientDisconnected")
            raise
        finally:
            self.in_flight -= 1
            call.response_text = "".join(parts)
            self._finish(call, body)
            await resp.aclose()

    async def _send(self, body: dict, call: Call) -> httpx.Response | None:
        """POST with bounded retries; a response (2xx, or the last failure) or None (call says why)."""
        for attempt in range(self.max_retries + 1):
            call.retries, call.status, call.error = attempt, "ok", None
            resp = None
            try:
                resp = await self._http.send(
                    self._http.build_request("POST", self.url, json=body), stream=True
                )
            except httpx.TimeoutException:
                call.fail("timeout", "Timeout")
                return None
            except httpx.TransportError:
                call.fail("error", "ConnectionError")
            if resp is not None:
                call.http_status = resp.status_code
                call.content_type = resp.headers.get("content-type", call.content_type)
                if resp.status_code < 400:
                    return resp
                call.fail("error", error_class(resp.status_code))
                if (resp.status_code != 429 and resp.status_code < 500) or attempt == self.max_retries:
                    return resp
                await resp.aclose()
            if attempt == self.max_retries:
                return None
            await asyncio.sleep(self._backoff_s(attempt, resp))
        return None

    def _backoff_s(self, attempt: int, resp: httpx.Response | None) -> float:
        try:
            retry_after = float(resp.headers.get("retry-after")) if resp is not None else None
        except (TypeError, ValueError):
            retry_after = None
        # Jitter, so that many callers rate-limited together do not come back together.
        wait = (
            retry_after if retry_after is not None else self.backoff_s * 2**attempt * random.uniform(0.5, 1.0)
        )
        return min(max(wait, 0.0), self.max_backoff_s)

    def _usage(self, call: Call, data: dict) -> None:
        usage = data.get("usage") or {}
        call.tokens_in = int(usage.get("prompt_tokens") or call.tokens_in)
        call.tokens_out = int(usage.get("completion_tokens") or call.tokens_out)
        call.model_version = str(data.get("system_fingerprint") or data.get("model") or call.model_version)

    def _cost_usd(self, model: str, tokens_in: int, tokens_out: int) -> float | None:
        if self.price_book is None:
            return None
        try:
            cost = unit_costs.priced_call_usd(
                self.price_book, model, datetime.now(timezone.utc).date(), tokens_in, tokens_out
            )
        except PriceBookError:
            return None  # an unpriced model must not fail the call; the report names it
        return round(float(cost), 8)  # informational only: the ledger re-prices from tokens

    def _answer(self, response_text: str | None) -> dict:
        """The answer's columns as curation reads them: with declared fields, the answer's text as
        `response_json` (unparsed: curation names what is wrong with it, ml/tasks/); else the label
        it names as `response_label` (None outside the labels)."""
        if self.fields:
            return {"response_json": response_text}
        return {"response_label": parse_label(response_text, self.labels), "label_probs": None}

    def _finish(self, call: Call, body: dict) -> None:
        call.latency_ms = (time.perf_counter() - call.started_s) * 1000
        ok = call.status == "ok"
        model = str(body.get("model") or "")
        call.row = {
            "call_id": str(uuid.uuid4()),
            "ts": call.ts,
            "workflow": self.workflow,
            "request_text": request_text(body),
            **self._answer(call.response_text if ok else None),
            "model": model,
            "model_version": call.model_version,
            "latency_ms": round(call.latency_ms, 1),
            "tokens_in": call.tokens_in,
            "tokens_out": call.tokens_out if ok else 0,
            "cost_usd": self._cost_usd(model, call.tokens_in, call.tokens_out) if ok else 0.0,
            "status": call.status,
            "error": call.error,
            "retries": call.retries,
            # Beyond what ingest reads: for the constraint report and for people reading the log.
            "ttft_ms": None if call.ttft_ms is None else round(call.ttft_ms, 1),
            "stream": bool(body.get("stream")),
            "http_status": call.http_status,
            "response_text": call.response_text if ok else None,
        }
        for sink in self.sinks:
            try:
                sink(call.row)
            except Exception:  # noqa: BLE001 - recording must never fail the caller's request
                log.exception(
                    "frontier %s: a call-log sink failed for call %s", self.workflow, call.row["call_id"]
                )


def _new_call() -> Call:
    ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Call(ts=ts, started_s=time.perf_counter())
