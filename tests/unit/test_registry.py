"""The MLflow registry on a real SQLite store: idempotent registration, compare-and-set aliases,
alias history and rollback."""

from __future__ import annotations

import hashlib
import multiprocessing
import re
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from ml import registry
from ml.config import load_settings
from ml.registry import CHALLENGER, CHAMPION, PromotionConflict, RegistryError

# A models-from-code pyfunc small enough to log in a second: MLflow runs this file to load it.
TINY_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


mlflow.models.set_model(Echo())
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A settings object on a fresh state folder, its SQLite registry, and one logged model."""
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    state = tmp_path_factory.mktemp("state")
    settings = load_settings({"MLOPS_STATE_DIR": str(state)})
    settings.ensure_dirs()
    client = registry.configure(settings)
    experiment_id = registry.ensure_experiment(settings, "tickets")
    code = state / "tiny_model.py"
    code.write_text(TINY_MODEL)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=str(code), pip_requirements=[])
    yield {
        "settings": settings,
        "client": client,
        "model_uri": info.model_uri,
        "run_id": run.info.run_id,
        "experiment_id": experiment_id,
    }
    mlflow.set_tracking_uri(before[0])  # the URIs are process-wide: leave them as other modules found them
    mlflow.set_registry_uri(before[1])


@pytest.fixture
def client(store) -> MlflowClient:
    registry.configure(store["settings"])  # another module may have pointed MLflow elsewhere
    return store["client"]


@pytest.fixture
def name(request) -> str:
    """A registered model of its own for each test (and each parameter)."""
    node = request.node.name
    return f"{re.sub(r'[^a-z0-9]+', '_', node[5:40])}_{hashlib.sha1(node.encode()).hexdigest()[:6]}_student"


def register(store, client, name, key, **tags) -> str:
    return registry.register(
        client,
        name,
        store["model_uri"],
        store["run_id"],
        idempotency_key=key,
        tags={"workflow": "tickets", **tags},
    )


def test_the_experiment_is_created_once_under_the_artifact_root(store, client):
    assert registry.ensure_experiment(store["settings"], "tickets") == store["experiment_id"]
    location = client.get_experiment(store["experiment_id"]).artifact_location
    assert location == (Path(store["settings"].mlflow_artifact_root) / "tickets").as_uri()


@pytest.mark.parametrize(
    "root, expected",
    [
        ("s3://bucket/mlflow/", "s3://bucket/mlflow/{wf}"),
        ("mlflow-artifacts:/", "mlflow-artifacts:/{wf}"),  # what docker-compose sets: a proxied root
    ],
)
def test_a_remote_artifact_root_is_used_as_is(store, client, root, expected):
    settings = load_settings(
        {"MLOPS_STATE_DIR": str(store["settings"].state_dir), "MLOPS_MLFLOW_ARTIFACT_ROOT": root}
    )
    workflow = "remote_" + str(abs(hash(root)))[:8]
    experiment_id = registry.ensure_experiment(settings, workflow)
    assert client.get_experiment(experiment_id).artifact_location == expected.format(wf=workflow)


def test_register_is_idempotent_per_key(store, client, name):
    first = register(store, client, name, "run-1", dataset_version="abc")
    assert register(store, client, name, "run-1") == first == "1"
    second = register(store, client, name, "run-2")
    assert second == "2"
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(v.version for v in versions) == ["1", "2"] or sorted(int(v.version) for v in versions) == [
        1,
        2,
    ]
    tags = client.get_model_version(name, first).tags
    assert tags["idempotency_key"] == "run-1" and tags["dataset_version"] == "abc"
    assert client.get_registered_model(name).tags["workflow"] == "tickets"
    listed = registry.list_versions(client, name)
    assert [v["version"] for v in listed] == ["1", "2"] and listed[0]["dataset_version"] == "abc"


# Two processes registering the same key at once (an Airflow retry racing a stuck attempt).
RACERS = 3


def register_in_child(uri, model_uri, run_id, name, barrier, results):
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    client.search_registered_models(max_results=1)  # connect before the race, not during it
    barrier.wait()
    results.put(
        registry.register(
            client, name, model_uri, run_id, idempotency_key="same-run", tags={"workflow": "tickets"}
        )
    )


def test_concurrent_registrations_of_one_key_leave_exactly_one_version(store, tmp_path):
    # A copy of the store that this process never opened: forked children share no connection.
    db = Path(store["settings"].mlflow_tracking_uri.removeprefix("sqlite:///"))
    race_uri = f"sqlite:///{shutil.copy(db, tmp_path / 'race.db')}"
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(RACERS), context.Queue()
    racers = [
        context.Process(
            target=register_in_child,
            args=(race_uri, store["model_uri"], store["run_id"], "raced_student", barrier, results),
        )
        for _ in range(RACERS)
    ]
    for p in racers:
        p.start()
    for p in racers:
        p.join(timeout=120)
    assert [p.exitcode for p in racers] == [0] * RACERS
    returned = {results.get(timeout=5) for _ in range(RACERS)}

    mlflow.set_tracking_uri(race_uri)
    mlflow.set_registry_uri(race_uri)
    try:
        remaining = MlflowClient().search_model_versions("name='raced_student'")
    finally:
        registry.configure(store["settings"])
    assert len(remaining) == 1
    assert returned == {str(remaining[0].version)}


def test_move_alias_is_compare_and_set(client, store, name):
    v1, v2, v3 = (register(store, client, name, f"k{i}") for i in (1, 2, 3))
    registry.move_alias(client, name, CHAMPION, v1, expected_from=None, why="first", who="ada")
    registry.move_alias(
        client, name, CHAMPION, v2, expected_from=int(v1), why="better", who="ada"
    )  # int or str
    for stale in (None, v1, v3):
        with pytest.raises(PromotionConflict, match=f"@champion of {name} is now v{v2}"):
            registry.move_alias(client, name, CHAMPION, v3, expected_from=stale, why="stale gate", who="bob")
    assert registry.version_by_alias(client, name, CHAMPION).version in (v2, int(v2))
    assert [e["to"] for e in registry.alias_history(client, name)] == [v1, v2]  # refused moves left no trace


def test_every_move_is_recorded_with_who_why_from_to_and_seq(client, store, name, monkeypatch):
    v1, v2 = register(store, client, name, "k1"), register(store, client, name, "k2")
    monkeypatch.setenv("MLOPS_USER", "airflow-worker")
    registry.move_alias(client, name, CHALLENGER, v1, expected_from=None, why="new candidate")
    registry.move_alias(client, name, CHAMPION, v1, expected_from=None, why="gate passed", who="ada")
    entry = registry.move_alias(
        client, name, CHAMPION, v2, expected_from=v1, why="gate passed again", who="ada"
    )
    history = registry.alias_history(client, name)
    assert history[-1] == entry
    assert [(e["seq"], e["alias"], e["from"], e["to"], e["who"], e["why"]) for e in history] == [
        (1, CHALLENGER, None, v1, "airflow-worker", "new candidate"),
        (2, CHAMPION, None, v1, "ada", "gate passed"),
        (3, CHAMPION, v1, v2, "ada", "gate passed again"),
    ]
    assert all(e["at"].endswith("+00:00") for e in history)


def test_rollback_restores_the_previous_champion_and_records_it(client, store, name):
    v1, v2 = register(store, client, name, "k1"), register(store, client, name, "k2")
    registry.move_alias(client, name, CHAMPION, v1, expected_from=None, why="first")
    registry.move_alias(client, name, CHALLENGER, v2, expected_from=None, why="candidate")
    registry.move_alias(client, name, CHAMPION, v2, expected_from=v1, why="promoted")
    entry = registry.rollback(client, name, why="complaints since v2", who="ada")
    assert str(registry.version_by_alias(client, name, CHAMPION).version) == v1
    assert (entry["from"], entry["to"], entry["who"]) == (v2, v1, "ada")
    assert entry["why"] == "rollback: complaints since v2"
    assert registry.alias_history(client, name)[-1] == entry and entry["seq"] == 4


@pytest.mark.parametrize(
    "moves, refusal",
    [
        ([], "no version is @champion, so there is nothing to roll back"),  # never promoted
        ([(CHAMPION, None, "first")], "v1 has no previous version to roll back to"),  # nothing before it
        ([(CHALLENGER, None, "cand")], "no version is @champion"),  # only the challenger moved
    ],
)
def test_rollback_without_a_previous_champion_is_refused(client, store, name, moves, refusal):
    v1 = register(store, client, name, "k1")
    for alias, expected, why in moves:
        registry.move_alias(client, name, alias, v1, expected_from=expected, why=why)
    with pytest.raises(RegistryError, match=refusal):
        registry.rollback(client, name, why="oops")
    assert len(registry.alias_history(client, name)) == len(moves)


def test_rolling_back_twice_goes_two_champions_back_then_says_there_is_nothing_left(client, store, name):
    v1, v2, v3 = (register(store, client, name, f"k{i}") for i in (1, 2, 3))
    for expected, to in ((None, v1), (v1, v2), (v2, v3)):
        registry.move_alias(
            client, name, CHAMPION, to, expected_from=expected, why="promoted", kind="promote"
        )
    first = registry.rollback(client, name, why="v3 misroutes refunds", who="ada")
    second = registry.rollback(client, name, why="v2 too", who="ada")
    assert (first["from"], first["to"], second["from"], second["to"]) == (v3, v2, v2, v1)  # not back to v3
    assert str(registry.version_by_alias(client, name, CHAMPION).version) == v1
    with pytest.raises(
        RegistryError,
        match=r"v1 has no previous version.*rolled back from are not rollback "
        r"targets \(v2, v3\)",
    ):
        registry.rollback(client, name, why="once more")
    # A new promotion is a champion to fall back from again.
    registry.move_alias(
        client, name, CHAMPION, v3, expected_from=v1, why="fixed and re-approved", kind="promote"
    )
    assert registry.rollback(client, name, why="no, still bad")["to"] == v1


def test_rollback_passes_over_a_deleted_version(client, store, name):
    v1, v2, v3 = (register(store, client, name, f"k{i}") for i in (1, 2, 3))
    for expected, to in ((None, v1), (v1, v2), (v2, v3)):
        registry.move_alias(client, name, CHAMPION, to, expected_from=expected, why="promoted")
    client.delete_model_version(name, v2)
    assert registry.rollback(client, name, why="v3 is bad")["to"] == v1


def test_rollback_refuses_when_the_alias_was_moved_outside_the_history(client, store, name):
    v1, v2, v3 = (register(store, client, name, f"k{i}") for i in (1, 2, 3))
    registry.move_alias(client, name, CHAMPION, v1, expected_from=None, why="first")
    registry.move_alias(client, name, CHAMPION, v2, expected_from=v1, why="second")
    client.set_registered_model_alias(name, CHAMPION, v3)  # the MLflow UI, say
    with pytest.raises(RegistryError, match="@champion is v3, but the alias history says v2"):
        registry.rollback(client, name, why="oops")
    assert str(registry.version_by_alias(client, name, CHAMPION).version) == v3


def _moves(*moves) -> list[dict]:
    return [{"alias": alias, "from": frm, "to": to, "kind": kind} for alias, frm, to, kind in moves]


# (history, champions left to fall back on): a promotion pushes, a rollback pops.
STACKS = {
    "nothing": ([], []),
    "promotions": (_moves((CHAMPION, None, "1", "promote"), (CHAMPION, "1", "2", "promote")), ["1", "2"]),
    "challenger moves do not count": (
        _moves((CHALLENGER, None, "1", "challenger"), (CHAMPION, None, "1", "promote")),
        ["1"],
    ),
    "a rollback pops": (
        _moves(
            (CHAMPION, None, "1", "promote"),
            (CHAMPION, "1", "2", "promote"),
            (CHAMPION, "2", "1", "rollback"),
        ),
        ["1"],
    ),
    "promoted again after a rollback": (
        _moves(
            (CHAMPION, None, "1", "promote"),
            (CHAMPION, "1", "2", "promote"),
            (CHAMPION, "2", "1", "rollback"),
            (CHAMPION, "1", "3", "promote"),
        ),
        ["1", "3"],
    ),
    # Entries written before `kind` existed: the reason says rollback.
    "an old rollback entry": (
        [
            {"alias": CHAMPION, "from": None, "to": "1", "why": "gate passed"},
            {"alias": CHAMPION, "from": "1", "to": "2", "why": "gate passed"},
            {"alias": CHAMPION, "from": "2", "to": "1", "why": "rollback: bad"},
        ],
        ["1"],
    ),
    # The old rollback flipped back to the version it had left: both were rolled back from.
    "an old flip": (
        _moves(
            (CHAMPION, None, "1", "promote"),
            (CHAMPION, "1", "2", "promote"),
            (CHAMPION, "2", "1", "rollback"),
            (CHAMPION, "1", "2", "rollback"),
        ),
        ["2"],
    ),
}


@pytest.mark.parametrize("history, stack", STACKS.values(), ids=STACKS.keys())
def test_champion_stack(history, stack):
    assert registry.champion_stack(history) == stack


def test_a_model_that_does_not_exist_gives_registry_errors(client):
    assert registry.version_by_alias(client, "never_registered_student", CHAMPION) is None
    with pytest.raises(RegistryError, match="no registered model 'never_registered_student'"):
        registry.alias_history(client, "never_registered_student")


def test_a_move_to_where_the_alias_points_already_is_done_and_recorded_once(client, store, name):
    v1 = register(store, client, name, "k1")
    first = registry.move_alias(
        client, name, CHAMPION, v1, expected_from=None, why="approved", kind="promote"
    )
    # The same decision carried out a second time (a retry, or the CLI and the DAG both): no move.
    again = registry.move_alias(
        client, name, CHAMPION, v1, expected_from=None, why="approved", kind="promote"
    )
    assert again == {**first, "unchanged": True}
    assert registry.alias_history(client, name) == [first]


def test_a_decision_and_a_wait_are_kept_on_the_version(client, store, name, monkeypatch):
    from datetime import datetime, timedelta, timezone

    v1 = register(store, client, name, "k1")
    assert registry.decision_of(client, name, v1) is None and registry.wait_of(client, name, v1) is None
    wait = registry.open_wait(client, name, v1, run_key="distill__t/run-1", timeout_s=3600)
    assert registry.is_waiting(wait) and wait["state"] == "waiting"
    assert datetime.fromisoformat(wait["deadline"]) - datetime.fromisoformat(wait["since"]) == timedelta(
        hours=1
    )
    # A later look of the same run keeps its deadline; nothing is decided yet.
    # (only the look that opened it says so: the notifier tells the model owners once)
    assert wait.pop("opened") is True
    assert registry.open_wait(client, name, v1, run_key="distill__t/run-1", timeout_s=60) == wait

    monkeypatch.setenv("MLOPS_USER", "ada")
    record = registry.record_decision(client, name, v1, "approved", why="  reviewed the confusion matrix ")
    assert registry.decision_of(client, name, v1) == record
    assert (record["decision"], record["who"], record["why"]) == (
        "approved",
        "ada",
        "reviewed the confusion matrix",
    )
    with pytest.raises(RegistryError, match="needs a reason"):
        registry.record_decision(client, name, v1, "rejected", why=" ")
    with pytest.raises(ValueError, match="not one of approved, rejected"):
        registry.record_decision(client, name, v1, "maybe", why="x")

    ended = registry.close_wait(client, name, v1, "approved")
    assert registry.wait_of(client, name, v1) == ended and ended["outcome"] == "approved"
    assert not registry.is_waiting(ended)
    # A run cleared after its wait ended waits anew.
    assert (
        registry.open_wait(client, name, v1, run_key="distill__t/run-1", timeout_s=60)["state"] == "waiting"
    )
    # A wait whose deadline is long past was left by a run that stopped: nobody waits.
    past = datetime.now(timezone.utc) + timedelta(seconds=60 + 2 * registry.WAIT_POLL_MAX_S + 1)
    assert not registry.is_waiting(registry.wait_of(client, name, v1), now=past)
