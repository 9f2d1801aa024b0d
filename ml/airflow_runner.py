"""Run Airflow as a subprocess with the platform's environment.

`ml` never imports airflow: it sets the environment (AIRFLOW_HOME in the state folder, this
repository's dags/ and plugins/, no examples) and calls the `airflow` command that the install
put next to this Python. `airflow dags test` runs a real DAG run in one process (dag.test()).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ml.config import Settings
from ml.train import progress
from ml.train.progress import PROGRESS_FILE_VAR


class AirflowRunError(RuntimeError):
    """An Airflow command or DAG run failed; the message names the DAG and where its log is."""


def airflow_env(settings: Settings) -> dict[str, str]:
    env = {
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(settings.project_dir / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(settings.project_dir / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # `mlops airflow standalone` serves this machine only; AIRFLOW__API__HOST=0.0.0.0 opens it up.
        "AIRFLOW__API__HOST": "127.0.0.1",
        # Transformers and MLflow must never reach for a model hub from a task.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
    }
    # Production overrides (PostgreSQL metadata DB, Celery) come from the caller's environment.
    return {**env, **{k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__")}}


def airflow_bin() -> str:
    local = Path(sys.executable).parent / "airflow"
    return str(local) if local.exists() else (shutil.which("airflow") or "airflow")


PASSWORDS_FILE_VAR = "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"


def protect_passwords_file(settings: Settings, env: dict[str, str]) -> Path:
    """Create the auth manager's passwords file 0600 before Airflow does.

    Airflow's SimpleAuthManager opens it with open(..., "a+"): created under the umask (0644),
    it would leave the generated admin password readable by every local user. It keeps the
    mode of a file that exists, and reads an empty one as no passwords yet.
    """
    path = Path(
        env.get(PASSWORDS_FILE_VAR) or settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    return path


# A line Airflow's structlog console renderer starts a record with: "2026-12-01T19:03:45.795699Z [warning  ] ...".
_LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z? \[\s*(?:debug|info|warning|error|critical)\s*\]")
# Its end: the logger's name in brackets, then key=value pairs or the end of the line.
_LOG_RECORD_END = re.compile(r"\[[\w.]+\](?: \w+=|\s*$)")


def split_log_records(lines, out, err) -> None:
    """Airflow's CLI logs warnings on stdout; send those records to `err` and the rest to `out`.

    So `mlops airflow dags list -o json | jq` gets the JSON alone. A record may span lines (a
    warning's text has newlines): it goes on until the line that names its logger.
    """
    in_record, record_lines = False, 0
    for line in lines:
        if _LOG_RECORD.match(line):
            in_record, record_lines = True, 0
        if in_record:
            err.write(line)
            record_lines += 1
            if _LOG_RECORD_END.search(line) or record_lines >= 20:
                in_record = False
        else:
            out.write(line)
    out.flush()
    err.flush()


def run_airflow(
    settings: Settings,
    args: list[str],
    *,
    log_path: Path | None = None,
    check: bool = True,
    split_stdout: bool = False,
) -> subprocess.CompletedProcess:
    """`airflow ARGS` with the platform's environment. split_stdout: Airflow's log records go to
    stderr and only the command's own output to stdout (for a pipe, not a terminal)."""
    env = _child_env(settings)
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    protect_passwords_file(settings, env)
    if log_path is None and split_stdout:
        proc = subprocess.Popen(
            [airflow_bin(), *args], env=env, stdout=subprocess.PIPE, text=True, errors="replace"
        )
        try:
            split_log_records(proc.stdout, sys.stdout, sys.stderr)
        finally:
            proc.wait()
        if check and proc.returncode != 0:
            raise AirflowRunError(f"`airflow {' '.join(args)}` exited {proc.returncode}.")
        return subprocess.CompletedProcess(proc.args, proc.returncode)
    if log_path is None:
        return subprocess.run([airflow_bin(), *args], env=env, check=check)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.run([airflow_bin(), *args], env=env, stdout=log, stderr=subprocess.STDOUT)
    if check and proc.returncode != 0:
        raise AirflowRunError(f"`airflow {' '.join(args)}` exited {proc.returncode}; see {log_path}.")
    return proc


def migrate(settings: Settings) -> None:
    """Create or upgrade Airflow's metadata database (idempotent, a few seconds)."""
    run_airflow(settings, ["db", "migrate"], log_path=settings.airflow_home / "logs" / "db_migrate.log")


# Task states that will not change any more (Airflow's finished states).
FINISHED_TASK_STATES = ("success", "failed", "skipped", "upstream_failed", "removed")
STATES_POLL_S = 15.0  # each `airflow tasks states-for-dag-run` costs ~2.5 s of CPU
DISPLAY_TICK_S = 1.0  # how often the progress snapshot is read
PLAIN_LINE_EVERY_S = 20.0  # off a terminal, a progress line at most this often (plus each new score)


class DagAlreadyRunning(AirflowRunError):
    """Another `mlops run` (or its `airflow dags test`) runs this DAG on this state right now."""


def dag_lock(settings: Settings, dag_id: str) -> int:
    """An exclusive lock on the DAG in this state folder, as an open file descriptor.

    flock, not a pid file: the kernel releases it when the last process holding it ends, however
    it ends. The `airflow dags test` child inherits the descriptor, so a run whose `mlops` was
    killed still holds the lock for as long as Airflow works on it.
    """
    path = settings.airflow_home / "locks" / f"{dag_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = path.read_text(errors="replace").strip() or "another process"
        os.close(fd)
        raise DagAlreadyRunning(
            f"DAG {dag_id} is already running on this state ({holder}); wait for it to end, "
            f"or use another MLOPS_STATE_DIR. Lock: {path}"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"mlops pid {os.getpid()} since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC".encode())
    return fd


def fail_orphaned_runs(settings: Settings, dag_id: str, *, logical_date: str | None = None) -> list[dict]:
    """Mark `airflow dags test` runs of the DAG that no live process works on as failed.

    A `mlops run` killed with its Airflow child (kill -9, a closed terminal) leaves its run
    `running` for ever, which blocks a scheduler with max_active_runs=1. Call it only while
    holding dag_lock(): then no other `mlops run` of this DAG is alive on this state.

    What the killed run left is settled too (settle_orphaned_run): the tries that were running
    are booked, their MLflow runs marked FAILED. Each marked run's "settled" lists what was done.
    """
    script = settings.project_dir / "infra" / "airflow_fail_orphaned_runs.py"
    args = [dag_id, *(["--logical-date", logical_date] if logical_date else [])]
    env = {**os.environ, **airflow_env(settings)}
    env.pop(PROGRESS_FILE_VAR, None)
    proc = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AirflowRunError(
            f"could not check DAG {dag_id} for orphaned runs: "
            f"{_first_error(proc.stderr) or proc.stderr.strip()[-300:]}"
        )
    marked = _json_document(proc.stdout) or []
    for orphan in marked:
        orphan["settled"] = settle_orphaned_run(settings, dag_id, orphan)
    return marked


def run_files(settings: Settings, dag_id: str, logical: datetime) -> tuple[Path, Path]:
    """The log and the progress file of the `mlops run` of this DAG at this logical date."""
    stamp = logical.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    run_dir = settings.airflow_home / "logs" / "dags_test" / dag_id
    return run_dir / f"{stamp}.log", run_dir / f"{stamp}.progress.json"


def last_write(settings: Settings, dag_id: str, logical_date: str | None, task_id: str) -> datetime | None:
    """When the killed run last showed life for this task: the last write of its log, or of its
    progress snapshot when the snapshot is the task's. None when neither is there."""
    if not logical_date:
        return None
    log_path, progress_path = run_files(settings, dag_id, datetime.fromisoformat(logical_date))
    found = [log_path] if log_path.is_file() else []
    snap = progress.read(progress_path)
    if snap and str(snap.get("task")) == task_id:
        found.append(progress_path)
    if not found:
        return None
    ns = max(p.stat().st_mtime_ns for p in found)
    return datetime.fromtimestamp(ns // 10**9, timezone.utc) + timedelta(microseconds=ns % 10**9 // 1000)


ORPHANED_REASON = "orphaned: the mlops run that worked on it ended without finishing it"


def settle_orphaned_run(settings: Settings, dag_id: str, orphan: dict) -> list[str]:
    """Book the compute of each try a killed run left running, and mark its MLflow runs FAILED.

    A try ends at its last log (or progress) write, not at the sweep: the process died then. The
    listener's key (one per try) makes booking idempotent: a second sweep, or a try the listener
    did book before the kill, books nothing more. Never raises; returns one line per thing done.
    """
    notes, ends = [], []
    for fact in orphan.get("killed_tries", []):
        try:
            note, ended = _book_killed_try(settings, dag_id, orphan, fact)
        except Exception as exc:  # noqa: BLE001 - a cost never stops the next run; the line says it
            note, ended = f"warning: {fact.get('task_id')} not booked ({_one_line(exc)})", None
        notes.append(note)
        ends += [ended] if ended else []
    try:
        for mlflow_run in fail_mlflow_runs(settings, f"{dag_id}/{orphan['run_id']}", max(ends, default=None)):
            notes.append(f"MLflow run {mlflow_run} marked FAILED")
    except Exception as exc:  # noqa: BLE001 - a tracking server down must not stop the next run
        notes.append(f"warning: MLflow runs of {orphan['run_id']} not marked failed ({_one_line(exc)})")
    return notes


def _book_killed_try(
    settings: Settings, dag_id: str, orphan: dict, fact: dict
) -> tuple[str, datetime | None]:
    from ml.costs import capture

    label = fact["task_id"] if fact.get("map_index", -1) < 0 else f"{fact['task_id']}[{fact['map_index']}]"
    label = f"{label} try {fact['try_number']}"
    started = _utc_or_none(fact.get("start_date"))
    ended, basis = last_write(settings, dag_id, orphan.get("logical_date"), fact["task_id"]), "last log write"
    if started is not None and (ended is None or ended < started):
        ended, basis = _utc_or_none(fact.get("last_heartbeat_at")), "last heartbeat"
    if started is None or ended is None:
        return f"{label}: no log write or heartbeat dates its end; not booked", None
    ended = max(ended, started)
    entry = capture.book_try(
        settings,
        dag_id=dag_id,
        run_id=orphan["run_id"],
        task_id=fact["task_id"],
        try_number=fact["try_number"],
        map_index=fact.get("map_index", -1),
        queue=fact.get("queue"),
        pool=fact.get("pool"),
        declared={k: fact[k] for k in ("resource_class", "cost_category") if fact.get(k)},
        started_at=started,
        ended_at=ended,
    )
    if entry is None:
        return f"{label}: not booked now (spooled, or booked before with other facts; see the log)", ended
    return (
        f"{label} booked up to its {basis} ({ended:%H:%M:%S} UTC): {entry.quantity} h on {entry.resource}, "
        f"{entry.amount} {entry.currency} (ledger entry {entry.id})",
        ended,
    )


def fail_mlflow_runs(settings: Settings, run_key: str, ended_at: datetime | None = None) -> list[str]:
    """Mark the RUNNING MLflow runs of a DAG run (tag airflow_run_key, set by the training task)
    FAILED, ending at ended_at (else now). Returns their ids; a second call finds none."""
    uri = settings.mlflow_tracking_uri
    if "'" in run_key or (uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists()):
        return []  # not a key a task writes; or no tracking database yet, so no run to fail
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    runs = client.search_runs(
        experiments, f"tags.airflow_run_key = '{run_key}' and attributes.status = 'RUNNING'", max_results=1000
    )
    end_ms = int((ended_at or datetime.now(timezone.utc)).timestamp() * 1000)
    for run in runs:
        client.set_tag(run.info.run_id, "mlops.failure", ORPHANED_REASON)
        client.set_terminated(run.info.run_id, status="FAILED", end_time=end_ms)
    return [run.info.run_id for run in runs]


def _utc_or_none(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(timezone.utc) if value else None


def _one_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def task_states(settings: Settings, dag_id: str, run: str) -> dict[str, str]:
    """task_id (task_id[i] when mapped) -> state, from Airflow's own record of the run."""
    proc = subprocess.run(
        [airflow_bin(), "tasks", "states-for-dag-run", dag_id, run, "-o", "json"],
        env=_child_env(settings),
        capture_output=True,
        text=True,
    )
    rows = _json_document(proc.stdout) if proc.returncode == 0 else None
    if rows is None:
        raise AirflowRunError(
            f"`airflow tasks states-for-dag-run {dag_id} {run}` exited {proc.returncode}: "
            f"{_first_error(proc.stderr) or proc.stderr.strip()[-300:]}"
        )
    return {
        (f"{r['task_id']}[{r['map_index']}]" if r.get("map_index") not in (None, "") else r["task_id"]): (
            r.get("state") or "none"
        )
        for r in rows
    }


def _json_document(text: str):
    """The JSON list a CLI printed, even when a warning came before it on the same stream."""
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    for start in starts:
        if text.startswith("[", start):
            try:
                return json.JSONDecoder().raw_decode(text[start:])[0]
            except ValueError:
                continue
    return None


def with_venv_path(env: dict[str, str]) -> dict[str, str]:
    """env with this venv's bin first on PATH: Airflow starts its parts (standalone's api-server,
    scheduler...) and tasks their tools as bare commands, which must be this venv's."""
    return {**env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])}


def _child_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    return with_venv_path({**os.environ, **airflow_env(settings), **(extra or {})})


def test_dag(settings: Settings, dag_id: str, *, echo=print, show_progress: bool = True) -> dict:
    """One real DAG run through `airflow dags test`; raises unless the run ends in success.

    Each run has its own log (dags_test/<dag_id>/<stamp>.log; dags_test/<dag_id>.log links to the
    latest) and its own progress file; states come from Airflow (`tasks states-for-dag-run`),
    looked up by the run's logical date, never from the log text.
    """
    lock_fd = dag_lock(settings, dag_id)
    # Names the run while it goes on; left behind only when mlops died before the run ended.
    unfinished_marker = settings.airflow_home / "locks" / f"{dag_id}.unfinished"
    try:
        if unfinished_marker.exists():
            left = unfinished_marker.read_text().strip()
            try:
                for orphan in fail_orphaned_runs(settings, dag_id, logical_date=left):
                    echo(
                        f"  marked {dag_id} run {orphan['run_id']} failed: an mlops run ended without finishing it "
                        f"(tasks that were running marked failed: {', '.join(orphan['failed_tasks']) or 'none'})"
                    )
                    for note in orphan.get("settled", []):
                        echo(f"    {note}")
                unfinished_marker.unlink()
            except AirflowRunError as exc:  # not worth refusing this run for: the next one tries again
                echo(f"  warning: {exc}")
        logical = datetime.now(timezone.utc)
        log_path, progress_path = run_files(settings, dag_id, logical)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        latest = log_path.parent.parent / f"{dag_id}.log"
        tmp_link = latest.with_name(f".{latest.name}.{os.getpid()}")
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(log_path.relative_to(latest.parent))
        os.replace(tmp_link, latest)
        echo(f"→ airflow dags test {dag_id}  (log: {log_path})")
        sys.stdout.flush()
        when = logical.isoformat()
        env = _child_env(settings, {PROGRESS_FILE_VAR: str(progress_path)})
        unfinished_marker.write_text(when)  # before the run exists: a kill at any later instant is caught
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [airflow_bin(), "dags", "test", dag_id, when],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(lock_fd,),
            )
        watcher = _RunWatcher(settings, dag_id, when, progress_path, echo, show_progress)
        try:
            watcher.follow(proc)
        except KeyboardInterrupt:
            _stop(proc)
            try:
                failed = fail_orphaned_runs(settings, dag_id, logical_date=when)
                unfinished_marker.unlink(missing_ok=True)
            except AirflowRunError as exc:  # the marker stays: the next run of the DAG tries again
                failed = []
                echo(f"  warning: {exc}")
            what = (
                f"its Airflow run {failed[0]['run_id']} marked failed (was running: "
                f"{', '.join(failed[0]['failed_tasks']) or 'none'})"
                if failed
                else "no Airflow run left running"
            )
            echo(f"interrupted: {dag_id}, {what}; log: {log_path}")
            for note in failed[0].get("settled", []) if failed else []:
                echo(f"  {note}")
            raise
        finally:
            watcher.close()
        try:
            tasks = task_states(settings, dag_id, when)
        except AirflowRunError:
            if proc.returncode == 0:
                raise
            tasks = {}  # the run was never created (an import error, an unknown DAG): the log says why
        unfinished_marker.unlink(missing_ok=True)
    finally:
        os.close(lock_fd)
    unfinished = [t for t, s in tasks.items() if s not in FINISHED_TASK_STATES]
    bad = [t for t, s in tasks.items() if s in ("failed", "upstream_failed")]
    state = "success" if proc.returncode == 0 and tasks and not bad and not unfinished else "failed"
    if state != "success":
        failed = [t for t, s in tasks.items() if s == "failed"]
        reason = _first_error(log_path.read_text(errors="replace"))
        raise AirflowRunError(
            f"DAG {dag_id} ended {state} (exit {proc.returncode}); failed tasks: {failed or '?'}"
            f"{'; ' + reason if reason else ''}. Full log: {log_path}"
        )
    return {"dag_id": dag_id, "state": state, "logical_date": when, "tasks": tasks, "log": str(log_path)}


def _stop(proc: subprocess.Popen) -> None:
    """After Ctrl-C: the child got SIGINT too (same process group); give it time, then insist."""
    for sig, wait_s in ((None, 10), (signal.SIGTERM, 20), (signal.SIGKILL, 30)):
        if sig is not None and proc.poll() is None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting politely
            continue


class _RunWatcher:
    """Shows what a DAG run is doing: each running task (from Airflow) and the training snapshot.

    On a terminal one line is redrawn (a bar); otherwise plain lines, when something changes.
    Task states are polled in a thread, since each poll is an Airflow CLI call of a few seconds.
    """

    def __init__(self, settings, dag_id, when, progress_path, echo, enabled):
        self.settings, self.dag_id, self.when, self.progress_path = settings, dag_id, when, progress_path
        self.echo, self.enabled = echo, enabled
        stream = getattr(sys.stdout, "isatty", None)
        self.tty = bool(enabled and echo is print and stream and stream())
        self.running: list[str] = []
        self.finished: set[str] = set()
        self.polled_at = 0.0  # time.time() of the last look at Airflow's states
        self._shown_running: list[str] | None = None
        self._last_plain = (None, 0.0, None)  # (step, monotonic time, val score)
        self._drawn = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_states, daemon=True)

    def follow(self, proc: subprocess.Popen) -> None:
        if self.enabled:
            self._thread.start()
        while True:
            try:
                proc.wait(timeout=DISPLAY_TICK_S)
                return
            except subprocess.TimeoutExpired:
                if self.enabled:
                    self._show(progress.read(self.progress_path))

    def close(self) -> None:
        self._stop.set()
        if self._drawn:
            sys.stdout.write("\r\x1b[K")
            sys.stdout.flush()

    def _poll_states(self) -> None:
        while not self._stop.wait(self._poll_every_s()):
            try:
                states = task_states(self.settings, self.dag_id, self.when)
            except AirflowRunError:
                continue  # the run may not exist yet; the final look decides
            self.polled_at = time.time()
            self.running = sorted(t for t, s in states.items() if s == "running")
            self.finished = {t for t, s in states.items() if s in FINISHED_TASK_STATES}

    def _poll_every_s(self) -> float:
        # While training reports progress, the snapshot names the running task: look at
        # Airflow less often, so the look does not take CPU from the training it watches.
        snap = progress.read(self.progress_path)
        fresh = snap and time.time() - float(snap.get("updated_at") or 0) < 60
        return STATES_POLL_S * (4 if fresh else 1)

    def _show(self, snap: dict | None) -> None:
        running = list(self.running)
        task = str(snap.get("task")) if snap and snap.get("task") else None
        if task and task in self.finished:
            snap, task = None, None  # the last snapshot of a task Airflow has seen end
        if task and task not in running and float(snap.get("updated_at") or 0) > self.polled_at:
            running = [task]  # newer than Airflow's last look (which may show the task before it)
        if task and task not in running:
            snap = None
        line = progress_line(snap)
        if self.tty:
            text = f"  {', '.join(running) or 'starting'}  {line}".rstrip()
            sys.stdout.write("\r\x1b[K" + text[: shutil.get_terminal_size((100, 20)).columns - 1])
            sys.stdout.flush()
            self._drawn = True
            return
        if running != self._shown_running and running:
            self.echo(f"  running: {', '.join(running)}")
            sys.stdout.flush()  # a log file or pipe sees it now, not when the buffer fills
            self._shown_running = running
        if snap and line:
            step, at, score = self._last_plain
            val = _val_score(snap)
            now = time.monotonic()
            if snap.get("step") != step and (now - at >= PLAIN_LINE_EVERY_S or val != score or step is None):
                self.echo(f"  {snap.get('task', 'training')}: {line}")
                sys.stdout.flush()
                self._last_plain = (snap.get("step"), now, val)


def _val_score(snap: dict) -> tuple[str, object] | None:
    found = [(k, v) for k, v in snap.items() if k.startswith("val_") and v is not None]
    return found[0] if found else None


def progress_line(snap: dict | None, bar_chars: int = 20) -> str:
    """`[#####.....] step 40/760  51.2 samples/s  val_macro_f1 0.810  ETA 6m50s` from a snapshot."""
    if not snap or snap.get("step") is None:
        return ""
    step, total = snap.get("step"), snap.get("total_steps")
    parts = []
    if isinstance(total, (int, float)) and total > 0:
        done = max(0, min(bar_chars, int(bar_chars * step / total)))
        parts.append(f"[{'#' * done}{'.' * (bar_chars - done)}] step {step}/{total}")
    else:
        parts.append(f"step {step}")
    if isinstance(snap.get("epoch"), (int, float)):
        parts.append(f"epoch {snap['epoch']:.2f}".rstrip("0").rstrip("."))
    if isinstance(snap.get("samples_per_s"), (int, float)):
        parts.append(f"{snap['samples_per_s']:.1f} samples/s")
    val = _val_score(snap)
    if val:
        parts.append(f"{val[0]} {val[1]:.3f}" if isinstance(val[1], (int, float)) else f"{val[0]} {val[1]}")
    if isinstance(snap.get("eta_s"), (int, float)):
        eta = int(snap["eta_s"])
        parts.append(f"ETA {eta // 60}m{eta % 60:02d}s")
    return "  ".join(parts)


def _first_error(text: str) -> str:
    # The exception line of the last traceback names the problem and the fix.
    found = re.findall(r"^(?:[\w.]*(?:Exception|Error|Rejected)): .+$", text, flags=re.MULTILINE)
    return found[-1][:400] if found else ""
