"""Steps of the watch_upstream DAG: fingerprint the base model and the teacher, report a change once.

1. `check`: the current fingerprints against the acknowledged ones (ml/upstream.py). The first
   observation is the baseline and emits nothing; a change that the asset's recent events
   already carry (an earlier try or run emitted it, its acknowledgement was lost) is
   acknowledged and emits nothing; any other change is written to the history as "changed"
   and returned as the event's extra. A missing or unreadable source raises UpstreamError.
2. `acknowledge`: after the event went out, the change's new fingerprints become the state the
   next run compares with (atomic; a retry or a stale change does nothing).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from ml.config import Settings, load_settings
from ml.upstream import SOURCES, UpstreamStore, advance, base_model_fingerprint, observe, teacher_fingerprint
from ml.workflows import Workflow, get_workflow


def _context(workflow: str) -> tuple[Settings, Workflow, UpstreamStore]:
    settings = load_settings()
    wf = get_workflow(settings.workflows_file, workflow)
    return settings, wf, UpstreamStore(settings.state_dir / "upstream", wf.name)


def current_fingerprints(settings: Settings, wf: Workflow, store: UpstreamStore) -> dict:
    """{source: {"value": ..., **detail}} for the base model and the teacher, read now."""
    if wf.base_model.startswith("models:/") or wf.teacher.model.startswith("models:/"):
        from ml import registry

        registry.configure(settings)  # point MLflow at the platform's registry before resolving aliases
    fps = (
        base_model_fingerprint(wf.base_model),
        teacher_fingerprint(wf.teacher.kind, wf.teacher.model, settings.data_dir / wf.name, store.cache_path),
    )
    return {fp.source: fp.to_dict() for fp in fps}


def check(workflow: str, run_key: str, emitted_keys: list[str] | tuple = ()) -> dict | None:
    """The upstream event's extra when a source changed and no event carries that change yet, else None.

    emitted_keys: `change_key`s of the asset's recent events, as Airflow recorded them.
    """
    settings, wf, store = _context(workflow)
    current = current_fingerprints(settings, wf, store)
    acknowledged = store.acknowledged()
    obs = observe(acknowledged, current, emitted_keys)
    values = {s: current[s]["value"] for s in SOURCES}
    if obs.outcome == "baseline":
        ack_id = "baseline-" + hashlib.sha256(json.dumps([values, _now()]).encode()).hexdigest()[:16]
        store.append({"event": "baseline", "run_key": run_key, "values": values})
        store.acknowledge(current, ack_id, run_key, "first observation: the baseline, no event")
        print(f"{wf.name}: first observation recorded as the baseline: {values}")
        return None
    advanced = advance(acknowledged["fingerprints"], current)
    if obs.outcome == "unchanged":
        store.append({"event": "unchanged", "run_key": run_key, "values": values})
        if _values(advanced) != _values(acknowledged["fingerprints"]):
            store.acknowledge(
                advanced, acknowledged["id"], run_key, "a source seen for the first time joins in"
            )
        print(f"{wf.name}: upstream unchanged: {values}")
        return None
    if obs.outcome == "already_emitted":
        store.append(
            {
                "event": "already_emitted",
                "run_key": run_key,
                "change_key": obs.change_key,
                "changed": list(obs.changed),
                "values": values,
            }
        )
        store.acknowledge(
            advanced, obs.change_key, run_key, "the asset already carries this change: not emitted again"
        )
        print(f"{wf.name}: change {obs.change_key} was emitted before; acknowledged now, no new event")
        return None
    # Written before the event goes out: a crash between the two leaves a "changed" line and
    # no event, and the retry finds the same key missing from the asset's events and emits it.
    store.append(
        {
            "event": "changed",
            "run_key": run_key,
            "change_key": obs.change_key,
            "changed": list(obs.changed),
            "values": values,
            "old_values": {s: (acknowledged["fingerprints"].get(s) or {}).get("value") for s in SOURCES},
        }
    )
    event = {"workflow": wf.name, **obs.event, "detected_at": _now(), "run_key": run_key}
    print(
        f"{wf.name}: {', '.join(obs.changed)} changed (change {obs.change_key}); emitting the upstream Asset"
    )
    return event


def acknowledge(workflow: str, run_key: str, change: dict) -> dict:
    """Make an emitted change's new fingerprints the state to compare with; idempotent."""
    _, _, store = _context(workflow)
    acknowledged = store.acknowledged()
    key = change["change_key"]
    if acknowledged is not None and acknowledged["id"] == key:
        return {"change_key": key, "acknowledged": True, "note": "already acknowledged"}
    if acknowledged is None or acknowledged["id"] != change["from_acknowledged"]:
        # Another run moved the state on since this change was seen: never move it back.
        note = f"superseded: the acknowledged state is now {acknowledged and acknowledged['id']}"
        store.append({"event": "acknowledge_skipped", "run_key": run_key, "change_key": key, "note": note})
        return {"change_key": key, "acknowledged": False, "note": note}
    store.acknowledge(advance(acknowledged["fingerprints"], change["new"]), key, run_key, "event emitted")
    return {"change_key": key, "acknowledged": True}


def status(workflow: str) -> dict:
    """What the watcher holds for a workflow: the acknowledged fingerprints and the last events."""
    _, wf, store = _context(workflow)
    acknowledged = store.acknowledged()
    return {
        "workflow": wf.name,
        "acknowledged": acknowledged,
        "history": store.history()[-10:],
        "store": str(store.history_path),
    }


def _values(fingerprints: dict) -> dict:
    return {s: (fp or {}).get("value") for s, fp in fingerprints.items()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()
