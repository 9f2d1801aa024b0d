"""The registry against a real `mlflow server` (SQLite backend, two workers) on 127.0.0.1.

Registration is idempotent across processes racing on one key; a challenger the gate refuses
(worse, or with a NaN figure) never becomes @champion; rollback restores the previous champion
and is in the alias history; of concurrent promoters that saw the same champion exactly one wins
and the others get PromotionConflict. Versions are real: a tiny classifier logged as a pyfunc.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone

import mlflow
import pytest
from mlflow_server import RACER_PRELUDE, ROOT, Racers, client_env, log_tiny_classifier, mlflow_server

from ml import registry
from ml.config import load_settings
from ml.evaluate.gate import decide
from ml.pipeline.distill import await_approval, promote
from ml.registry import CHAMPION, PromotionConflict, RegistryError
from ml.workflows import get_workflow

pytestmark = pytest.mark.integration

WORKFLOW = get_workflow(ROOT / "dags" / "workflows.yaml", "ticket_routing")  # approval: auto
NAN = float("nan")


@pytest.fixture(scope="module")
def srv(tmp_path_factory, tiny_base_model):
    """The server, settings pointing at it (also in os.environ, for code that loads its own), one logged model."""
    folder = tmp_path_factory.mktemp("registry_server")
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with mlflow_server(folder / "server") as url, pytest.MonkeyPatch.context() as env:
        variables = client_env(url, folder / "state")
        for key, value in variables.items():
            env.setenv(key, value)
        settings = load_settings()
        settings.ensure_dirs()
        client = registry.configure(settings)
        experiment_id = registry.ensure_experiment(settings, "tickets")
        model_uri, run_id = log_tiny_classifier(
            tiny_base_model,
            ["billing", "shipping", "login"],
            folder / "model",
            seed=0,
            experiment_id=experiment_id,
        )
        yield {
            "url": url,
            "env": variables,
            "client": client,
            "model_uri": model_uri,
            "run_id": run_id,
            "folder": folder,
        }
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


@pytest.fixture
def name(request) -> str:
    """A registered model of its own for each test (and each parameter)."""
    node = request.node.name
    return f"{re.sub(r'[^a-z0-9]+', '_', node[5:40].lower())}_{hashlib.sha1(node.encode()).hexdigest()[:6]}_student"


def register(srv, name: str, key: str) -> str:
    return registry.register(
        srv["client"],
        name,
        srv["model_uri"],
        srv["run_id"],
        idempotency_key=key,
        tags={"workflow": "tickets"},
    )


def champion(srv, name: str) -> str | None:
    found = registry.version_by_alias(srv["client"], name, CHAMPION)
    return str(found.version) if found else None


def lock_left(srv, name: str) -> bool:
    return registry._lock_holder(srv["client"], name + registry.LOCK_SUFFIX) is not None


REGISTER_RACER = (
    RACER_PRELUDE
    + """
name, model_uri, run_id = args
print(registry.register(client, name, model_uri, run_id, idempotency_key="distill__tickets/run-7",
                        tags={"workflow": "tickets"}))
"""
)


def test_processes_registering_one_key_at_once_leave_one_version(srv, name, tmp_path):
    racers = Racers(tmp_path, REGISTER_RACER, [[name, srv["model_uri"], srv["run_id"]]] * 2, srv["env"])
    returned = racers.run()
    versions = srv["client"].search_model_versions(f"name='{name}'")
    assert len(versions) == 1, f"{len(versions)} versions for one idempotency key"
    assert set(returned) == {str(versions[0].version)}
    assert versions[0].tags["idempotency_key"] == "distill__tickets/run-7"
    # A retry after the race returns the same version and still creates none.
    assert register(srv, name, "distill__tickets/run-7") == str(versions[0].version)
    assert len(srv["client"].search_model_versions(f"name='{name}'")) == 1


def metrics(macro_f1: float, *, worst_class_f1: float = 0.7, latency_p99_ms: float = 20.0) -> dict:
    return {
        "macro_f1": macro_f1,
        "per_class_f1": {"billing": 0.9, "shipping": worst_class_f1},
        "latency_p99_ms": latency_p99_ms,
        "cost_per_1k_calls_usd": 0.01,
    }


# (challenger's figures, champion's figures, promoted?) with ticket_routing's gate: macro-F1 at
# least 0.6 and at most 0.01 below the champion, every class at least 0.2, p99 within 300 ms.
GATE_CASES = {
    "better challenger": (metrics(0.86), metrics(0.80), True),
    "slightly worse, within the allowed drop": (metrics(0.795), metrics(0.80), True),
    "worse challenger": (metrics(0.70), metrics(0.80), False),
    "challenger macro-F1 is NaN": (metrics(NAN), metrics(0.80), False),
    "champion macro-F1 is NaN": (metrics(0.95), metrics(NAN), False),
    "a class below its floor": (metrics(0.86, worst_class_f1=0.1), metrics(0.80), False),
    "challenger latency is NaN": (metrics(0.86, latency_p99_ms=NAN), metrics(0.80), False),
}


@pytest.mark.parametrize("challenger, champion_metrics, promoted", GATE_CASES.values(), ids=GATE_CASES.keys())
def test_promote_moves_champion_only_when_the_gate_passed(srv, name, challenger, champion_metrics, promoted):
    v1, v2 = register(srv, name, "run-1"), register(srv, name, "run-2")
    registry.move_alias(srv["client"], name, CHAMPION, v1, expected_from=None, why="first")
    decision = decide(
        challenger,
        champion_metrics,
        WORKFLOW.gate,
        latency_sla_p99_ms=WORKFLOW.latency_sla_p99_ms,
        champion_version=champion(srv, name),
    )
    result = promote(
        WORKFLOW.name,
        "run-2",
        {
            "model": name,
            "version": v2,
            "passed": decision.passed,
            "champion_version": decision.champion_version,
        },
    )
    assert decision.passed is promoted and result["promoted"] is promoted
    assert champion(srv, name) == (v2 if promoted else v1)
    moves = [
        (e["from"], e["to"]) for e in registry.alias_history(srv["client"], name) if e["alias"] == CHAMPION
    ]
    assert moves == ([(None, v1), (v1, v2)] if promoted else [(None, v1)])
    assert not lock_left(srv, name)


def test_a_passed_gate_against_a_champion_that_moved_since_is_a_conflict(srv, name):
    v1, v2, v3 = (register(srv, name, f"run-{i}") for i in (1, 2, 3))
    registry.move_alias(srv["client"], name, CHAMPION, v1, expected_from=None, why="first")
    decision = decide(
        metrics(0.9),
        metrics(0.8),
        WORKFLOW.gate,
        latency_sla_p99_ms=WORKFLOW.latency_sla_p99_ms,
        champion_version=v1,
    )
    registry.move_alias(srv["client"], name, CHAMPION, v3, expected_from=v1, why="approved by hand meanwhile")
    with pytest.raises(PromotionConflict, match=f"@champion of {name} is now v{v3}, not v{v1}"):
        promote(
            WORKFLOW.name,
            "run-2",
            {
                "model": name,
                "version": v2,
                "passed": decision.passed,
                "champion_version": decision.champion_version,
            },
        )
    assert champion(srv, name) == v3
    assert not lock_left(srv, name)


def test_rollback_restores_the_previous_champion_and_records_it(srv, name):
    v1, v2, v3 = (register(srv, name, f"run-{i}") for i in (1, 2, 3))
    for expected, to in ((None, v1), (v1, v2), (v2, v3)):
        registry.move_alias(
            srv["client"], name, CHAMPION, to, expected_from=expected, why="promoted", who="airflow"
        )
    entry = registry.rollback(srv["client"], name, why="complaints since v3", who="ada")
    assert champion(srv, name) == v2
    assert (entry["from"], entry["to"], entry["who"], entry["why"]) == (
        v3,
        v2,
        "ada",
        "rollback: complaints since v3",
    )
    history = registry.alias_history(srv["client"], name)
    assert history[-1] == entry and [e["seq"] for e in history] == [1, 2, 3, 4]


PROMOTE_RACER = (
    RACER_PRELUDE
    + """
name, expected, target = args
try:
    entry = registry.move_alias(client, name, "champion", target, expected_from=expected, why="gate passed",
                                who="racer-" + target)
    print(json.dumps({"won": entry["to"]}))
except registry.PromotionConflict as exc:
    print(json.dumps({"conflict": str(exc)}))
"""
)


def test_of_concurrent_promoters_from_one_champion_exactly_one_wins(srv, name, tmp_path):
    versions = [register(srv, name, f"run-{i}") for i in range(1, 5)]
    v1, targets = versions[0], versions[1:]
    registry.move_alias(srv["client"], name, CHAMPION, v1, expected_from=None, why="first")
    racers = Racers(tmp_path, PROMOTE_RACER, [[name, v1, target] for target in targets], srv["env"])
    results = [json.loads(line) for line in racers.run()]

    winners = [r["won"] for r in results if "won" in r]
    assert len(winners) == 1, f"{len(winners)} promoters moved @champion from v{v1}: {results}"
    conflicts = [r["conflict"] for r in results if "conflict" in r]
    assert len(conflicts) == len(targets) - 1
    assert all(f"is now v{winners[0]}, not v{v1}" in message for message in conflicts)
    assert champion(srv, name) == winners[0]
    moves = [(e["from"], e["to"], e["who"]) for e in registry.alias_history(srv["client"], name)]
    assert moves == [(None, v1, moves[0][2]), (v1, winners[0], f"racer-{winners[0]}")]
    assert not lock_left(srv, name)


def test_a_lock_left_by_a_dead_promoter_is_broken_and_a_live_one_is_waited_for(srv, name, monkeypatch):
    client = srv["client"]
    v1, v2 = register(srv, name, "run-1"), register(srv, name, "run-2")
    lock = name + registry.LOCK_SUFFIX
    client.create_registered_model(
        lock, tags={"lock.token": "someone-else", "lock.who": "bob", "lock.host": "w1:42"}
    )
    monkeypatch.setattr(registry, "LOCK_WAIT_S", 0.5)
    with pytest.raises(RegistryError, match=f"another alias move holds '{re.escape(lock)}' \\(bob on w1:42"):
        registry.move_alias(client, name, CHAMPION, v1, expected_from=None, why="first")
    assert champion(srv, name) is None and lock_left(srv, name)  # nothing moved, the live lock kept

    # Bob's process died: once his lock is older than the stale age, the next mover breaks it.
    monkeypatch.setattr(registry, "LOCK_STALE_AFTER_S", 3.0)
    age_s = time.time() - client.get_registered_model(lock).creation_timestamp / 1000
    time.sleep(max(0.0, registry.LOCK_STALE_AFTER_S + 0.1 - age_s))
    registry.move_alias(client, name, CHAMPION, v1, expected_from=None, why="first")
    assert champion(srv, name) == v1 and not lock_left(srv, name)
    with pytest.raises(PromotionConflict):
        registry.move_alias(client, name, CHAMPION, v2, expected_from=None, why="stale gate")
    assert not lock_left(srv, name)  # a refused move releases the lock too


# Approval and rollback as a model owner does them: `mlops models ...` in its own process -------


def owner_workflow(tmp_path, srv, model: str, *, timeout_hours: float = 1.0) -> dict:
    """A workflow whose model is `model`, approval manual; the env a `mlops` child needs for it."""
    path = tmp_path / "workflows.yaml"
    path.write_text(
        f"workflows:\n  {model.removesuffix('_student')}:\n    labels: [billing, shipping, login]\n"
        f"    gate: {{approval: manual, approval_timeout_hours: {timeout_hours}}}\n"
    )
    return {**srv["env"], "MLOPS_WORKFLOWS_FILE": str(path)}


def mlops(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ml.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def gated(srv, name: str, key: str, *, champion_version: str | None, passed: bool = True) -> dict:
    """A version registered as register_challenger does: its gate result and decision in tags."""
    decision = decide(
        metrics(0.9 if passed else 0.1),
        metrics(0.8) if champion_version else None,
        WORKFLOW.gate,
        latency_sla_p99_ms=WORKFLOW.latency_sla_p99_ms,
        champion_version=champion_version,
    )
    version = registry.register(
        srv["client"],
        name,
        srv["model_uri"],
        srv["run_id"],
        idempotency_key=key,
        tags={
            "workflow": "tickets",
            "gate": "passed" if decision.passed else "failed",
            "gate_decision": json.dumps(decision.to_dict()),
        },
    )
    return {
        "model": name,
        "version": version,
        "passed": decision.passed,
        "champion_version": champion_version,
    }


@pytest.fixture
def owner(srv, monkeypatch, tmp_path, request):
    """A model of its own (short enough for a workflow name) with v1 as @champion, and its `mlops` env."""
    name = "own_" + hashlib.sha1(request.node.name.encode()).hexdigest()[:10] + "_student"
    timeout_hours = getattr(request, "param", 1.0)
    env = owner_workflow(tmp_path, srv, name, timeout_hours=timeout_hours)
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", env["MLOPS_WORKFLOWS_FILE"])
    v1 = register(srv, name, "run-1")
    registry.move_alias(srv["client"], name, CHAMPION, v1, expected_from=None, why="first", kind="promote")
    return {"name": name, "workflow": name.removesuffix("_student"), "env": env, "v1": v1}


def test_a_waiting_run_promotes_what_the_owner_approves_and_the_cli_does_not(srv, owner):
    name, wf, env = owner["name"], owner["workflow"], owner["env"]
    reg = gated(srv, name, f"distill__{wf}/run-2", champion_version=owner["v1"])
    run = f"distill__{wf}/run-2"
    looked = await_approval(wf, run, reg)
    assert (
        looked["state"] == "waiting" and f"mlops models approve|reject {reg['version']}" in looked["message"]
    )
    assert not promote(wf, run, reg)["promoted"]  # nothing decided: promote never moves

    approved = mlops(
        env,
        "models",
        "approve",
        reg["version"],
        "--reason",
        "reviewed the confusion matrix",
        "--who",
        "ada",
        "--workflow",
        wf,
        "--json",
    )
    assert approved.returncode == 0, approved.stderr
    out = json.loads(approved.stdout)
    assert (out["moved"], out["promoted_by"], out["decision"]["who"]) == (False, run, "ada")
    assert champion(srv, name) == owner["v1"]  # the CLI left the move to the waiting run

    looked = await_approval(wf, run, reg)
    assert (looked["state"], looked["who"], looked["why"]) == (
        "approved",
        "ada",
        "reviewed the confusion matrix",
    )
    assert promote(wf, run, reg)["promoted"] and champion(srv, name) == reg["version"]
    last = registry.alias_history(srv["client"], name)[-1]
    assert (last["from"], last["to"], last["who"], last["kind"]) == (
        owner["v1"],
        reg["version"],
        "ada",
        "promote",
    )
    assert last["why"].startswith("approved: reviewed the confusion matrix")
    assert registry.wait_of(srv["client"], name, reg["version"])["outcome"] == "approved"

    shown = json.loads(mlops(env, "models", "show", reg["version"], "--workflow", wf, "--json").stdout)
    assert shown["approval"]["who"] == "ada" and shown["gate"]["passed"] is True
    listed = json.loads(mlops(env, "models", "list", "--workflow", wf, "--json").stdout)
    assert [
        (v["version"], v["aliases"], v["gate"], (v["approval"] or {}).get("decision")) for v in listed
    ] == [(owner["v1"], [], None, None), (reg["version"], ["champion"], "passed", "approved")]


def test_a_rejection_ends_the_wait_and_promote_moves_nothing(srv, owner):
    name, wf = owner["name"], owner["workflow"]
    reg = gated(srv, name, f"distill__{wf}/run-2", champion_version=owner["v1"])
    run = f"distill__{wf}/run-2"
    assert await_approval(wf, run, reg)["state"] == "waiting"
    rejected = mlops(
        owner["env"],
        "models",
        "reject",
        reg["version"],
        "--reason",
        "misroutes refunds",
        "--who",
        "bob",
        "--workflow",
        wf,
    )
    assert rejected.returncode == 0, rejected.stderr
    assert f"DAG run {run} ends at its next look with promote skipped" in rejected.stdout
    looked = await_approval(wf, run, reg)
    assert (
        looked["state"] == "rejected"
        and "rejected by bob" in looked["message"]
        and "misroutes refunds" in looked["message"]
    )
    assert not promote(wf, run, reg)["promoted"] and champion(srv, name) == owner["v1"]


@pytest.mark.parametrize(
    "owner", [0.005], indirect=True
)  # 18 s: a loaded CI host must still see the wait open
def test_after_the_timeout_the_run_gives_up_and_approve_moves_champion_itself(srv, owner):
    name, wf = owner["name"], owner["workflow"]
    reg = gated(srv, name, f"distill__{wf}/run-2", champion_version=owner["v1"])
    run = f"distill__{wf}/run-2"
    wait = await_approval(wf, run, reg)
    assert wait["state"] == "waiting"
    time.sleep(
        max(0.0, (datetime.fromisoformat(wait["deadline"]) - datetime.now(timezone.utc)).total_seconds())
        + 0.2
    )
    looked = await_approval(wf, run, reg)
    assert looked["state"] == "timed_out"
    assert (
        "nobody approved or rejected" in looked["message"]
        and "approval_timeout_hours=0.005" in looked["message"]
    )
    assert champion(srv, name) == owner["v1"]

    approved = mlops(
        owner["env"],
        "models",
        "approve",
        reg["version"],
        "--reason",
        "late but fine",
        "--workflow",
        wf,
        "--json",
    )
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["moved"] is True and champion(srv, name) == reg["version"]


def test_approve_refuses_a_failed_gate_and_a_champion_that_moved_since_the_gate(srv, owner):
    name, wf, env = owner["name"], owner["workflow"], owner["env"]
    failed = gated(srv, name, "run-2", champion_version=owner["v1"], passed=False)
    refused = mlops(env, "models", "approve", failed["version"], "--reason", "x", "--workflow", wf)
    assert refused.returncode != 0 and f"v{failed['version']} failed its gate" in refused.stderr
    assert (
        "--override-gate" in refused.stderr
        and registry.decision_of(srv["client"], name, failed["version"]) is None
    )

    stale = gated(srv, name, "run-3", champion_version=owner["v1"])
    v4 = register(srv, name, "run-4")
    registry.move_alias(srv["client"], name, CHAMPION, v4, expected_from=owner["v1"], why="meanwhile")
    conflict = mlops(env, "models", "approve", stale["version"], "--reason", "x", "--workflow", wf)
    assert conflict.returncode != 0 and f"is now v{v4}, not v{owner['v1']}" in conflict.stderr
    assert champion(srv, name) == v4 and registry.decision_of(srv["client"], name, stale["version"]) is None
    # The owner decides against what serves now: recorded as an override.
    forced = mlops(
        env,
        "models",
        "approve",
        stale["version"],
        "--reason",
        "v4 regressed",
        "--override-gate",
        "--workflow",
        wf,
        "--json",
    )
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["move"]["from"] == v4 and champion(srv, name) == stale["version"]
    assert (
        registry.decision_of(srv["client"], name, stale["version"])["why"] == "v4 regressed (gate overridden)"
    )

    missing = mlops(env, "models", "approve", "999", "--reason", "x", "--workflow", wf)
    assert missing.returncode != 0 and f"{name} has no version 999" in missing.stderr


def test_mlops_models_rollback_twice_goes_two_champions_back(srv, owner):
    name, wf, env = owner["name"], owner["workflow"], owner["env"]
    v1, v2, v3 = owner["v1"], register(srv, name, "run-2"), register(srv, name, "run-3")
    registry.move_alias(srv["client"], name, CHAMPION, v2, expected_from=v1, why="promoted", kind="promote")
    registry.move_alias(srv["client"], name, CHAMPION, v3, expected_from=v2, why="promoted", kind="promote")
    steps = []
    for reason in ("v3 misroutes refunds", "v2 is no better"):
        done = mlops(
            env, "models", "rollback", "--reason", reason, "--who", "ada", "--workflow", wf, "--json"
        )
        assert done.returncode == 0, done.stderr
        steps.append((json.loads(done.stdout)["from"], json.loads(done.stdout)["to"], champion(srv, name)))
    assert steps == [(v3, v2, v2), (v2, v1, v1)]
    nothing = mlops(env, "models", "rollback", "--reason", "again", "--workflow", wf)
    assert nothing.returncode != 0 and f"v{v1} has no previous version to roll back to" in nothing.stderr
    assert champion(srv, name) == v1
    history = json.loads(mlops(env, "models", "history", "--workflow", wf, "--json").stdout)
    assert [(e["from"], e["to"], e["kind"]) for e in history] == [
        (None, v1, "promote"),
        (v1, v2, "promote"),
        (v2, v3, "promote"),
        (v3, v2, "rollback"),
        (v2, v1, "rollback"),
    ]
