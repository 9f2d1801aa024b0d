"""What the frontier proxy adds to a call, as a ratio: latency through the proxy ÷ calling the endpoint directly.

Both paths call the same fake OpenAI-compatible server on 127.0.0.1 (tests/integration/fake_openai.py),
which answers after --upstream-ms (a real frontier API takes hundreds of ms; 0 shows the proxy's
own cost bare). The fake and the proxy each run in their own process, as in production (in one
process they would share the GIL with the benchmark's client). Direct and proxied requests
alternate, and which goes first alternates too, so a noisy neighbour slows both alike. The proxy
records every call as in production: a call log in a temporary folder, written by its background
thread in fsync'd batches.

Run: `.venv/bin/python benchmarks/proxy_overhead.py [--n 200] [--upstream-ms 50] [--stream]`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

MAX_REQUESTS = 5000  # a benchmark of bounded length


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_fake(port: int, delay_s: float) -> None:
    from fake_openai import FakeOpenAI

    with FakeOpenAI(delay_s=delay_s, port=port):
        time.sleep(3600)  # the parent terminates this process


def serve_proxy(port: int, upstream_url: str, log_dir: str | None) -> None:
    import uvicorn

    from ml.costs.pricebook import PriceBook
    from ml.frontier.calllog import CallLog
    from ml.frontier.client import FrontierClient
    from ml.frontier.proxy import build_app

    log = CallLog(Path(log_dir)) if log_dir else None  # None: the same proxy, recording nothing
    client = FrontierClient(
        upstream_url,
        "sk-benchmark",
        workflow="ticket_routing",
        labels=("billing",),
        price_book=PriceBook.load(ROOT / "infra" / "price_book.yaml"),
        sinks=[log.append] if log else [],
        timeout_s=10.0,
        max_retries=0,
    )
    try:
        uvicorn.run(build_app(client), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        if log:
            log.close()


def start(target, *args) -> multiprocessing.Process:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    return process


def wait_until_up(http: httpx.Client, url: str, body: dict) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            http.post(url + "/chat/completions", json=body).raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up in 60 s") from None
            time.sleep(0.1)


def timed_ms(http: httpx.Client, base_url: str, body: dict) -> float:
    t0 = time.perf_counter()
    resp = http.post(f"{base_url}/chat/completions", json=body)
    resp.read()
    elapsed_ms = (time.perf_counter() - t0) * 1000
    resp.raise_for_status()
    return elapsed_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help=f"requests per path (at most {MAX_REQUESTS})")
    parser.add_argument(
        "--upstream-ms", type=float, default=50.0, help="how long the fake endpoint takes to answer"
    )
    parser.add_argument("--stream", action="store_true", help="streamed (SSE) requests instead of plain ones")
    parser.add_argument("--out", default="benchmarks/results/proxy_overhead.json")
    args = parser.parse_args()
    if not 1 <= args.n <= MAX_REQUESTS or not 0 <= args.upstream_ms <= 2000:
        parser.error(f"--n must be in 1..{MAX_REQUESTS} and --upstream-ms in 0..2000")

    body = {
        "model": "frontier-large",
        "stream": args.stream,
        "messages": [{"role": "user", "content": "Where is my parcel? Order 1234567 was due Monday."}],
    }
    names = ("direct", "proxy", "proxy_unrecorded")
    samples: dict[str, list[float]] = {name: [] for name in names}
    paths = {name: f"http://127.0.0.1:{free_port()}/v1" for name in names}
    port = {name: int(url.rsplit(":", 1)[1].split("/")[0]) for name, url in paths.items()}
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(timeout=10.0) as http:
        processes = [
            start(serve_fake, port["direct"], args.upstream_ms / 1000),
            start(serve_proxy, port["proxy"], paths["direct"], tmp),
            start(serve_proxy, port["proxy_unrecorded"], paths["direct"], None),
        ]
        try:
            for url in paths.values():
                wait_until_up(http, url, body)
            for _ in range(10):  # warm-up: connections, first-call paths
                for url in paths.values():
                    timed_ms(http, url, body)
            for i in range(args.n):
                for name in names[i % 3 :] + names[: i % 3]:  # each path goes first in turn
                    samples[name].append(timed_ms(http, paths[name], body))
        finally:
            for process in processes:
                process.terminate()
                process.join(10)
        # The proxy was terminated, not shut down: count what its writer had fsync'd by then.
        recorded = sum(len(p.read_text().splitlines()) for p in Path(tmp).glob("*.jsonl"))

    median = {k: statistics.median(v) for k, v in samples.items()}
    p95 = {k: statistics.quantiles(v, n=20)[-1] for k, v in samples.items()}
    report = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "n": args.n,
        "upstream_ms": args.upstream_ms,
        "stream": args.stream,
        "median_ms": median,
        "p95_ms": p95,
        "ratio_median": median["proxy"] / median["direct"],
        "ratio_p95": p95["proxy"] / p95["direct"],
        "overhead_median_ms": median["proxy"] - median["direct"],
        "recording_ratio_median": median["proxy"] / median["proxy_unrecorded"],
        "calls_recorded": recorded,
    }
    print(f"{'path':<18}{'median ms':>11}{'p95 ms':>9}")
    for name in names:
        print(f"{name:<18}{median[name]:>11.2f}{p95[name]:>9.2f}")
    print(
        f"proxy / direct: {report['ratio_median']:.3f}x median, {report['ratio_p95']:.3f}x p95 "
        f"(+{report['overhead_median_ms']:.2f} ms median, upstream {args.upstream_ms:g} ms"
        f"{', streamed' if args.stream else ''})"
    )
    print(
        f"recording / not recording: {report['recording_ratio_median']:.3f}x median ({recorded} calls recorded)"
    )
    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
