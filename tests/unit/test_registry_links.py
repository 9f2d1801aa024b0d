"""What a model owner reads in MLflow, checked with MlflowClient on a real SQLite store: a version and
its LoggedModel linked both ways, the evaluation set as a run input with its real source and digest
and the eval metrics against the model and that dataset, the version description (gate checks with
figures and thresholds, approval, @champion), and the alias history as one line per move."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from ml import registry
from ml.config import load_settings
from ml.data.ingest import read_batch
from ml.evaluate.gate import decide
from ml.registry import CHAMPION
from ml.workflows import Gate, Workflow
from tests.unit.test_registry import TINY_MODEL  # the same one-second pyfunc


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    state = tmp_path_factory.mktemp("state")
    settings = load_settings({"MLOPS_STATE_DIR": str(state)})
    settings.ensure_dirs()
    client = registry.configure(settings)
    experiment_id = registry.ensure_experiment(settings, "links")
    code = state / "tiny_model.py"
    code.write_text(TINY_MODEL)
    yield {"settings": settings, "client": client, "experiment_id": experiment_id, "code": code}
    mlflow.set_tracking_uri(before[0])  # process-wide: leave them as other modules found them
    mlflow.set_registry_uri(before[1])


def log_model(world) -> tuple[str, str]:
    """A run with eval.* metrics and one logged model; returns (run_id, models:/m-… URI)."""
    registry.configure(world["settings"])
    with mlflow.start_run(experiment_id=world["experiment_id"]) as run:
        mlflow.log_metrics({"eval.macro_f1": 0.81, "eval.latency_p99_ms": 4.2, "train.final_loss": 0.3})
        # At its training step, as distill logs it: MLflow copies no step-0 scalar onto the model.
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(world["code"]), pip_requirements=[], step=3
        )
    return run.info.run_id, info.model_uri


def test_a_version_and_its_logged_model_are_linked_both_ways(world):
    client, name = world["client"], "links_student"
    run_id, uri = log_model(world)
    model_id = uri.removeprefix("models:/")
    v1 = registry.register(client, name, uri, run_id, idempotency_key="run-1", tags={"workflow": "links"})
    version = client.get_model_version(name, v1)
    # The version names its model by its source (the SQLite store does not keep `model_id`; a
    # server that does must hold this model's id).
    assert version.source == f"models:/{model_id}" and version.model_id in (None, model_id)
    linked = json.loads(client.get_logged_model(model_id).tags[MLFLOW_MODEL_VERSIONS])
    assert linked == [{"name": name, "version": v1}]  # the model lists its version ("Registered" in the UI)
    # A retry returns the same version and links it once.
    assert registry.register(client, name, uri, run_id, idempotency_key="run-1", tags={}) == v1
    assert json.loads(client.get_logged_model(model_id).tags[MLFLOW_MODEL_VERSIONS]) == linked
    # A link lost (a crash between the version and the tag) is put back by the retry.
    client.delete_logged_model_tag(model_id, MLFLOW_MODEL_VERSIONS)
    assert registry.register(client, name, uri, run_id, idempotency_key="run-1", tags={}) == v1
    assert json.loads(client.get_logged_model(model_id).tags[MLFLOW_MODEL_VERSIONS]) == linked


def test_description_has_every_gate_check_the_approval_and_the_champion_move(world, monkeypatch):
    client, name = world["client"], "described_student"
    run_id, uri = log_model(world)
    decision = decide(
        {
            "macro_f1": 0.81,
            "per_class_f1": {"billing": 0.7, "login": 0.9},
            "latency_p99_ms": 4.2,
            "cost_per_1k_calls_usd": 0.01,
        },
        {"macro_f1": 0.8},
        Gate(min_macro_f1=0.5),
        latency_sla_p99_ms=50.0,
        max_cost_per_1k_calls_usd=0.4,
        champion_version="1",
    ).to_dict()
    version = registry.register(
        client,
        name,
        uri,
        run_id,
        idempotency_key="run-d",
        tags={},
        description=registry.describe_gate(decision) + "\n\nServes torch_fp32.",
    )
    monkeypatch.setenv("MLOPS_USER", "ada")
    registry.record_decision(client, name, version, "approved", why="checked the confusion matrix")
    registry.move_alias(
        client, name, CHAMPION, version, expected_from=None, why="approved: checked it", kind="promote"
    )
    text = client.get_model_version(name, version).description
    assert text.startswith("**Gate:** PASSED against champion v1\n")
    for check in decision["checks"]:  # every check, its figure and its threshold
        line = next(ln for ln in text.splitlines() if f"`{check['name']}`" in ln)
        assert line.startswith("- ok ") and "observed " in line and "threshold " in line
    assert "threshold 50)" in text and "observed 4.2," in text
    assert "Serves torch_fp32." in text
    assert "**Approval:** approved by ada at " in text and text.count("**Approval:**") == 1
    # A later decision replaces the approval paragraph, it does not pile up.
    registry.record_decision(client, name, version, "rejected", why="too slow on long tickets")
    text = client.get_model_version(name, version).description
    assert text.count("**Approval:**") == 1 and "rejected by ada" in text and "approved by ada" not in text
    # A decision withdrawn (its move did not happen) leaves the one before it in the description too.
    last = registry.record_decision(client, name, version, "approved", why="second look")
    registry.withdraw_decision(
        client,
        name,
        version,
        last,
        registry.decision_of(client, name, version)
        and {
            "decision": "rejected",
            "who": "ada",
            "why": "too slow on long tickets",
            "at": "2026-01-01T00:00:00+00:00",
        },
    )
    text = client.get_model_version(name, version).description
    assert "**Approval:** rejected by ada at 2026-01-01T00:00:00+00:00" in text and "second look" not in text
    last = registry.record_decision(client, name, version, "approved", why="third look")
    registry.withdraw_decision(client, name, version, last, None)
    assert "**Approval:**" not in client.get_model_version(name, version).description
    assert (
        "**@champion:** since " in text
        and "(promote, the first champion) by ada: approved: checked it" in text
    )


def test_alias_history_is_one_short_line_per_move_and_reads_back(world, monkeypatch):
    client, name = world["client"], "history_student"
    run_id, uri = log_model(world)
    v1 = registry.register(client, name, uri, run_id, idempotency_key="h1", tags={})
    v2 = registry.register(client, name, uri, run_id, idempotency_key="h2", tags={})
    monkeypatch.setenv("MLOPS_USER", "ops:bob")  # a ':' in who cannot break the line
    first = registry.move_alias(
        client, name, CHAMPION, v1, expected_from=None, why="first\nchampion", kind="promote"
    )
    second = registry.move_alias(
        client, name, CHAMPION, v2, expected_from=v1, why="better: +2 F1", kind="promote"
    )
    tags = {k: v for k, v in client.get_registered_model(name).tags.items() if k.startswith("alias_history.")}
    assert sorted(tags) == ["alias_history.000001", "alias_history.000002"]
    assert (
        tags["alias_history.000002"]
        == f"{second['at']} @champion v{v1} → v{v2} (promote) by ops_bob: better: +2 F1"
    )
    assert all("\n" not in v and not v.startswith("{") and len(v) < 200 for v in tags.values())
    assert registry.alias_history(client, name) == [first, second]
    assert registry.champion_stack(registry.alias_history(client, name)) == [v1, v2]
    # History written as JSON before the one-line format still reads (and rolls back).
    client.set_registered_model_tag(
        name,
        "alias_history.000003",
        json.dumps(
            {
                "seq": 3,
                "alias": CHAMPION,
                "from": v2,
                "to": v1,
                "why": "rollback: old",
                "who": "eve",
                "at": "2026-01-01T00:00:00+00:00",
                "kind": "rollback",
            }
        ),
    )
    assert [e["seq"] for e in registry.alias_history(client, name)] == [1, 2, 3]


def test_eval_metrics_are_logged_against_the_model_and_the_evaluation_dataset(world, tmp_path):
    from ml.pipeline.distill import _link_evaluation
    from ml.pipeline.ingest_validate import store_for

    settings, wf = world["settings"], Workflow(name="links", labels=("billing", "login"))
    store = store_for(settings, wf)
    gold = tmp_path / "gold.csv"
    pd.DataFrame({"text": ["refund please", "reset my password"], "label": ["billing", "login"]}).to_csv(
        gold, index=False
    )
    eval_version = store.accept(
        read_batch(gold, text_col="text", label_col="label", mask=False), role="eval"
    )["version"]
    run_id, uri = log_model(world)
    model_id = uri.removeprefix("models:/")
    for _ in range(2):  # the second call is an Airflow retry: nothing is logged twice
        _link_evaluation(settings, wf, run_id, uri, {"eval_version": eval_version})
    client = MlflowClient()
    inputs = [
        i
        for i in client.get_run(run_id).inputs.dataset_inputs
        if any(t.key == "mlflow.data.context" and t.value == "evaluation" for t in i.tags)
    ]
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest) == ("links-eval", eval_version)
    # The source is where the bytes live: the version's object on the DVC remote.
    source = json.loads(dataset.source)["uri"]
    assert (
        source == store.source_url(eval_version)
        and open(source, "rb").read() == store.path("eval").read_bytes()
    )
    assert not [m for m in client.get_logged_model(model_id).metrics if not m.dataset_digest]  # once each
    metrics = [m for m in client.get_logged_model(model_id).metrics if m.dataset_digest]
    assert sorted(m.key for m in metrics) == [
        "eval.latency_p99_ms",
        "eval.macro_f1",
    ]  # not train.*, once each
    assert {(m.dataset_name, m.dataset_digest, m.run_id) for m in metrics} == {
        ("links-eval", eval_version, run_id)
    }
    assert next(m.value for m in metrics if m.key == "eval.macro_f1") == pytest.approx(0.81)
