"""What a workflow is trained from upstream, fingerprinted so that a change can be seen.

Two sources, each reduced to a short `value` that changes exactly when what we train from does:

- base_model: a local Hugging Face directory (or the packaged MiniLM) → the sha256 of its config,
  tokenizer and weights (`fingerprint_model_dir`, the `base_fingerprint` tag of every version);
  `models:/name@alias` or `models:/name/3` → the registered version it resolves to;
  a hub id pinned as `org/name@revision` → that revision (no hub is reached, so only a pinned
  revision can be watched).
- teacher: call_log / openai → the model and model_version of the newest accepted frontier
  call of the declared model (`raw/` of the dataset, newest by `ts`) that recorded an answer (a
  label, or a field workflow's JSON answer); local_model → the directory's content hash or the
  registered version.

The probe (ml/pipeline/redistill.py) compares two teachers' answers part by part
(`answer_difference`): a label is one part, a JSON object of fields one part per field, so
for a field workflow the disagreement is the share of field values that changed.

The store, `<state>/upstream/<workflow>.*`, keeps what the watcher saw and did:
- `.jsonl`: append-only history (baseline, unchanged, changed, already_emitted, probe, ...);
- `.acknowledged.json`: the fingerprints of the last change whose event went out (or of the
  first observation), replaced atomically; a change is "current vs acknowledged";
- `.call_logs.json`: (model, version) counts per accepted call-log file, by its digest
  (archived raw files never change, so nothing is read twice).

Exactly once. Airflow registers an outlet's asset event in the same transaction that marks the
task successful: a try that crashes emits nothing and its retry must emit. A try that succeeded
and whose acknowledgement was then lost (the acknowledging task crashed, the run was cleared and
re-run) must not emit again. So each change has a key, a hash of the acknowledged state it
starts from and of the old and new values of the sources that changed. The key is written to the
history as "changed" before the event is emitted and travels in the event's extra; before
emitting, the watcher is handed the keys of the asset's recent events, read from Airflow itself:
a key found there was emitted already, so the change is acknowledged and nothing is emitted.
Airflow's event table is the record of what went out; the acknowledged file saves re-reading it.

The first observation of a workflow (no acknowledged file) is its baseline and emits nothing:
the first model is trained by the dataset Asset, and re-distilling it at once would train the
same thing twice. Likewise a source seen for the first time (a teacher before any call log
arrived) joins the acknowledged state without an event.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ml.frontier.calllog import recorded_answer

SOURCES = ("base_model", "teacher")
# `org/name@revision`: a hub id pinned to a revision (a commit sha, a tag).
_HUB_PINNED = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+@([\w.-]+)$")
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_MLFLOW = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


class UpstreamError(RuntimeError):
    """An upstream source is missing or unreadable; the message names it and the fix."""


@dataclass(frozen=True)
class Fingerprint:
    source: str  # base_model or teacher
    value: str | None  # compared to see a change; None: nothing to fingerprint yet
    detail: dict = field(default_factory=dict)  # what the value was computed from, for people and the probe

    def to_dict(self) -> dict:
        return {"value": self.value, **self.detail}


# Base model ---------------------------------------------------------------------------------


def base_model_fingerprint(spec: str) -> Fingerprint:
    """The fingerprint of a workflow's `base_model`; UpstreamError when it cannot be read."""
    if spec.startswith("models:/"):
        return Fingerprint("base_model", *_registered(spec, "base_model"))
    pinned = _HUB_PINNED.match(spec)
    if pinned and not Path(spec).expanduser().exists():
        return Fingerprint("base_model", f"hub:{spec}", {"spec": spec, "revision": pinned.group(1)})
    # Imported here: student pulls in torch and transformers, which only a directory needs.
    from ml.train.student import fingerprint_model_dir, resolve_base_model

    try:
        path = resolve_base_model(spec)  # its errors name the problem and the fix
    except (OSError, NotImplementedError) as exc:
        raise UpstreamError(str(exc)) from None
    try:
        value = fingerprint_model_dir(path)
    except OSError as exc:
        raise UpstreamError(
            f"base_model {spec!r}: cannot read the model directory ({exc}); make it readable "
            "by the Airflow workers, or point base_model in the workflows file at a readable "
            "copy."
        ) from None
    return Fingerprint("base_model", value, {"spec": spec, "path": str(path)})


def _registered(spec: str, what: str) -> tuple[str, dict]:
    """`models:/name@alias` or `models:/name/N` → (value, detail) of the version it names now."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    m = _MLFLOW.match(spec)
    if not m:
        raise UpstreamError(
            f"{what} {spec!r}: not a registered model URI; write models:/NAME@ALIAS or models:/NAME/VERSION."
        )
    client = MlflowClient()  # the caller has pointed MLflow at the platform's registry
    try:
        if m.group("alias"):
            mv = client.get_model_version_by_alias(m.group("name"), m.group("alias"))
        else:
            mv = client.get_model_version(m.group("name"), m.group("version"))
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise  # the registry is down or busy: the task's retries are for that
        raise UpstreamError(
            f"{what} {spec!r}: the registry has no such model version or alias "
            f"({str(exc).splitlines()[0][:200]}); register it, set the alias "
            "(`mlflow` UI or MlflowClient.set_registered_model_alias), or fix the URI in the "
            "workflows file."
        ) from None
    return f"mlflow:{mv.name}/{mv.version}", {"spec": spec, "version": str(mv.version), "run_id": mv.run_id}


# Teacher ------------------------------------------------------------------------------------


def teacher_fingerprint(
    kind: str, model: str, data_root: Path, cache_path: Path | None = None
) -> Fingerprint:
    """The fingerprint of a workflow's teacher: the newest recorded frontier version, or a local model."""
    if kind in ("call_log", "openai"):
        # An openai teacher's version is the one its recorded calls (the proxy's log) answered with;
        # it labels the training texts live (ml/teachers.py), so a new version shows up there first.
        current = current_call_log_teacher(call_log_teachers(data_root, cache_path), model)
        if current is None:
            note = f"no accepted call of model {model!r} yet" if model else "no accepted call log yet"
            return Fingerprint("teacher", None, {"kind": kind, "model": model, "note": note})
        return Fingerprint(
            "teacher", f"{kind}:{current['model']}@{current['version']}", {"kind": kind, **current}
        )
    if kind == "labels":  # the data's own labels: new labels arrive as a new dataset, never as a new teacher
        return Fingerprint("teacher", "labels", {"kind": kind})
    if kind == "local_model":
        if model.startswith("models:/"):
            value, detail = _registered(model, "teacher.model")
            return Fingerprint("teacher", value, {"kind": kind, **detail})
        from ml.train.student import fingerprint_model_dir

        path = Path(model).expanduser()
        try:
            value = fingerprint_model_dir(path)
        except OSError as exc:  # FileNotFoundError included
            raise UpstreamError(
                f"teacher.model {model!r}: cannot read the teacher's model directory ({exc}); "
                "point teacher.model in the workflows file at a folder written by "
                "save_pretrained() that the Airflow workers can read."
            ) from None
        return Fingerprint("teacher", value, {"kind": kind, "spec": model, "path": str(path)})
    raise UpstreamError(
        f"teacher.kind {kind!r} has no fingerprint; use call_log, labels, local_model or openai."
    )


def call_log_teachers(data_root: Path, cache_path: Path | None = None) -> list[dict]:
    """Per accepted call-log batch (in acceptance order): its (model, version) pairs.

    Each pair: model, version, calls (ok calls), last_ts (ISO 8601 or None), batch (the batch's
    index among call logs) and batch_sha256.
    """
    data_root = Path(data_root)
    log_path = data_root / "versions.jsonl"
    if not log_path.exists():
        return []
    try:
        records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise UpstreamError(
            f"{log_path}: cannot read the dataset's version log ({exc}); restore it from the "
            "DVC remote or re-run ingest_validate."
        ) from None
    cache = _read_json(cache_path) if cache_path else {}
    out, dirty = [], False
    for index, record in enumerate(r for r in records if r.get("kind") == "call_log"):
        sha = record["batch_sha256"]
        if sha not in cache:
            cache[sha] = _pairs_in(raw_call_log(data_root, record))
            dirty = True
        out.extend({**pair, "batch": index, "batch_sha256": sha} for pair in cache[sha])
    if cache_path and dirty:
        _write_json_atomic(cache_path, cache)
    return out


def raw_call_log(data_root: Path, record: dict) -> Path:
    """The archived, unchanged file of an accepted batch (ml.pipeline.ingest_validate._archive)."""
    found = sorted((Path(data_root) / "raw").glob(f"{record['batch_sha256'][:16]}_*"))
    if not found:
        raise UpstreamError(
            f"{Path(data_root) / 'raw'}: the accepted call log {record.get('batch')!r} "
            f"(sha256 {record['batch_sha256'][:16]}…) is missing, so its teacher version cannot "
            "be read; finish the ingest run that accepted it (mlops run --only ingest_validate) "
            "or restore the file into raw/ under that name."
        )
    return found[0]


def iter_ok_calls(path: Path):
    """The ok calls of a raw call log, one dict per line; UpstreamError on an unreadable line."""
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise UpstreamError(
                        f"{path}: line {n} is not JSON; the archived call log is damaged, "
                        "restore it from the DVC remote or the source that wrote it."
                    ) from None
                if row.get("status") == "ok" and recorded_answer(row) is not None:
                    yield row
    except OSError as exc:
        raise UpstreamError(f"{path}: cannot read the archived call log ({exc}); make it readable.") from None


def _pairs_in(path: Path) -> list[dict]:
    pairs: dict[tuple[str, str], dict] = {}
    for row in iter_ok_calls(path):
        key = (str(row.get("model") or ""), call_version(row))
        pair = pairs.setdefault(key, {"model": key[0], "version": key[1], "calls": 0, "last_ts": None})
        pair["calls"] += 1
        ts = _ts(row.get("ts"))
        if ts and (pair["last_ts"] is None or ts > pair["last_ts"]):
            pair["last_ts"] = ts
    return list(pairs.values())


def current_call_log_teacher(pairs: list[dict], model: str = "") -> dict | None:
    """The teacher answering now: the declared model's version with the newest call.

    Only the declared model counts, so a fallback model answering during an outage does not
    look like a new teacher. Newest by call time, so a backfill of old logs does not either;
    calls without a time rank by the order their batches were accepted.
    """
    mine = [p for p in pairs if not model or p["model"] == model]
    if not mine:
        return None
    merged: dict[tuple[str, str], dict] = {}
    for p in mine:
        m = merged.setdefault(
            (p["model"], p["version"]),
            {"model": p["model"], "version": p["version"], "calls": 0, "last_ts": None, "batch": -1},
        )
        m["calls"] += p["calls"]
        m["batch"] = max(m["batch"], p["batch"])
        if p["last_ts"] and (m["last_ts"] is None or p["last_ts"] > m["last_ts"]):
            m["last_ts"] = p["last_ts"]
    newest = max(merged.values(), key=lambda m: (m["last_ts"] or "", m["batch"]))
    return {k: newest[k] for k in ("model", "version", "calls", "last_ts")}


def call_version(row: dict) -> str:
    # As ingestion stores it in the training set's teacher_version column (astype(str)).
    value = row.get("model_version")
    return "" if value is None else str(value)


def _ts(value) -> str | None:
    """A call's time as UTC ISO 8601 (comparable as text), or None when absent or unreadable."""
    if not value:
        return None
    try:
        ts = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat()


# Comparing two teachers' answers ----------------------------------------------------------


def _fields_of(answer) -> dict | None:
    """A field workflow's answer as {field: value} (absent values as None), else None (a label,
    or an answer that is not a JSON object: curation refuses it, the probe counts it as different)."""
    if isinstance(answer, dict):
        obj = answer
    elif isinstance(answer, str) and answer.lstrip().startswith("{"):
        try:
            obj = json.loads(answer)
        except ValueError:
            return None
        if not isinstance(obj, dict):
            return None
    else:
        return None
    # null and "" both say "absent"; 30 and "30" are the same digits in the text.
    return {str(k): None if v is None or v == "" else str(v) for k, v in obj.items()}


def answer_difference(old, new) -> tuple[int, int]:
    """(parts that differ, parts compared) between two recorded answers to the same text.

    Two labels are one part. Two answers of fields are compared field by field over the fields
    either names (a field one left out differs unless the other says it is absent). An answer of
    fields against one that is not (malformed JSON): every field of the answer differs.
    """
    old_fields, new_fields = _fields_of(old), _fields_of(new)
    if old_fields is None and new_fields is None:
        return int(old != new), 1
    if old_fields is None or new_fields is None:
        n = len(old_fields if old_fields is not None else new_fields) or 1
        return n, n
    names = set(old_fields) | set(new_fields)
    return sum(old_fields.get(k) != new_fields.get(k) for k in names), len(names)


def masked_answer(answer, mask):
    """An answer masked as ingestion stores it: the values of an answer of fields (the training
    set keeps them masked, like the text); a label as it is."""
    fields = _fields_of(answer)
    if fields is None:
        return answer
    return {k: v if v is None else mask(v) for k, v in fields.items()}


# Deciding -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    outcome: str  # baseline | unchanged | changed | already_emitted
    current: dict  # source -> fingerprint dict ({"value": ..., **detail})
    changed: tuple[str, ...] = ()
    change_key: str | None = None
    event: dict | None = None  # the asset event's extra, when outcome == "changed"


def change_key(ack_id: str, old: dict, new: dict, changed) -> str:
    """Names one change: from which acknowledged state, which sources, from what to what.

    The acknowledged state's id is part of it, so A→B, B→A and A→B again are three changes.
    """
    body = {
        "from": ack_id,
        "old": {s: old[s]["value"] for s in changed},
        "new": {s: new[s]["value"] for s in changed},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]


def observe(acknowledged: dict | None, current: dict, emitted_keys=()) -> Observation:
    """Compare the current fingerprints with the acknowledged ones; pure, so it is tested alone."""
    if acknowledged is None:
        return Observation("baseline", current)
    old = acknowledged["fingerprints"]
    changed = tuple(
        s
        for s in SOURCES
        if s in current
        and s in old
        and current[s]["value"] is not None
        and old[s]["value"] is not None
        and current[s]["value"] != old[s]["value"]
    )
    if not changed:
        return Observation("unchanged", current)
    key = change_key(acknowledged["id"], old, current, changed)
    if key in set(emitted_keys or ()):
        return Observation("already_emitted", current, changed, key)
    event = {
        "change_key": key,
        "changed": list(changed),
        "old": {s: old.get(s) for s in SOURCES},
        "new": {s: current.get(s) for s in SOURCES},
        "from_acknowledged": acknowledged["id"],
    }
    return Observation("changed", current, changed, key, event)


def advance(fingerprints: dict | None, newer: dict) -> dict:
    """The acknowledged fingerprints moved to the newer ones, except where a newer value is None.

    A source seen for the first time joins without an event; one that cannot be seen any more
    (the teacher's calls left the data) keeps its last value to compare with when it is back.
    """
    return {
        **(fingerprints or {}),
        **{s: fp for s, fp in newer.items() if fp and fp.get("value") is not None},
    }


# The store ----------------------------------------------------------------------------------


class UpstreamStore:
    """`<state>/upstream/<workflow>.jsonl` (history) and `.acknowledged.json` (current state)."""

    def __init__(self, root: Path, workflow: str):
        self.root = Path(root)
        self.workflow = workflow
        self.history_path = self.root / f"{workflow}.jsonl"
        self.ack_path = self.root / f"{workflow}.acknowledged.json"
        self.cache_path = self.root / f"{workflow}.call_logs.json"

    def acknowledged(self) -> dict | None:
        if not self.ack_path.exists():
            return None
        try:
            return json.loads(self.ack_path.read_text())
        except ValueError as exc:  # written atomically, so only a hand edit gets here
            raise UpstreamError(
                f"{self.ack_path}: not valid JSON ({exc}); delete it and the next watcher run "
                "records the current fingerprints as a new baseline."
            ) from None

    def acknowledge(self, fingerprints: dict, ack_id: str, run_key: str, note: str) -> dict:
        record = {
            "id": ack_id,
            "fingerprints": fingerprints,
            "run_key": run_key,
            "note": note,
            "acknowledged_at": _now(),
        }
        _write_json_atomic(self.ack_path, record)
        self.append({"event": "acknowledged", "id": ack_id, "run_key": run_key, "note": note})
        return record

    def append(self, record: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"at": _now(), "workflow": self.workflow, **record}, sort_keys=True, default=str)
        with open(self.history_path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def history(self, event: str | None = None) -> list[dict]:
        if not self.history_path.exists():
            return []
        rows = [json.loads(line) for line in self.history_path.read_text().splitlines() if line.strip()]
        return [r for r in rows if event is None or r.get("event") == event]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}  # only a cache: rebuilt from the raw files


def _write_json_atomic(path: Path, doc: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, sort_keys=True, indent=1))
    os.replace(tmp, path)
