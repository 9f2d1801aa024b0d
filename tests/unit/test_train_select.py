"""student_layers: auto and training.search (ml/train/select.py), on tiny random-init BERTs.

Which depth or trial wins is decided by validation scores; the deterministic tests inject them
(and the latencies) through train_selected's `score` and `measure_latency` seams, so nothing
asserted depends on training noise or machine load. One run per feature goes end to end unseamed.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from conftest import make_tiny_bert

from ml.train.select import (
    allowed_depths,
    candidate_depths,
    pick_depth,
    search_settings,
    train_selected,
)
from ml.workflows import Search, Training, WorkflowError, load_workflows
from tests.unit.test_train_loop import LABEL_NAMES, LABELS, PROBS, TEXTS, run
from tests.unit.test_workflows import with_changes, write

FAST = Training(
    max_epochs=2, batch_size=8, max_length=16, learning_rate=3e-3, patience=0, checkpoint_every=100
)


@pytest.fixture(scope="module")
def six_layers(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("six_layers"), num_layers=6)


@pytest.fixture(autouse=True, scope="module")
def _restore_torch_threads():
    before = torch.get_num_threads()  # train_student(threads=1) sets it process-wide
    yield
    torch.set_num_threads(before)


def select(base_dir, out_dir, cfg, **kwargs):
    return train_selected(
        base_dir=base_dir,
        texts=TEXTS,
        teacher_probs=PROBS,
        hard_labels=LABELS,
        label_names=LABEL_NAMES,
        cfg=cfg,
        out_dir=out_dir,
        device="cpu",
        threads=1,
        log=lambda m: None,
        **kwargs,
    )


def layers_of(model_dir) -> int:
    return json.loads((model_dir / "config.json").read_text())["num_hidden_layers"]


# The workflow keys -------------------------------------------------------------------------------


def test_the_keys_load_and_the_defaults_are_todays_behaviour(tmp_path):
    wf = load_workflows(write(tmp_path, with_changes()))["tickets"]
    assert wf.training.student_layers == 0 and wf.training.search is None
    assert wf.training.student_layers_tolerance == 0.01
    doc = with_changes(
        training__student_layers="auto",
        training__student_layers_tolerance=0.02,
        training__search={"trials": 3, "timeout_s": 60},
    )
    training = load_workflows(write(tmp_path, doc))["tickets"].training
    assert training.student_layers == "auto" and training.student_layers_tolerance == 0.02
    assert training.search == Search(trials=3, timeout_s=60.0)
    assert (
        load_workflows(write(tmp_path, with_changes(training__student_layers=3)))[
            "tickets"
        ].training.student_layers
        == 3
    )
    assert (
        load_workflows(write(tmp_path, with_changes(training__search=None)))["tickets"].training.search
        is None
    )
    assert (
        load_workflows(write(tmp_path, with_changes(training__search={})))["tickets"].training.search
        == Search()
    )


@pytest.mark.parametrize(
    "doc, names",
    [
        (with_changes(training__student_layers="three"), "training.student_layers: 'three' is invalid"),
        (with_changes(training__student_layers="Auto"), "training.student_layers: 'Auto' is invalid"),
        (with_changes(training__student_layers=-1), "training.student_layers: -1 is out of range"),
        (with_changes(training__student_layers_tolerance=-0.1), "training.student_layers_tolerance: -0.1"),
        (with_changes(training__student_layers_tolerance=2), "training.student_layers_tolerance: 2.0"),
        (with_changes(training__search={"trials": 0}), "training.search.trials: 0 is out of range"),
        (with_changes(training__search={"trials": 2.5}), "training.search.trials: 2.5 is invalid"),
        (with_changes(training__search={"timeout_s": 0}), "training.search.timeout_s: 0.0 is out of range"),
        (with_changes(training__search={"trial": 3}), "training.search: unknown key 'trial'"),
        (with_changes(training__search=5), "training.search: expected a mapping"),
        (
            with_changes(training__student_layers="auto", training__validation_fraction=0),
            "training.validation_fraction: 0 leaves no validation split for student_layers: auto",
        ),
        (
            with_changes(training__search={"trials": 2}, training__validation_fraction=0),
            "training.validation_fraction: 0 leaves no validation split for search",
        ),
    ],
)
def test_bad_values_are_refused_at_load_naming_the_field(tmp_path, doc, names):
    with pytest.raises(WorkflowError) as err:
        load_workflows(write(tmp_path, doc))
    assert names in str(err.value), str(err.value)


def test_train_student_refuses_an_unresolved_choice(tiny_base_model, tmp_path):
    with pytest.raises(ValueError, match="train_selected"):
        run(tiny_base_model, tmp_path, cfg=Training(student_layers="auto"))


# student_layers: auto ----------------------------------------------------------------------------


def test_candidate_depths_are_fractions_of_the_base():
    assert candidate_depths(6) == [2, 3, 4, 6]
    assert candidate_depths(12) == [4, 6, 8, 12]
    assert candidate_depths(2) == [1, 2]
    assert candidate_depths(1) == [1]


def test_the_sla_allows_depths_measuring_the_largest_first():
    asked = []

    def measure(depths):
        asked.append(list(depths))
        return {d: 10.0 * d for d in depths}

    assert allowed_depths([2, 3, 4, 6], 100.0, measure) == ([2, 3, 4, 6], {6: 60.0})
    assert asked == [[6]]  # it fits: a shallower student is never slower, nothing else is measured
    allowed, p99 = allowed_depths([2, 3, 4, 6], 35.0, measure)
    assert allowed == [2, 3] and p99 == {2: 20.0, 3: 30.0, 4: 40.0, 6: 60.0}


def test_pick_depth_keeps_the_smallest_within_tolerance_and_trains_no_deeper():
    scores = {2: 0.80, 3: 0.895, 4: 0.90, 6: 0.90}
    trained = []

    def score_of(depth):
        trained.append(depth)
        return scores[depth]

    depth, tried, reason = pick_depth([2, 3, 4, 6], 0.01, score_of)
    assert depth == 3 and trained == [6, 2, 3] and tried == {6: 0.90, 2: 0.80, 3: 0.895}
    assert reason.startswith("3 layers: the smallest allowed depth") and "2 layers 0.8000" in reason
    depth, tried, reason = pick_depth([2, 3, 4, 6], 0.001, lambda d: scores[d])
    assert depth == 4  # 0.895 is not within 0.001 of 0.90; 4 ties the largest
    depth, _, reason = pick_depth([2, 3, 6], 0.001, lambda d: scores[d])
    assert depth == 6 and "no smaller allowed depth" in reason


def test_auto_trains_the_allowed_depths_and_keeps_the_smallest_within_tolerance(six_layers, tmp_path):
    # Injected: validation macro-F1 by depth, and latencies that rule out 6 (SLA 45 ms).
    scores = {2: 0.70, 3: 0.88, 4: 0.90}
    selection = select(
        six_layers,
        tmp_path,
        replace(FAST, student_layers="auto", student_layers_tolerance=0.025),
        latency_sla_p99_ms=45.0,
        measure_latency=lambda depths: {d: 10.0 * d for d in depths},
        score=lambda cfg, result: scores[cfg.student_layers],
    )
    auto = selection.record["auto"]
    assert auto["candidates"] == [2, 3, 4, 6] and auto["allowed"] == [2, 3, 4]
    assert auto["tried"] == [4, 2, 3] and auto["chosen"] == 3 and selection.cfg.student_layers == 3
    assert layers_of(selection.result.model_dir) == 3 and selection.result.model_dir == tmp_path / "model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the other trainings are deleted
    params, tags, curves = selection.mlflow_fields()
    assert params["auto.tried"] == "4,2,3" and params["auto.chosen_layers"] == 3
    assert "3 layers: the smallest allowed depth" in tags["auto.reason"]
    assert curves["auto.val_macro_f1"] == [(4, 0.90), (2, 0.70), (3, 0.88)]
    assert curves["auto.latency_p99_ms"] == [(2, 20.0), (3, 30.0), (4, 40.0), (6, 60.0)]
    logged = log_to_mlflow(tmp_path / "state", params, tags, curves)
    assert (
        logged.data.params["auto.allowed"] == "2,3,4"
        and logged.data.tags["auto.reason"] == tags["auto.reason"]
    )
    assert logged.data.metrics["auto.val_macro_f1"] == 0.90  # MLflow shows the highest step: depth 4


def log_to_mlflow(state, params, tags, curves):
    """Through the distill task's own batch logger, into a fresh SQLite MLflow; the run as read back."""
    import mlflow

    from ml import registry
    from ml.config import load_settings
    from ml.pipeline.distill import _log_batch

    before = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    try:
        settings = load_settings({"MLOPS_STATE_DIR": str(state)})
        settings.ensure_dirs()
        client = registry.configure(settings)
        run = client.create_run(registry.ensure_experiment(settings, "tickets"))
        _log_batch(run.info.run_id, params=params, tags=tags, curves=curves)
        return client.get_run(run.info.run_id)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def test_auto_end_to_end_with_measured_latency_and_real_scores(tiny_base_model, tmp_path):
    cfg = replace(FAST, student_layers="auto", validation_fraction=0.2)
    selection = select(tiny_base_model, tmp_path, cfg, latency_sla_p99_ms=10_000.0)
    auto = selection.record["auto"]
    assert auto["candidates"] == [1, 2] and auto["allowed"] == [1, 2]
    assert auto["latency_p99_ms"][2] > 0  # measured by ml.evaluate.latency, in its own process
    scores = auto["val_macro_f1"]
    expected = 1 if scores[2] - scores[1] <= cfg.student_layers_tolerance else 2
    assert auto["chosen"] == expected == layers_of(selection.result.model_dir)
    assert selection.result.best_val_macro_f1 == scores[expected]


# training.search ---------------------------------------------------------------------------------


def peak_at(lr: float, epochs: float) -> float:
    """A made-up validation score, best at learning_rate 3e-4 and 2 epochs."""
    return 1.0 - abs(math.log10(lr / 3e-4)) - 0.1 * abs(epochs - 2)


def test_the_search_is_seeded_and_starts_from_the_declared_settings():
    def runs(seed):
        return search_settings(
            Training(max_epochs=4, learning_rate=2e-4),
            Search(trials=6),
            lambda name, cfg: peak_at(cfg.learning_rate, cfg.max_epochs),
            seed,
        )

    best, trials = runs(7)
    assert len(trials) == 6 and trials[0]["learning_rate"] == 2e-4 and trials[0]["max_epochs"] == 4
    assert runs(7) == (best, trials)
    assert best == f"trial-{max(trials, key=lambda t: t['val_macro_f1'])['trial']}"
    assert all(1e-5 <= t["learning_rate"] <= 1e-3 and 1 <= t["max_epochs"] <= 4 for t in trials)


def test_the_search_runs_n_trials_and_keeps_the_best_validation_score(tiny_base_model, tmp_path):
    cfg = replace(FAST, search=Search(trials=3, timeout_s=600))
    selection = select(
        tiny_base_model, tmp_path, cfg, score=lambda c, result: peak_at(c.learning_rate, c.max_epochs)
    )
    trials = selection.record["search"]["trials"]
    assert len(trials) == 3 and all(t["state"] == "COMPLETE" for t in trials)
    best = max(trials, key=lambda t: t["val_macro_f1"])
    assert selection.cfg.learning_rate == best["learning_rate"]
    assert selection.cfg.max_epochs == best["max_epochs"] and selection.cfg.search is None
    assert selection.result.model_dir == tmp_path / "model" and (tmp_path / "model" / "config.json").is_file()
    params, tags, curves = selection.mlflow_fields()
    assert params["search.trials_run"] == 3 and len(curves["search.val_macro_f1"]) == 3
    assert tags["search.reason"].startswith(f"trial-{best['trial']}: the best validation macro-F1")


def test_without_auto_or_search_it_is_one_plain_training(tiny_base_model, tmp_path):
    selection = select(tiny_base_model, tmp_path, FAST)
    assert selection.record == {} and selection.cfg == FAST
    assert selection.result.model_dir == tmp_path / "model" and (tmp_path / "checkpoints").is_dir()


def test_auto_with_search_searches_at_the_largest_allowed_depth_then_picks_the_depth(six_layers, tmp_path):
    logged = []
    selection = train_selected(
        base_dir=six_layers,
        texts=TEXTS,
        teacher_probs=PROBS,
        hard_labels=LABELS,
        label_names=LABEL_NAMES,
        cfg=replace(FAST, student_layers="auto", search=Search(trials=2)),
        out_dir=tmp_path,
        device="cpu",
        threads=1,
        log=logged.append,
        latency_sla_p99_ms=35.0,  # allows 2 and 3
        measure_latency=lambda depths: {d: 10.0 * d for d in depths},
        score=lambda c, result: (
            peak_at(c.learning_rate, c.max_epochs) - (0.001 if c.student_layers == 2 else 0)
        ),
    )
    trials = selection.record["search"]["trials"]
    auto = selection.record["auto"]
    assert len(trials) == 2 and auto["tried"] == [3, 2]  # depth 3's score is the search's best trial
    assert not any(m.startswith("layers-3:") for m in logged)  # so it was not trained again
    assert auto["chosen"] == 2 == selection.cfg.student_layers == layers_of(selection.result.model_dir)
    assert selection.cfg.learning_rate == selection.record["search"]["learning_rate"]
