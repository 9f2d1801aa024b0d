"""A tiny SMTP server and a JSON webhook receiver on 127.0.0.1, for the notification tests.

Both run in a thread of the test process and keep what they received. The SMTP server speaks
just enough of RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT) for smtplib's client;
no TLS and no AUTH, as the test connection disables both. `fail_with` makes the webhook answer
an HTTP error instead, to test a receiver that is down.
"""

from __future__ import annotations

import email
import email.policy
import json
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


class _Smtp(socketserver.StreamRequestHandler):
    def _say(self, line: str) -> None:
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self) -> None:
        self._say("220 127.0.0.1 test SMTP")
        sender, rcpts = None, []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            cmd = raw.decode("utf-8", "replace").rstrip("\r\n")
            verb = cmd[:4].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-127.0.0.1\r\n250 8BITMIME\r\n")
            elif verb == "HELO" or verb == "NOOP":
                self._say("250 OK")
            elif verb == "MAIL":
                sender, rcpts = cmd.split(":", 1)[1].strip().strip("<>").split(">")[0], []
                self._say("250 OK")
            elif verb == "RCPT":
                rcpts.append(cmd.split(":", 1)[1].strip().strip("<>").split(">")[0])
                self._say("250 OK")
            elif verb == "DATA":
                self._say("354 end with <CRLF>.<CRLF>")
                lines = []
                while (line := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    lines.append(line[1:] if line.startswith(b"..") else line)  # dot-stuffing
                msg = email.message_from_bytes(b"".join(lines), policy=email.policy.default)
                self.server.received.append({"from": sender, "to": rcpts, "message": msg})
                self._say("250 queued")
            elif verb == "RSET":
                sender, rcpts = None, []
                self._say("250 OK")
            elif verb == "QUIT":
                self._say("221 bye")
                return
            else:
                self._say("502 not implemented")


class SmtpReceiver:
    """`with SmtpReceiver() as smtp:` … `smtp.port`, `smtp.wait_for(n)` -> received messages."""

    def __init__(self):
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Smtp)
        self.server.daemon_threads = True
        self.server.received = []
        self.port = self.server.server_address[1]

    @property
    def received(self) -> list[dict]:
        return self.server.received

    def wait_for(self, n: int, deadline_s: float = 60.0) -> list[dict]:
        return _wait(lambda: self.received, n, deadline_s)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class WebhookReceiver:
    """`with WebhookReceiver() as hook:` … `hook.url`, `hook.wait_for(n)` -> received JSON bodies."""

    def __init__(self, fail_with: int | None = None):
        received: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if fail_with:
                    self.send_response(fail_with)
                    self.end_headers()
                    return
                received.append({"content_type": self.headers.get("Content-Type"), "json": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.received = received
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/mlops"

    def wait_for(self, n: int, deadline_s: float = 60.0) -> list[dict]:
        return _wait(lambda: self.received, n, deadline_s)

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _wait(get, n: int, deadline_s: float) -> list:
    # Polls with a generous deadline: delivery is synchronous, so this only waits out a busy host.
    end = time.monotonic() + deadline_s
    while len(get()) < n and time.monotonic() < end:
        time.sleep(0.05)
    return list(get())
