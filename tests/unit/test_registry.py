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
from ml.registry import CHAMPION, CHALLENGER, PromotionConflict, RegistryError

# A models-from-code pyfunc small enough to log in a second: MLflow runs this file to load it.
TINY_MODEL = '''
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        return model_input


mlflow.models.set_model(Echo())
'''


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
    yield {"settings": settings, "client": client, "model_uri": info.model_uri, "run_id": run.info.run_id,
           "experiment_id": experiment_id}
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
    return registry.register(client, name, store["model_uri"], store["run_id"], idempotency_key=key,
                             tags={"workflow": "tickets", **tags})


def test_the_experiment_is_created_once_under_the_artifact_root(store, client):
    assert registry.ensure_experiment(store["settings"], "tickets") == store["experiment_id"]
    location = client.get_experiment(store["experiment_id"]).artifact_location
    assert location == (Path(store["settings"].mlflow_artifact_root) / "tickets").as_uri()


@pytest.mark.parametrize("root, expected", [
    ("s3://bucket/mlflow/", "s3://bucket/mlflow/{wf}"),
    ("mlflow-artifacts:/", "mlflow-artifacts:/{wf}"),   # what docker-compose sets: a proxied root
])
def test_a_remote_artifact_root_is_used_as_is(store, client, root, expected):
    settings = load_settings({"MLOPS_STATE_DIR": str(store["settings"].state_dir), "MLOPS_MLFLOW_ARTIFACT_ROOT": root})
    workflow = "remote_" + str(abs(hash(root)))[:8]
    experiment_id = registry.ensure_experiment(settings, workflow)
    assert client.get_experiment(experiment_id).artifact_location == expected.format(wf=workflow)


def test_register_is_idempotent_per_key(store, client, name):
    first = register(store, client, name, "run-1", dataset_version="abc")
    assert register(store, client, name, "run-1") == first == "1"
    second = register(store, client, name, "run-2")
    assert second == "2"
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(v.version for v in versions) == ["1", "2"] or sorted(int(v.version) for v in versions) == [1, 2]
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
    results.put(registry.register(client, name, model_uri, run_id, idempotency_key="same-run",
                                  tags={"workflow": "tickets"}))


def test_concurrent_registrations_of_one_key_leave_exactly_one_version(store, tmp_path):
    # A copy of the store that this process never opened: forked children share no connection.
    db = Path(store["settings"].mlflow_tracking_uri.removeprefix("sqlite:///"))
    race_uri = f"sqlite:///{shutil.copy(db, tmp_path / 'race.db')}"
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(RACERS), context.Queue()
    racers = [context.Process(target=register_in_child,
                              args=(race_uri, store["model_uri"], store["run_id"], "raced_student", barrier, results))
              for _ in range(RACERS)]
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
    registry.move_alias(client, name, CHAMPION, v2, expected_from=int(v1), why="better", who="ada")  # int or str
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
    entry = registry.move_alias(client, name, CHAMPION, v2, expected_from=v1, why="gate passed again", who="ada")
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


@pytest.mark.parametrize("moves", [
    [],                              # never promoted
    [(CHAMPION, None, "first")],     # the first champion has nothing before it
    [(CHALLENGER, None, "cand")],    # only the challenger ever moved
])
def test_rollback_without_a_previous_champion_is_refused(client, store, name, moves):
    v1 = register(store, client, name, "k1")
    for alias, expected, why in moves:
        registry.move_alias(client, name, alias, v1, expected_from=expected, why=why)
    with pytest.raises(RegistryError, match="no previous version to roll back to"):
        registry.rollback(client, name, why="oops")
    assert len(registry.alias_history(client, name)) == len(moves)


def test_a_model_that_does_not_exist_gives_registry_errors(client):
    assert registry.version_by_alias(client, "never_registered_student", CHAMPION) is None
    with pytest.raises(RegistryError, match="no registered model 'never_registered_student'"):
        registry.alias_history(client, "never_registered_student")
