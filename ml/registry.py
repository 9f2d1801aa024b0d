"""The MLflow model registry: versions, aliases, alias history, rollback.

Aliases, not the deprecated stages: `@challenger` is the newest candidate, `@champion` is what
serves. Every alias move is appended to the registered model's history (tags named
`alias_history.<seq>`, one readable line each: `AT @ALIAS vFROM → vTO (KIND) by WHO: WHY`), so
the registry alone answers "who moved champion, when, and why". A version's description says
the same for the version, in Markdown: the gate's decision with every check's figure and
threshold, the approval, and when it became @champion (`describe_gate`, `set_description_section`).

Alias moves are compare-and-set. MLflow has no conditional update of an alias, but creating a
registered model is atomic (its name is unique in the registry database, also behind
`mlflow server`), so moves of one model are serialised by a lock that *is* a registered model,
`<name>.alias-lock`, created with its holder's token and deleted when the move is done. Under
it, the compare (read @alias), the set and the history append happen one mover at a time: of
two promoters that saw the same champion, one moves it and the other gets PromotionConflict.
What this does not cover: an alias moved outside `move_alias` (MLflow UI, a raw client), which
the next move detects as a conflict; and locks older than LOCK_STALE_AFTER_S, which count as
left by a dead process and are broken: a holder refuses to write after half that age, and two
movers breaking the same dead lock at once could, within one request's time, both proceed.

Rollback walks that history as a stack of champions: a promotion pushes, a rollback pops. So a
second rollback goes one champion further back, never back to the version the first one left.

Approval lives on the version too, so the registry stays the one place to look: the model
owner's decision (tag `approval`: approved or rejected, who, when, why) and, while a DAG run
waits for it, that wait (tag `approval_wait`: which run, since when, until when). Who moves
@champion after an approval: the waiting DAG run's `promote` task when a run waits for the
version; `mlops models approve` only when none does (the wait timed out, or a failed gate is
overridden). Each side writes its own record first and reads the other's second (the CLI its
decision, then the wait; the DAG its end of the wait, then the decision), so at least one of
them sees the other and an approval is never stranded. Should both see each other, both move
@champion to the same version from the same champion: the lock lets one move it, and the
other's move finds it done (`move_alias` treats a move to where the alias already points as
done, without a second history entry).
"""

from __future__ import annotations

import getpass
import json
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from ml.config import is_url

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_PREFIX = "alias_history."
APPROVAL_TAG = "approval"  # the model owner's decision on a version
WAIT_TAG = "approval_wait"  # a DAG run waiting for that decision
DECISIONS = ("approved", "rejected")
# A waiting run looks at the registry at least this often (the DAG's sensor caps its backoff at
# it); a wait whose deadline is older than this and still open was left by a run that stopped.
WAIT_POLL_MAX_S = 300.0
LOCK_SUFFIX = ".alias-lock"
# A move holds the lock for a handful of registry requests (well under a second). A lock older
# than this was left by a process that died mid-move; the next mover breaks it. Waiters wait
# longer than that, so a dead holder delays a promotion but never fails it.
LOCK_STALE_AFTER_S = 60.0
LOCK_WAIT_S = 75.0
# MLflow's codes for "no such model" and "no such alias on it".
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class RegistryError(RuntimeError):
    """A registry action cannot be done; the message says why and what to do."""


class PromotionConflict(RegistryError):
    """@champion moved since the gate looked at it: re-run the gate against the new champion."""


def configure(settings) -> MlflowClient:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    return MlflowClient()


def ensure_experiment(settings, workflow: str) -> str:
    """One experiment per workflow, its artifacts under the configured artifact root."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(workflow)
    if exp is not None:
        return exp.experiment_id
    root = settings.mlflow_artifact_root
    # A URL root (s3://, mlflow-artifacts:/ of a proxying server) is used as is; a local folder
    # becomes an absolute file:// URI.
    location = (
        f"{root.rstrip('/')}/{workflow}" if is_url(root) else (Path(root) / workflow).resolve().as_uri()
    )
    try:
        return client.create_experiment(workflow, artifact_location=location, tags={"workflow": workflow})
    except MlflowException:  # created concurrently
        return client.get_experiment_by_name(workflow).experiment_id


def version_by_alias(client: MlflowClient, name: str, alias: str):
    """The version `alias` points at, or None when the model or the alias does not exist.

    Any other failure (registry unreachable, permission denied) raises: reading it as "no
    champion" would gate a challenger against nothing.
    """
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise


def _logged_model_id(model_uri: str) -> str | None:
    """`m-…` of a logged-model URI (`models:/m-…`). `mlflow server` refuses such a source unless
    the request names the logged model too; a local SQLite store does not check."""
    rest = model_uri.removeprefix("models:/")
    return rest if rest != model_uri and rest.startswith("m-") and not any(c in rest for c in "/@") else None


def register(
    client: MlflowClient,
    name: str,
    model_uri: str,
    run_id: str,
    *,
    idempotency_key: str,
    tags: dict[str, str],
    description: str | None = None,
) -> str:
    """Create a model version once per idempotency key (an Airflow retry or re-run returns the same one).

    Two concurrent registrations may both create a version; afterwards both look again and the
    lowest version holding the key wins, the other deletes its own (never aliased) version.
    """
    query = f"name='{name}' and tags.idempotency_key='{idempotency_key}'"
    existing = client.search_model_versions(query)
    if existing:
        first = min(existing, key=lambda v: int(v.version))
        link_logged_model(
            client, _version_model_id(first), name, str(first.version)
        )  # a crash may have left it out
        return str(first.version)
    try:
        client.create_registered_model(name, tags={"workflow": tags.get("workflow", "")})
    except MlflowException:
        pass  # exists already
    mv = client.create_model_version(
        name,
        model_uri,
        run_id=run_id,
        model_id=_logged_model_id(model_uri),
        tags={**tags, "idempotency_key": idempotency_key},
        description=description,
    )
    winners = sorted(client.search_model_versions(query), key=lambda v: int(v.version))
    if winners and str(winners[0].version) != str(mv.version):
        client.delete_model_version(name, str(mv.version))
        link_logged_model(client, _version_model_id(winners[0]), name, str(winners[0].version))
        return str(winners[0].version)
    link_logged_model(client, _logged_model_id(model_uri), name, str(mv.version))
    return str(mv.version)


def _version_model_id(mv) -> str | None:
    # The SQLite store does not keep a version's model_id; its source (`models:/m-…`) names it.
    return mv.model_id or _logged_model_id(mv.source or "")


def link_logged_model(client: MlflowClient, model_id: str | None, name: str, version: str) -> None:
    """The LoggedModel's side of the version link, as `mlflow.register_model` writes it.

    `create_model_version(model_id=...)` links the version to the model only; the MLflow UI lists
    a logged model's versions from its `mlflow.modelVersions` tag, so without this it shows the
    champion as "Not registered". Idempotent, and a version deleted since is dropped from it.
    """
    if not model_id:
        return
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    linked = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS) or "[]")
    mine = [v for v in client.search_model_versions(f"name='{name}'") if _version_model_id(v) == model_id]
    keep = [e for e in linked if e.get("name") != name] + [
        {"name": name, "version": str(v.version)} for v in sorted(mine, key=lambda v: int(v.version))
    ]
    if {"name": name, "version": str(version)} not in keep:  # the store's search lags its create
        keep.append({"name": name, "version": str(version)})
    if keep != linked:
        client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(keep)})


_HISTORY_LINE = re.compile(
    r"^(?P<at>\S+) @(?P<alias>\S+) (?:v(?P<from>\S+)|none) → v(?P<to>\S+) "
    r"\((?P<kind>[^)]*)\) by (?P<who>[^:]*): (?P<why>.*)$"
)


def _history_line(entry: dict) -> str:
    start = f"v{entry['from']}" if entry["from"] is not None else "none"
    return (
        f"{entry['at']} @{entry['alias']} {start} → v{entry['to']} ({entry['kind']}) by {entry['who']}: "
        f"{entry['why']}"
    )


def _history_entry(key: str, value: str) -> dict:
    if value.startswith("{"):  # written before the one-line format
        return json.loads(value)
    m = _HISTORY_LINE.match(value)
    if m is None:
        raise RegistryError(f"registry tag {key} is not an alias history line: {value[:120]!r}")
    return {"seq": int(key[len(HISTORY_PREFIX) :]), **m.groupdict()}


def _history(client: MlflowClient, name: str) -> list[dict]:
    tags = client.get_registered_model(name).tags
    entries = [_history_entry(k, v) for k, v in tags.items() if k.startswith(HISTORY_PREFIX)]
    return sorted(entries, key=lambda e: e["seq"])


def alias_history(client: MlflowClient, name: str) -> list[dict]:
    try:
        return _history(client, name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise RegistryError(
            f"no registered model {name!r}; train a first version (mlops run) first."
        ) from None


def _lock_holder(client: MlflowClient, lock: str):
    """The lock's registered model, or None when nobody holds it."""
    try:
        return client.get_registered_model(lock)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            return None
        raise


@contextmanager
def _alias_lock(client: MlflowClient, name: str, who: str) -> Iterator[float]:
    """Hold `<name>.alias-lock`; yields the monotonic time it was taken (see the module docstring)."""
    lock, token = name + LOCK_SUFFIX, uuid.uuid4().hex
    tags = {"lock.token": token, "lock.who": who, "lock.host": f"{socket.gethostname()}:{os.getpid()}"}
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            client.create_registered_model(
                lock,
                tags=tags,
                description=(
                    f"Held while an alias of {name} moves (ml.registry.move_alias); deleted when the move ends."
                ),
            )
            break
        except MlflowException as exc:
            held = _lock_holder(client, lock)
            if held is not None and held.tags.get("lock.token") == token:
                break  # our create went through; the client retried it after a lost response
            # The store answers a create that collided with a lock released at that moment with
            # RESOURCE_DOES_NOT_EXIST (it looks the existing one up after the insert failed).
            if held is None and exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        # The registry stamps creation with its own clock; clocks are assumed NTP-close.
        age_s = time.time() - held.creation_timestamp / 1000 if held is not None else 0.0
        if age_s > LOCK_STALE_AFTER_S:
            # Its holder died mid-move. Delete that very lock, not one another mover took after
            # breaking it too (a window of one request remains; see the module docstring).
            try:
                again = _lock_holder(client, lock)
                if again is not None and again.tags.get("lock.token") == held.tags.get("lock.token"):
                    client.delete_registered_model(lock)
            except MlflowException:
                pass  # another mover broke it first
            continue
        if time.monotonic() > deadline:
            holder = (
                f"{held.tags.get('lock.who')} on {held.tags.get('lock.host')}, {age_s:.0f} s ago"
                if held
                else "?"
            )
            raise RegistryError(
                f"{name}: another alias move holds {lock!r} ({holder}); retry in a minute. A lock left by a "
                f"crashed process is broken automatically after {LOCK_STALE_AFTER_S:.0f} s."
            )
        time.sleep(random.uniform(0.02, 0.1))  # jitter: waiters do not retry in lockstep
    taken = time.monotonic()
    try:
        yield taken
    finally:
        # Past the stale age another mover may have broken our lock and taken its own: leave it.
        if time.monotonic() - taken < LOCK_STALE_AFTER_S:
            try:
                held = _lock_holder(client, lock)
                if held is not None and held.tags.get("lock.token") == token:
                    client.delete_registered_model(lock)
            except MlflowException:
                pass  # left behind, it goes stale and the next mover breaks it


def _who(who: str | None) -> str:
    return who or os.environ.get("MLOPS_USER") or getpass.getuser()  # the `user` setting


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def move_alias(
    client: MlflowClient,
    name: str,
    alias: str,
    to_version: str,
    *,
    expected_from: str | None,
    why: str,
    who: str | None = None,
    kind: str = "move",
) -> dict:
    """Compare-and-set: move `alias` only if it still points at `expected_from`; record the move.

    `kind` goes into the history entry: "promote", "rollback", "challenger" or a plain "move".
    A move to where the alias already points is done already: it returns that alias's last
    history entry with `"unchanged": True` and records nothing (a retry, or a second mover
    of the same decision). Raises PromotionConflict when the alias points elsewhere (including
    when a concurrent mover got there first), RegistryError when the lock cannot be had within
    LOCK_WAIT_S.
    """
    # MLflow returns versions as int or str depending on the store: compare them as strings.
    expected_from = None if expected_from is None else str(expected_from)
    to_version = str(to_version)
    who = _who(who)
    with _alias_lock(client, name, who) as taken:
        current = version_by_alias(client, name, alias)
        current_version = str(current.version) if current else None
        if current_version == to_version:
            last = [e for e in _history(client, name) if e["alias"] == alias and e["to"] == to_version]
            return {
                **(last[-1] if last else {"alias": alias, "from": None, "to": to_version}),
                "unchanged": True,
            }
        if current_version != expected_from:
            raise PromotionConflict(
                f"@{alias} of {name} is now v{current_version}, not v{expected_from} as when the decision was made; "
                "re-run the gate against the new champion."
            )
        if time.monotonic() - taken > LOCK_STALE_AFTER_S / 2:
            raise RegistryError(
                f"{name}: the registry was too slow to move @{alias} safely (nothing moved); retry."
            )
        client.set_registered_model_alias(name, alias, to_version)
        seq = len(_history(client, name)) + 1
        # One line per move: no newline in it, and no ':' in who (the line's separator before why).
        entry = {
            "seq": seq,
            "alias": alias,
            "from": current_version,
            "to": to_version,
            "why": " ".join(why.split()),
            "who": " ".join(who.replace(":", "_").split()) or "?",
            "at": _now(),
            "kind": kind,
        }
        client.set_registered_model_tag(name, f"{HISTORY_PREFIX}{seq:06d}", _history_line(entry))
    if alias == CHAMPION:
        set_description_section(
            client,
            name,
            to_version,
            "@champion",
            f"since {entry['at']} ({kind}, "
            f"{f'from v{current_version}' if current_version else 'the first champion'}) "
            f"by {entry['who']}: {entry['why']}",
        )
    return entry


def describe_gate(decision: dict) -> str:
    """The gate's decision as the version description shows it: every check, its figure and threshold."""
    champion = decision.get("champion_version")
    lines = [
        f"**Gate:** {'PASSED' if decision.get('passed') else 'FAILED'}"
        + (f" against champion v{champion}" if champion else " (no champion: absolute thresholds)")
    ]
    for c in decision.get("checks", []):
        lines.append(
            f"- {'ok' if c['passed'] else 'FAIL'} `{c['name']}`: {c['detail']} "
            f"(observed {_figure(c['observed'])}, threshold {_figure(c['threshold'])})"
        )
    return "\n".join(lines)


def _figure(value) -> str:
    return "none" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def set_description_section(
    client: MlflowClient, name: str, version: str, label: str, text: str | None
) -> None:
    """Replace the paragraph `**label:** …` of a version's description (append it when absent;
    remove it when `text` is None).

    The description is derived from tags and history that stay the record; a failure to update
    it is printed, never raised, so it cannot undo or block the move or decision it describes.
    """
    try:
        current = client.get_model_version(name, str(version)).description or ""
        paragraphs = [p for p in current.split("\n\n") if p.strip() and not p.startswith(f"**{label}:**")]
        if text is not None:
            paragraphs.append(f"**{label}:** {' '.join(text.split())}")
        client.update_model_version(name, str(version), description="\n\n".join(paragraphs))
    except MlflowException as exc:
        print(f"{name} v{version}: description not updated ({exc.message[:200]}); the tags say the same.")


def _is_rollback(entry: dict) -> bool:
    # Entries written before `kind` existed say so in their reason.
    return entry.get("kind") == "rollback" or str(entry.get("why", "")).startswith("rollback:")


def champion_stack(history: list[dict]) -> list[str]:
    """The champions still to fall back on, oldest first, the current one last.

    A promotion pushes its version, a rollback pops the version it left: what a rollback left
    is never a rollback target again (until it is promoted anew), so rolling back twice goes two
    champions back instead of flipping between two versions.
    """
    stack: list[str] = []
    for entry in history:
        if entry["alias"] != CHAMPION:
            continue
        if _is_rollback(entry) and stack and stack[-1] == entry["from"]:
            stack.pop()
        # A rollback to a version not below the top (the rollback of older releases could flip
        # back to the version it had left) puts that version on top: it serves now.
        if not stack or stack[-1] != entry["to"]:
            stack.append(entry["to"])
    return stack


def rollback(client: MlflowClient, name: str, *, why: str, who: str | None = None) -> dict:
    """Move @champion back to the champion before the current one (see champion_stack).

    Versions deleted from the registry since are passed over. Raises RegistryError naming
    what the history holds when there is nothing to roll back to.
    """
    history = alias_history(client, name)
    stack = champion_stack(history)
    current = version_by_alias(client, name, CHAMPION)
    if current is None:
        raise RegistryError(
            f"{name}: no version is @champion, so there is nothing to roll back; "
            "promote one with `mlops models approve VERSION --reason TEXT`."
        )
    current_version = str(current.version)
    if not stack or stack[-1] != current_version:
        raise RegistryError(
            f"{name}: @champion is v{current_version}, but the alias history says "
            f"v{stack[-1] if stack else None}: the alias was moved outside the platform (MLflow UI or "
            "a raw client), so the history cannot tell what served before it. Serve the version you "
            "choose with `mlops models approve VERSION --override-gate --reason TEXT`."
        )
    candidates = stack[:-1]
    while candidates:
        target = candidates[-1]
        try:
            client.get_model_version(name, target)
            break
        except MlflowException as exc:
            if exc.error_code not in _NOT_FOUND:
                raise
            candidates.pop()  # deleted since it served: fall back further
    else:
        rolled_back = sorted(
            {e["from"] for e in history if e["alias"] == CHAMPION and _is_rollback(e)}, key=int
        )
        left = (
            f"; versions rolled back from are not rollback targets (v{', v'.join(rolled_back)})"
            if rolled_back
            else ""
        )
        raise RegistryError(
            f"{name}: @champion v{current_version} has no previous version to roll back to: it is "
            f"the oldest champion left in the alias history{left}. See `mlops models history`; to "
            "serve another version: `mlops models approve VERSION --override-gate --reason TEXT`."
        )
    return move_alias(
        client,
        name,
        CHAMPION,
        target,
        expected_from=current_version,
        why=f"rollback: {why}",
        who=who,
        kind="rollback",
    )


def record_decision(
    client: MlflowClient, name: str, version: str, decision: str, *, why: str, who: str | None = None
) -> dict:
    """The model owner's decision on a version, kept on the version; the latest one counts."""
    if decision not in DECISIONS:
        raise ValueError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
    if not why or not why.strip():
        raise RegistryError("a decision needs a reason (--reason TEXT); it is recorded with it.")
    record = {
        "decision": decision,
        "who": _who(who),
        "why": why.strip(),
        "at": _now(),
        "id": uuid.uuid4().hex,
    }
    client.set_model_version_tag(name, str(version), APPROVAL_TAG, json.dumps(record))
    set_description_section(client, name, version, "Approval", _approval_text(record))
    return record


def _approval_text(record: dict | None) -> str | None:
    return f"{record['decision']} by {record['who']} at {record['at']}: {record['why']}" if record else None


def withdraw_decision(
    client: MlflowClient, name: str, version: str, record: dict, previous: dict | None
) -> None:
    """Put back the decision that stood before `record`, when the move `record` was for did not happen.

    Only while `record` is still the latest decision: one written since by someone else stands.
    """
    if (decision_of(client, name, version) or {}).get("id") != record.get("id"):
        return
    if previous is None:
        client.delete_model_version_tag(name, str(version), APPROVAL_TAG)
    else:
        client.set_model_version_tag(name, str(version), APPROVAL_TAG, json.dumps(previous))
    set_description_section(client, name, version, "Approval", _approval_text(previous))


def _json_tag(client: MlflowClient, name: str, version: str, tag: str) -> dict | None:
    raw = client.get_model_version(name, str(version)).tags.get(tag)
    return json.loads(raw) if raw else None


def decision_of(client: MlflowClient, name: str, version: str) -> dict | None:
    """{"decision", "who", "why", "at"} recorded on the version, or None while nobody decided."""
    return _json_tag(client, name, version, APPROVAL_TAG)


def wait_of(client: MlflowClient, name: str, version: str) -> dict | None:
    """{"run_key", "state": "waiting"|"ended", "since", "deadline", "outcome"} of a DAG run's wait."""
    return _json_tag(client, name, version, WAIT_TAG)


def is_waiting(wait: dict | None, now: datetime | None = None) -> bool:
    """A DAG run still waits: the wait is open and its deadline (plus one look) not long past."""
    if not wait or wait.get("state") != "waiting":
        return False
    now = now or datetime.now(timezone.utc)
    return (now - datetime.fromisoformat(wait["deadline"])).total_seconds() < WAIT_POLL_MAX_S * 2


def open_wait(client: MlflowClient, name: str, version: str, *, run_key: str, timeout_s: float) -> dict:
    """Record that the DAG run `run_key` waits for a decision on the version, until a deadline.

    Idempotent per run: a later look (or an Airflow retry) of the same run keeps the deadline
    set by the first; a run cleared after its wait ended starts a new wait.
    """
    wait = wait_of(client, name, version)
    if wait and wait.get("run_key") == run_key and wait.get("state") == "waiting":
        return wait
    since = datetime.now(timezone.utc).replace(microsecond=0)
    wait = {
        "run_key": run_key,
        "state": "waiting",
        "since": since.isoformat(),
        "deadline": (since + timedelta(seconds=timeout_s)).isoformat(timespec="seconds"),
        "outcome": None,
    }
    client.set_model_version_tag(name, str(version), WAIT_TAG, json.dumps(wait))
    return {**wait, "opened": True}  # this look opened it: the moment to tell the model owners


def close_wait(client: MlflowClient, name: str, version: str, outcome: str) -> dict:
    """The waiting run stops waiting: `outcome` is approved, rejected or timed out."""
    wait = {**(wait_of(client, name, version) or {}), "state": "ended", "outcome": outcome, "ended": _now()}
    client.set_model_version_tag(name, str(version), WAIT_TAG, json.dumps(wait))
    if outcome == "timed out":
        set_description_section(
            client,
            name,
            version,
            "Approval",
            f"nobody decided between {wait.get('since')} and {wait.get('deadline')}; the run "
            "that waited ended without promoting it.",
        )
    return wait


def download_weights(name: str, version: str) -> Path:
    """Local folder of a version's Hugging Face weights (safetensors), wherever the artifacts live."""
    from mlflow.models import Model

    root = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}"))
    artifacts = Model.load(str(root)).flavors["python_function"]["artifacts"]
    if "model_dir" in artifacts:
        return root / artifacts["model_dir"]["path"]
    # An ONNX-served version carries the graph and tokenizer; its run keeps the weights (ml.export.log_served_model).
    run_id = MlflowClient().get_model_version(name, str(version)).run_id
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="weights"))


def list_versions(client: MlflowClient, name: str, metric: str = "macro_f1") -> list[dict]:
    """Every version, oldest first, with its aliases, gate, approval and `metric`'s tag (the
    workflow's headline_metric: macro_f1 for classification, field_f1_macro for extraction)."""
    out = []
    # search results do not carry aliases on every store; the registered model does.
    aliases: dict[str, list[str]] = {}
    if not client.search_registered_models(filter_string=f"name='{name}'"):
        return out  # nothing registered yet (a new state): an empty list, not an error
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    for v in sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)):
        out.append(
            {
                "version": str(v.version),
                "aliases": sorted(aliases.get(str(v.version), [])),
                "run_id": v.run_id,
                "created": datetime.fromtimestamp(v.creation_timestamp / 1000, timezone.utc).isoformat(
                    timespec="seconds"
                ),
                "gate": v.tags.get("gate"),
                metric: v.tags.get(metric),
                "latency_p99_ms": v.tags.get("latency_p99_ms"),
                "served_variant": v.tags.get("served_variant"),
                "dataset_version": v.tags.get("dataset_version"),
                "approval": json.loads(v.tags[APPROVAL_TAG]) if v.tags.get(APPROVAL_TAG) else None,
                "approval_wait": json.loads(v.tags[WAIT_TAG]) if v.tags.get(WAIT_TAG) else None,
            }
        )
    return out
