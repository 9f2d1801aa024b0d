"""The demo's second act: the teacher updates, and the platform keeps the student current by itself.

After the first champion, `mlops demo`:

1. runs the watch_upstream DAG, which records the base model's and the teacher's fingerprints (the
   first observation is a baseline: no event);
2. drops a call log in which a newer version of the frontier model answered a share of the same
   tickets (fewer mistakes than the old one), and runs ingest_validate, which accepts it;
3. unpauses distill and runs watch_upstream again: the teacher's fingerprint changed, so it emits
   the upstream Asset event with the old and new fingerprints (Airflow queues it for distill);
4. starts a real Airflow deployment (api-server, scheduler, dag-processor, triggerer; the
   LocalExecutor on the embedded SQLite): the scheduler starts an asset-triggered distill run from
   that event, whose probe measures how often the two teachers disagree, then re-labels,
   re-trains, gates, registers the challenger and promotes it or keeps the champion. The cost
   listener books every task of that run under "keeping current".

Steps 1-3 are `airflow dags test` runs like the first act, so only distill is ever unpaused: a
scheduler meeting an unpaused DAG with a cron would first start the latest missed cron run
(catchup=False means "only the latest", not "none").

It happens once per state folder: a second `mlops demo` finds the update already accepted and
says so instead of waiting for an event that will not come.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from ml.airflow_runner import run_airflow, test_dag

NEW_TEACHER_VERSION = "2026-11-15"  # the demo's base log is answered by frontier-large@2026-06-01
UPDATE_SHARE = 0.4  # the new version re-answers this share of the logged tickets
UPDATE_ERROR_RATE = 0.05  # vs 0.09 for the old version: the new teacher is better


def stage_teacher_update(settings, wf, *, seed: int, n_calls: int) -> Path:
    """A call log of the new teacher version answering a share of the same tickets, in the drop folder."""
    from ml.demo_data import generate
    from ml.pipeline.ingest_validate import drop_dir_for

    out = settings.state_dir / "demo" / wf.name / f"seed-{seed}-{n_calls}-teacher-{NEW_TEACHER_VERSION}"
    if not (out / "call_log.jsonl").exists():
        # Same seed and size: the same tickets (the texts are drawn first), answered anew.
        generate(
            out,
            n_calls=n_calls,
            n_gold=0,
            seed=seed,
            workflow=wf.name,
            model_version=NEW_TEACHER_VERSION,
            teacher_error_rate=UPDATE_ERROR_RATE,
            start=date(2026, 11, 15),
            days=10,
        )
    lines = (out / "call_log.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    every = round(1 / UPDATE_SHARE * 10)
    kept = [line for i, line in enumerate(lines) if i * 10 % every < 10]  # a deterministic share
    target = drop_dir_for(settings, wf) / f"call_log_seed{seed}_{NEW_TEACHER_VERSION}.jsonl"
    target.write_text("".join(kept), encoding="utf-8")
    return target


def _store(settings, wf):
    from ml.upstream import UpstreamStore

    return UpstreamStore(settings.state_dir / "upstream", wf.name)


def already_shown(settings, wf) -> bool:
    """An asset-triggered distill run has probed this state's teacher change already."""
    return any("/asset_triggered__" in str(r.get("run_key")) for r in _store(settings, wf).history("probe"))


def run(settings, wf, *, seed: int, n_calls: int, echo=print, timeout_s: float = 1800) -> dict:
    """Acts 1-4 above; returns what the re-distillation decided."""
    from ml.airflow_stack import AirflowStack

    if already_shown(settings, wf):
        echo(
            f"keeping current: the teacher update {NEW_TEACHER_VERSION} was handled by an earlier demo "
            "(see `mlops models history` and the upstream history); nothing new to show."
        )
        return {"shown": False, "reason": "already shown on this state folder"}
    watch, ingest, distill = (f"{dag}__{wf.name}" for dag in ("watch_upstream", "ingest_validate", "distill"))
    echo("\nKeeping current: the teacher updates.")
    test_dag(settings, watch, echo=echo)  # the baseline fingerprints
    dropped = stage_teacher_update(settings, wf, seed=seed, n_calls=n_calls)
    echo(
        f"→ dropped {dropped.name}: frontier-large@{NEW_TEACHER_VERSION} re-answered "
        f"{UPDATE_SHARE:.0%} of the tickets"
    )
    test_dag(settings, ingest, echo=echo)
    # Airflow queues Asset events only for DAGs that are not paused: distill listens from here on.
    run_airflow(
        settings, ["dags", "unpause", distill], log_path=settings.airflow_home / "logs" / "unpause.log"
    )
    changes = len(_store(settings, wf).history("changed"))
    test_dag(settings, watch, echo=echo)  # sees the new teacher: emits the upstream Asset event
    if len(_store(settings, wf).history("changed")) == changes:
        raise RuntimeError(
            f"{watch} saw no upstream change: this state folder acknowledged the teacher "
            f"update {NEW_TEACHER_VERSION} before (an interrupted demo?). Start from a "
            "fresh state with `make clean-state` (or another MLOPS_STATE_DIR)."
        )
    echo(
        "→ starting Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor) so that the "
        f"Asset event schedules {distill} as in production"
    )
    with AirflowStack(settings) as stack:
        # The scheduler may create the run before the API answers: the act's own run is the state's
        # first asset-triggered one (already_shown() said no earlier one probed a teacher change).
        stack.wait_for_dag(distill)
        run_id = stack.next_run(distill, run_type="asset_triggered")
        echo(
            f"→ the scheduler started {distill} run {run_id} from the Asset event; waiting for it "
            f"(component logs: {stack.log_dir})"
        )
        outcome = stack.wait_for_run(distill, run_id, timeout_s=timeout_s)
    result = {
        "shown": True,
        "dag_id": distill,
        "run_id": run_id,
        "tasks": outcome["tasks"],
        **decision(settings, wf, f"{distill}/{run_id}"),
        "booked": booked(settings, distill, run_id),
    }
    echo(describe(result))
    return result


def decision(settings, wf, run_key: str) -> dict:
    """What the re-distillation run decided: the probe, the challenger, the gate, promote or keep."""
    from ml import registry

    probes = [r for r in _store(settings, wf).history("probe") if r.get("run_key") == run_key]
    probe = probes[-1] if probes else {}
    client = registry.configure(settings)
    versions = [
        v
        for v in registry.list_versions(client, wf.model_name)
        if client.get_model_version(wf.model_name, v["version"]).tags.get("airflow_run_key") == run_key
    ]
    challenger = versions[-1]["version"] if versions else None
    champion = registry.version_by_alias(client, wf.model_name, registry.CHAMPION)
    gate = {}
    if challenger is not None:
        gate = json.loads(client.get_model_version(wf.model_name, challenger).tags.get("gate_decision", "{}"))
    return {
        "probe": {
            k: probe.get(k) for k in ("reason", "disagreement", "n_compared", "compared_with", "skipped")
        },
        "challenger": challenger,
        "champion": champion.version if champion else None,
        "promoted": challenger is not None
        and champion is not None
        and str(champion.version) == str(challenger),
        "gate": gate,
    }


def booked(settings, dag_id: str, run_id: str) -> dict:
    """What the cost listener booked for the run's tasks, by category (USD as strings)."""
    from collections import defaultdict

    from ml.costs.ledger import Ledger

    totals: dict[str, Decimal] = defaultdict(Decimal)
    with Ledger(settings.ledger_url) as ledger:
        for entry in ledger.entries():
            if entry.source_kind == "task" and entry.source.startswith(f"{dag_id}/{run_id}/"):
                totals[entry.category] += entry.amount
    return {category: str(amount) for category, amount in totals.items()}


def describe(result: dict) -> str:
    probe = result["probe"]
    lines = [f"  probe:       {probe.get('reason')}"]
    if probe.get("skipped"):
        lines.append("  decision:    skipped: teachers agree; @champion unchanged")
        return "\n".join(lines)
    gate = result["gate"]
    lines.append(
        f"  challenger:  v{result['challenger']}  gate {'passed' if gate.get('passed') else 'failed'}"
        + (f" ({'; '.join(gate.get('reasons', []))})" if gate.get("reasons") else "")
    )
    lines.append(
        f"  decision:    {'promoted: @champion -> v' + str(result['challenger']) if result['promoted'] else 'kept @champion v' + str(result['champion'])}"
    )
    spent = (
        ", ".join(f"{c} ${Decimal(a):.4f}" for c, a in result.get("booked", {}).items()) or "nothing booked"
    )
    lines.append(f"  booked:      {spent} (`mlops costs report`)")
    return "\n".join(lines)
