"""A real Airflow 3 deployment as subprocesses: api-server, scheduler, dag-processor, triggerer
and, with the CeleryExecutor, a Celery worker on the `default` and `gpu` queues.

`airflow dags test` (ml/airflow_runner.py) runs a DAG in one process; this runs it the way
production does: the scheduler queues task instances, an executor runs them, the task processes
talk to the api-server's execution API, and Asset events schedule the downstream DAGs.

    with AirflowStack(settings) as stack:                  # LocalExecutor on the embedded SQLite
        stack.unpause("distill__ticket_routing")
        run_id = stack.trigger("ingest_validate__ticket_routing")
        stack.wait_for_run("ingest_validate__ticket_routing", run_id)
        distill_run = stack.next_run("distill__ticket_routing", run_type="asset_triggered")

Secrets are made per stack (JWT secret, API secret key, the admin's password) and live only in
the components' environment and a 0600 file under the state folder. `ml` never imports airflow:
everything goes through the `airflow` command and the public REST API. Each component logs to
STATE_DIR/airflow-stack/<component>.log, and stop() ends every process group it started.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from ml.airflow_runner import AirflowRunError, _first_error, airflow_bin, airflow_env, with_venv_path
from ml.config import Settings, settings_env

EXECUTORS = ("LocalExecutor", "CeleryExecutor")
FINAL_RUN_STATES = ("success", "failed")
ADMIN = "admin"

# Faster than Airflow's defaults for one machine; a caller's extra_env wins over these.
QUICK_LOCAL_CONFIG = {
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",  # new DAG files are seen within 15 s
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "1200",  # a busy 2-core machine is slow to pick up
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # nothing runs until unpause()
}


class AirflowStackError(AirflowRunError):
    """A component did not start or died, or a DAG run failed; the message says where to look."""


def async_postgres_driver() -> bool:
    """Whether asyncpg, the driver Airflow 3 derives its async metadata connection from, is importable."""
    return importlib.util.find_spec("asyncpg") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AirflowStack:
    """Start with `with AirflowStack(...) as stack:`; every process is stopped on exit, also on errors.

    database_url: SQLAlchemy URL of Airflow's metadata DB (default: the SQLite in AIRFLOW_HOME, or
    AIRFLOW__DATABASE__SQL_ALCHEMY_CONN from the environment). broker_url: the Celery broker
    (required with the CeleryExecutor). extra_env: more variables for every component, last word.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        executor: str = "LocalExecutor",
        database_url: str | None = None,
        broker_url: str | None = None,
        worker_queues: tuple[str, ...] = ("default", "gpu"),
        worker_concurrency: int = 2,
        extra_env: dict[str, str] | None = None,
        start_timeout_s: float = 300,
    ):
        if executor not in EXECUTORS:
            raise ValueError(f"executor={executor!r} is not one of {', '.join(EXECUTORS)}.")
        if executor == "CeleryExecutor" and not broker_url:
            raise ValueError("The CeleryExecutor needs a broker: pass broker_url='redis://127.0.0.1:6379/0'.")
        if database_url and database_url.startswith("postgresql") and not async_postgres_driver():
            raise ValueError(
                "Airflow 3 on PostgreSQL also opens an async connection, through the asyncpg "
                "driver, which is not installed: pip install asyncpg (apache-airflow[postgres])."
            )
        self.settings = settings
        self.executor = executor
        self.start_timeout_s = start_timeout_s
        self.log_dir = settings.state_dir / "airflow-stack"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._password = secrets.token_urlsafe(24)
        self._token: str | None = None
        self._procs: dict[str, subprocess.Popen] = {}
        self.broker_url = broker_url
        self.broker_prefix = f"mlops-{self.port}-"
        self.env = self._environment(database_url, broker_url, extra_env or {})
        self.commands = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port)],
            "scheduler": ["scheduler"],
            "dag-processor": ["dag-processor"],
            "triggerer": ["triggerer"],
        }
        if executor == "CeleryExecutor":
            self.commands["celery-worker"] = [
                "celery",
                "worker",
                "--queues",
                ",".join(worker_queues),
                "--concurrency",
                str(worker_concurrency),
                "--celery-hostname",
                f"mlops-{self.port}@%h",
            ]

    def _environment(self, database_url, broker_url, extra_env) -> dict[str, str]:
        passwords_file = self.log_dir / "simple_auth_manager_passwords.json"
        env = {
            **os.environ,
            **settings_env(self.settings),  # tasks load exactly these settings
            **airflow_env(self.settings),
            **QUICK_LOCAL_CONFIG,
            "AIRFLOW__CORE__EXECUTOR": self.executor,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            # Generated per stack: task processes authenticate to the execution API with JWTs
            # signed by this secret, and the REST API with a token for this admin password.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),  # HS512 wants >= 64 bytes
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
            # Log servers on free ports: two stacks (or a stack and `airflow standalone`) can coexist.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        if database_url:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = database_url
        if broker_url:
            # Celery's result backend defaults to the metadata database (db+<sql_alchemy_conn>).
            env["AIRFLOW__CELERY__BROKER_URL"] = broker_url
            # Keys of this stack only: another Celery worker on the same Redis never takes its tasks.
            env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"] = self.broker_prefix
        return with_venv_path({**env, **extra_env})

    # Lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> AirflowStack:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self.settings.ensure_dirs()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._write_passwords_file()
        try:
            self._migrate()
            for name, args in self.commands.items():
                log = open(self.log_path(name), "ab")
                # Its own session, so stop() ends the component with every child it forked.
                self._procs[name] = subprocess.Popen(
                    [airflow_bin(), *args],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                log.close()
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM every component's process group, SIGKILL what is left after timeout_s."""
        for proc in self._procs.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self._procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self._procs.values():
            _signal_group(proc, signal.SIGKILL)  # the leader may be gone while its children linger
            proc.wait()
        self._procs.clear()
        self._forget_broker_keys()

    def _forget_broker_keys(self) -> None:
        """Kombu leaves its queue bindings in Redis; a stack that is gone leaves nothing behind."""
        if not (self.broker_url or "").startswith(("redis://", "rediss://")):
            return
        import redis

        try:
            client = redis.Redis.from_url(self.broker_url, socket_connect_timeout=3)
            keys = list(client.scan_iter(match=f"{self.broker_prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()
        except redis.RedisError:
            pass  # the broker is down: nothing of ours can be cleaned, and nothing else to do

    def log_path(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    def _write_passwords_file(self) -> None:
        path = Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({ADMIN: self._password}, f)

    def _migrate(self) -> None:
        log_path = self.log_path("db-migrate")
        with open(log_path, "wb") as log:
            proc = subprocess.run(
                [airflow_bin(), "db", "migrate"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        if proc.returncode != 0:
            raise AirflowStackError(
                f"`airflow db migrate` exited {proc.returncode}: "
                f"{_first_error(log_path.read_text(errors='replace')) or '?'}; see {log_path}."
            )

    def _wait_healthy(self) -> None:
        components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        deadline = time.monotonic() + self.start_timeout_s
        health: dict = {}
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
                if all((health.get(c) or {}).get("status") == "healthy" for c in components):
                    self._login()
                    if self.executor == "CeleryExecutor":
                        self._wait_worker_ready(deadline)
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(1)
        raise AirflowStackError(
            f"Airflow did not become healthy within {self.start_timeout_s:.0f} s "
            f"(health: {health or 'api-server not answering'}); logs in {self.log_dir}."
        )

    def _wait_worker_ready(self, deadline: float) -> None:
        log = self.log_path("celery-worker")
        while time.monotonic() < deadline:
            self._check_alive()
            if b" ready." in log.read_bytes():  # Celery's "celery@host ready." once it consumes
                return
            time.sleep(1)
        raise AirflowStackError(f"the Celery worker did not become ready; see {log}.")

    def _check_alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                log = self.log_path(name)
                reason = _crash_reason(log.read_text(errors="replace")) if log.exists() else ""
                raise AirflowStackError(
                    f"Airflow {name} exited with {proc.returncode}"
                    f"{': ' + reason if reason else ''}; see {log}."
                )

    # REST API -----------------------------------------------------------------------------

    def _login(self) -> None:
        response = httpx.post(
            f"{self.url}/auth/token", json={"username": ADMIN, "password": self._password}, timeout=30
        )
        response.raise_for_status()
        self._token = response.json()["access_token"]

    def api(self, method: str, path: str, **kwargs) -> dict:
        """One call to Airflow's public REST API (/api/v2 + path) as the stack's admin."""
        response = httpx.request(
            method,
            f"{self.url}/api/v2{path}",
            timeout=60,
            headers={"Authorization": f"Bearer {self._token}"},
            **kwargs,
        )
        if response.status_code >= 400:
            raise AirflowStackError(
                f"{method} /api/v2{path} answered {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else {}

    def wait_for_dag(self, dag_id: str, timeout_s: float = 180) -> dict:
        """The DAG as the dag-processor serialised it; raises with the import errors if it never appears."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            response = httpx.get(
                f"{self.url}/api/v2/dags/{dag_id}",
                timeout=30,
                headers={"Authorization": f"Bearer {self._token}"},
            )
            if response.status_code == 200:
                return response.json()
            if time.monotonic() > deadline:
                errors = self.api("GET", "/importErrors").get("import_errors", [])
                detail = "; ".join(
                    f"{e['filename']}: {e['stack_trace'].strip().splitlines()[-1]}" for e in errors
                )
                raise AirflowStackError(
                    f"DAG {dag_id} was not parsed within {timeout_s:.0f} s "
                    f"(import errors: {detail or 'none'}); see {self.log_path('dag-processor')}."
                )
            time.sleep(2)

    def unpause(self, dag_id: str) -> None:
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """A manual DAG run (the DAG is unpaused first, or it would never start); its run_id."""
        self.unpause(dag_id)
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        """The DAG's latest 100 runs, oldest first (run_type tells manual from asset_triggered ones)."""
        latest = self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-id", "limit": 100})[
            "dag_runs"
        ]
        return latest[::-1]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})[
            "task_instances"
        ]

    def next_run(
        self,
        dag_id: str,
        *,
        run_type: str | None = None,
        known: frozenset[str] = frozenset(),
        timeout_s: float = 300,
    ) -> str:
        """Wait until a run not in `known` (and of `run_type`, e.g. asset_triggered) exists; its run_id."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            new = [
                r
                for r in self.runs(dag_id)
                if r["dag_run_id"] not in known and run_type in (None, r["run_type"])
            ]
            if new:
                return new[0]["dag_run_id"]
            if time.monotonic() > deadline:
                raise AirflowStackError(
                    f"no new {run_type or ''} run of DAG {dag_id} within {timeout_s:.0f} s; "
                    f"see {self.log_path('scheduler')}."
                )
            time.sleep(2)

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float = 600) -> dict:
        """Block until the run is final; its state and task states, or an error naming the failed task."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive()
            state = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in FINAL_RUN_STATES or time.monotonic() > deadline:
                break
            time.sleep(2)
        tis = self.task_instances(dag_id, run_id)
        tasks = {_ti_name(ti): ti["state"] for ti in tis}
        if state == "success":
            return {"dag_id": dag_id, "run_id": run_id, "state": state, "tasks": tasks}
        failed = [ti for ti in tis if ti["state"] in ("failed", "upstream_failed")]
        first = next((ti for ti in failed if ti["state"] == "failed"), None)
        where = ""
        if first is not None:
            log = self.task_log_path(first)
            reason = _task_error(log.read_text(errors="replace")) if log.exists() else ""
            where = f"; task {_ti_name(first)} failed{': ' + reason if reason else ''}; log: {log}"
        verdict = f"ended {state}" if state in FINAL_RUN_STATES else f"still {state} after {timeout_s:.0f} s"
        raise AirflowStackError(
            f"DAG {dag_id} run {run_id} {verdict}{where}; task states: {tasks}; "
            f"component logs in {self.log_dir}."
        )

    def task_log_path(self, ti: dict) -> Path:
        """Where the worker wrote the try's log (Airflow's default log_filename_template)."""
        mapped = f"map_index={ti['map_index']}/" if ti["map_index"] >= 0 else ""
        return (
            self.settings.airflow_home
            / "logs"
            / f"dag_id={ti['dag_id']}"
            / f"run_id={ti['dag_run_id']}"
            / f"task_id={ti['task_id']}"
            / f"{mapped}attempt={max(ti['try_number'], 1)}.log"
        )


def _crash_reason(log_text: str) -> str:
    """The root cause and the last error of a component's log (a chained traceback names both)."""
    found = re.findall(
        r"^(?:[\w.]*(?:Exception|Error)): .+$", "\n".join(log_text.splitlines()[-300:]), flags=re.MULTILINE
    )
    if not found:
        return ""
    return found[0][:300] if found[0] == found[-1] else f"{found[0][:300]} (then {found[-1][:200]})"


def _task_error(log_text: str) -> str:
    """The exception a task log (JSON lines) ends with, as `Type: message`."""
    for line in reversed(log_text.splitlines()):
        if '"error_detail"' in line:
            try:
                detail = json.loads(line)["error_detail"][-1]
                return f"{detail['exc_type']}: {detail['exc_value']}"[:400]
            except (ValueError, KeyError, IndexError, TypeError):
                break
    return _first_error(log_text)


def _ti_name(ti: dict) -> str:
    return ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # pid == pgid: each component leads its own session
    except (ProcessLookupError, PermissionError):
        pass
