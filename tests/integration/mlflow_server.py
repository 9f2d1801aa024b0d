"""A real `mlflow server` (SQLite backend) on 127.0.0.1 for the registry and serving tests, and
real model versions to put in it: tiny random-init classifiers logged like `register_challenger`
logs a student (models-from-code `serving_model.py`, safetensors in the `model_dir` artifact).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
SERVING_MODEL = ROOT / "ml" / "serving_model.py"
START_WAIT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(folder: Path):
    """`mlflow server` on SQLite and a local artifact root; yields its URL; always stopped."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = folder / "mlflow-server.log"
    # Two workers: concurrent requests really run in two processes on one SQLite file. No job
    # runner (it would start a dozen huey processes the tests do not need).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "wb") as server_log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{folder / 'm.db'}",
                "--default-artifact-root",
                str(folder / "art"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "2",
            ],
            cwd=folder,
            env=env,
            stdout=server_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # its own process group: uvicorn's workers stop with it
    try:
        deadline = time.monotonic() + START_WAIT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not answer on {url} within {START_WAIT_S:.0f} s:\n"
                    f"{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left (uvicorn workers)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def client_env(url: str, state_dir: Path) -> dict[str, str]:
    """Settings and MLflow client variables a child process needs to talk to the server."""
    return {
        "MLOPS_STATE_DIR": str(state_dir),
        "MLOPS_MLFLOW_TRACKING_URI": url,
        "MLOPS_MLFLOW_ARTIFACT_ROOT": str(state_dir / "artifacts"),
        "MLOPS_TORCH_THREADS": "1",
        # A dead server fails a test in seconds instead of minutes of retries.
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }


def log_tiny_classifier(
    base_dir: Path, labels, out_dir: Path, *, seed: int, experiment_id: str, max_length: int = 32
) -> tuple[str, str]:
    """A classifier head on the tiny base (initialised by `seed`), logged as a pyfunc; (model_uri, run_id)."""
    import mlflow
    import pandas as pd
    import torch
    from mlflow.models import infer_signature

    from ml.train.student import build_student

    torch.manual_seed(seed)
    model, tokenizer = build_student(base_dir, labels)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    example = pd.DataFrame({"text": ["my card was charged twice for the same order"]})
    signature = infer_signature(example, pd.DataFrame({"label": ["x"], "score": [0.5], "probs": ["{}"]}))
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVING_MODEL),
            artifacts={"model_dir": str(out_dir)},
            signature=signature,
            input_example=example,
            model_config={"max_length": max_length},
            # Listed rather than inferred: inference imports the model in a subprocess (slow here).
            pip_requirements=["mlflow", "torch", "transformers", "pandas"],
        )
    return info.model_uri, run.info.run_id


class Racers:
    """Child processes that start one script at the same instant: each signals ready, then all go."""

    def __init__(self, folder: Path, script: str, argv_per_racer: list[list[str]], env: dict[str, str]):
        folder.mkdir(parents=True, exist_ok=True)
        self.go = folder / "go"
        self.ready = [folder / f"ready-{i}" for i in range(len(argv_per_racer))]
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, str(ready), str(self.go), *argv],
                cwd=ROOT,
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for ready, argv in zip(self.ready, argv_per_racer)
        ]

    def run(self, timeout_s: float = 90) -> list[str]:
        """Release them together once all are ready; their stdout, in order."""
        try:
            deadline = time.monotonic() + timeout_s
            while not all(r.exists() for r in self.ready):
                failed = [p for p in self.procs if p.poll() not in (None, 0)]
                if failed or time.monotonic() > deadline:
                    why = failed[0].stderr.read()[-3000:] if failed else "timeout"
                    raise RuntimeError(f"a racer did not get ready: {why}")
                time.sleep(0.02)
            self.go.touch()
            outputs = []
            for p in self.procs:
                stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
                if p.returncode != 0:
                    raise RuntimeError(f"a racer failed ({p.returncode}):\n{stderr[-3000:]}")
                outputs.append(stdout.strip().splitlines()[-1])
            return outputs
        finally:
            for p in self.procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)


# The racer side of `Racers`: wait for the go file after signalling ready (argv[1], argv[2]).
RACER_PRELUDE = """
import json, sys, time
from pathlib import Path
from ml import registry
from ml.config import load_settings
client = registry.configure(load_settings())
client.search_registered_models(max_results=1)  # connect before the race, not during it
Path(sys.argv[1]).touch()
deadline = time.monotonic() + 60
while not Path(sys.argv[2]).exists():
    if time.monotonic() > deadline:
        sys.exit("no go signal within 60 s")
    time.sleep(0.002)
args = sys.argv[3:]
"""
