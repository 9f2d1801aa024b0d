"""A small OpenAI-compatible chat completions server on 127.0.0.1, for tests and the proxy benchmark.

Each request takes the next mode from `script`, then `default_mode`:
  ok         answers `answer` (streamed as SSE when the request says stream: true); `answer` may be
             a function of the request body, and when the request asks for logprobs and
             `logprobs` (a function of the body giving the per-token list) is set, the
             non-streamed choice carries them as OpenAI's {"content": [...]}
  slow       ok, after `slow_s` (streamed: the headers at once, the first token after slow_s)
  hang       sleeps `hang_s` before anything, so a client with a shorter timeout gives up
  block      waits until the test sets `release` (at most BLOCK_MAX_S), then answers ok: a hung upstream
  error429 / error500 / error400   an OpenAI-style error body with that status
  malformed  200 with a truncated JSON body
  cut        streamed: closes the stream before [DONE]
Every request's Authorization header, body and mode are kept in `requests`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_SLEEP_S = 2.0  # tests stay bounded in time
BLOCK_MAX_S = 60.0  # a "block" request never outlives a test that forgot to release it by much


class FakeOpenAI:
    def __init__(
        self,
        *,
        answer: str | Callable[[dict], str] = " Billing\n",
        default_mode: str = "ok",
        slow_s: float = 0.3,
        hang_s: float = 2.0,
        delay_s: float = 0.0,
        port: int = 0,
        logprobs: Callable[[dict], list[dict]] | None = None,
    ):
        assert max(slow_s, hang_s, delay_s) <= MAX_SLEEP_S
        self.logprobs = logprobs
        self.answer, self.default_mode, self.slow_s, self.hang_s, self.delay_s = (
            answer,
            default_mode,
            slow_s,
            hang_s,
            delay_s,
        )
        self.script: list[str] = []
        self.release = threading.Event()
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def answer_for(self, body: dict) -> str:
        return self.answer(body) if callable(self.answer) else self.answer

    def next_mode(self, request: dict) -> str:
        with self._lock:
            request["mode"] = self.script.pop(0) if self.script else self.default_mode
            self.requests.append(request)
            return request["mode"]

    def __enter__(self) -> "FakeOpenAI":
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real provider
    disable_nagle_algorithm = True  # else headers and body wait on the client's delayed ACK (40 ms)

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        fake: FakeOpenAI = self.server.fake
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        mode = fake.next_mode({"authorization": self.headers.get("Authorization"), "body": body})
        time.sleep(fake.delay_s)
        try:
            if mode == "hang":
                time.sleep(fake.hang_s)
            if mode == "block":
                fake.release.wait(BLOCK_MAX_S)
                mode = "ok"
            if mode.startswith("error"):
                status = int(mode[len("error") :])
                payload = {"error": {"message": f"fake {status}", "type": "fake_error"}}
                return self._send(
                    status, json.dumps(payload).encode(), {"Retry-After": "0"} if status == 429 else {}
                )
            if mode == "malformed":
                return self._send(200, b'{"id": "x", "choices": [{"message": ')
            answer = fake.answer_for(body)
            if body.get("stream"):
                return self._stream(fake, body, mode, answer)
            if mode == "slow":
                time.sleep(fake.slow_s)
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            }
            if body.get("logprobs") and fake.logprobs is not None:
                choice["logprobs"] = {"content": fake.logprobs(body)}
            self._send(
                200,
                json.dumps(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion",
                        "model": "fake-2026-06-01",
                        "choices": [choice],
                        "usage": _usage(body, answer),
                    }
                ).encode(),
            )
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def _send(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _stream(self, fake: FakeOpenAI, body: dict, mode: str, answer: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": "fake-2026-06-01"}
        half = len(answer) // 2
        events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
        events += [
            {**base, "choices": [{"index": 0, "delta": {"content": part}}]}
            for part in (answer[:half], answer[half:])
        ]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "choices": [], "usage": _usage(body, answer)})
        for i, event in enumerate(events):
            if i == 1 and mode == "slow":
                time.sleep(fake.slow_s)
            if i == 2 and mode == "cut":
                break
            self._chunk(f"data: {json.dumps(event)}\n\n".encode())
        else:
            self._chunk(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")


def _usage(body: dict, answer: str) -> dict:
    words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    return {
        "prompt_tokens": 10 + words,
        "completion_tokens": max(1, len(answer.split())),
        "total_tokens": 10 + words + max(1, len(answer.split())),
    }
