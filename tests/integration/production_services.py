"""The production path's services on this machine: PostgreSQL and Redis at 127.0.0.1 (CI starts
them, see .ci/run), a fresh database per use, and an `mlflow server` on PostgreSQL that proxies
its artifacts. A test that needs a service that is down is skipped with the reason and the fix.

TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test, trust auth as in CI) and
TEST_REDIS_URL (default redis://127.0.0.1:6379/0) point elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from mlflow_server import _stop, free_port

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MLFLOW_START_WAIT_S = 120.0  # a fresh PostgreSQL database is migrated first


def require_redis(url: str = REDIS_URL) -> str:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.skip(
            f"Redis is not reachable at {url} ({exc}); start it (`redis-server --port 6379`, "
            "as .ci/run does) or set TEST_REDIS_URL."
        )
    return url


@contextmanager
def postgres_databases(*prefixes: str, admin_url: str = POSTGRES_URL):
    """One new database per prefix (<prefix>_<random>); yields their URLs; dropped afterwards."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    try:
        admin = psycopg2.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            dbname=url.database,
            connect_timeout=3,
        )
    except psycopg2.OperationalError as exc:
        pytest.skip(
            f"PostgreSQL is not reachable at {url.render_as_string(hide_password=True)} "
            f"({str(exc).strip().splitlines()[0]}); start it (.ci/run does) or set TEST_POSTGRES_URL."
        )
    admin.autocommit = True
    names = [f"{prefix}_{uuid.uuid4().hex[:12]}" for prefix in prefixes]
    try:
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f'CREATE DATABASE "{name}"')
        yield [url.set(database=name).render_as_string(hide_password=False) for name in names]
    finally:
        with admin.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def mlflow_server_on_postgres(backend_url: str, folder: Path):
    """`mlflow server` with its tracking store and registry on PostgreSQL and proxied artifacts
    (clients upload through the server to folder/artifacts, they never see the store); yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = folder / "mlflow-server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                backend_url,
                "--artifacts-destination",
                str(folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + MLFLOW_START_WAIT_S
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
                    f"mlflow server did not answer on {url} within {MLFLOW_START_WAIT_S:.0f} s:\n"
                    f"{log_path.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        _stop(proc)
