"""Registry commands tell the truth under races (issue 16.7), on a real SQLite MLflow registry.

The race is made deterministic: the command's move is preceded by a competing one (another
owner's rollback, another promotion) exactly between the command's checks and its move.
A command whose move did not happen says "unchanged" or fails, and records nothing.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from ml import registry
from ml.cli import build_parser
from ml.registry import CHAMPION

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = """
import mlflow
from mlflow.pyfunc import PythonModel


class Echo(PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


mlflow.models.set_model(Echo())
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite registry and one logged model for the module (the slow part, done once)."""
    from ml.config import load_settings
    from ml.workflows import load_workflows

    root = tmp_path_factory.mktemp("registry")
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLOPS_STATE_DIR", str(root / "state"))
        env.setenv("MLOPS_WORKFLOWS_FILE", str(ROOT / "dags" / "workflows.yaml"))
        settings = load_settings()
        settings.ensure_dirs()
        wf = next(iter(load_workflows(settings.workflows_file).values()))
        client = registry.configure(settings)
        code = root / "tiny_model.py"
        code.write_text(TINY_MODEL)
        with mlflow.start_run(experiment_id=registry.ensure_experiment(settings, wf.name)) as run:
            info = mlflow.pyfunc.log_model(name="model", python_model=str(code), pip_requirements=[])
        yield settings, client, wf, info.model_uri, run.info.run_id
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


@pytest.fixture
def world(store, monkeypatch):
    """The workflow's registered model afresh: three versions that passed their gate, no alias."""
    settings, client, wf, model_uri, run_id = store
    monkeypatch.setenv("MLOPS_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(settings.workflows_file))
    registry.configure(settings)
    try:
        client.delete_registered_model(wf.model_name)
    except mlflow.exceptions.MlflowException:
        pass  # the first test
    versions = [
        registry.register(
            client, wf.model_name, model_uri, run_id, idempotency_key=f"k{i}", tags={"gate": "passed"}
        )
        for i in (1, 2, 3)
    ]
    return client, wf, versions


def run(*argv) -> tuple[int, str]:
    args = build_parser().parse_args(list(argv))
    return args.func(args)


def race_before_first_move(monkeypatch, competitor):
    """Run `competitor` once, just before the command's own move_alias."""
    original = registry.move_alias
    done = []

    def move_alias(*args, **kwargs):
        if not done:
            done.append(True)
            competitor(original)
        return original(*args, **kwargs)

    monkeypatch.setattr(registry, "move_alias", move_alias)


def test_concurrent_rollbacks_move_once_and_the_late_one_says_unchanged(world, monkeypatch, capsys):
    client, wf, (v1, v2, _) = world
    registry.move_alias(client, wf.model_name, CHAMPION, v1, expected_from=None, why="first")
    registry.move_alias(client, wf.model_name, CHAMPION, v2, expected_from=v1, why="second")
    # Another owner's rollback of the same champion lands between our look and our move.
    race_before_first_move(
        monkeypatch,
        lambda move: move(
            client,
            wf.model_name,
            CHAMPION,
            v1,
            expected_from=v2,
            why="rollback: ada's reason",
            who="ada",
            kind="rollback",
        ),
    )
    assert run("models", "rollback", "--reason", "bob's reason", "--who", "bob") == 0
    out = capsys.readouterr().out
    assert out.startswith("unchanged:") and "bob's reason" not in out and "ada" in out
    rollbacks = [e for e in registry.alias_history(client, wf.model_name) if e.get("kind") == "rollback"]
    assert [(e["who"], e["why"]) for e in rollbacks] == [("ada", "rollback: ada's reason")]


def test_an_approve_that_loses_the_race_records_no_decision(world, monkeypatch):
    client, wf, (v1, v2, v3) = world
    registry.move_alias(client, wf.model_name, CHAMPION, v1, expected_from=None, why="first")
    client.set_model_version_tag(wf.model_name, v3, "gate_decision", f'{{"champion_version": "{v1}"}}')
    # v2 is promoted by someone else while our approve of v3 is between its check and its move.
    race_before_first_move(
        monkeypatch, lambda move: move(client, wf.model_name, CHAMPION, v2, expected_from=v1, why="other")
    )
    with pytest.raises(registry.PromotionConflict, match="Nothing recorded"):
        run("models", "approve", v3, "--reason", "looks good")
    assert registry.decision_of(client, wf.model_name, v3) is None
    assert str(registry.version_by_alias(client, wf.model_name, CHAMPION).version) == v2


def test_approving_the_champion_again_is_unchanged_and_records_nothing(world, capsys):
    client, wf, (v1, _, _) = world
    registry.move_alias(client, wf.model_name, CHAMPION, v1, expected_from=None, why="first")
    assert run("models", "approve", v1, "--reason", "again") == 0
    assert capsys.readouterr().out.startswith("unchanged:")
    assert registry.decision_of(client, wf.model_name, v1) is None
