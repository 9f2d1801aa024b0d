"""The workflows file's task keys: `task`, `fields` and `gate.metrics`, each mistake refused at load, naming it."""

from __future__ import annotations

import copy

import pytest

from ml.workflows import MetricRule, WorkflowError, load_workflows
from tests.unit.test_workflows import SHIPPED, VALID, with_changes, write


def test_a_workflow_without_task_is_classification_with_todays_gate(tmp_path):
    wf = load_workflows(write(tmp_path, VALID))["tickets"]
    assert wf.task == "classification" and wf.fields == () and wf.gate.metrics == ()
    assert wf.gate.judged_metrics == (
        MetricRule("macro_f1", min=0.6, max_drop=0.01, what="macro-F1"),
        MetricRule("per_class_f1", min=0.0, what="class F1", per_part=True),
    )


def test_the_shipped_workflows_keep_their_meaning():
    for wf in load_workflows(SHIPPED).values():
        assert wf.task == "classification"
        rules = {r.name: r for r in wf.gate.judged_metrics}
        assert rules["macro_f1"].min == wf.gate.min_macro_f1
        assert rules["macro_f1"].max_drop == wf.gate.max_macro_f1_drop
        assert rules["per_class_f1"].min == wf.gate.per_class_f1_floor


def test_declared_metrics_load_in_order_with_their_reason_words(tmp_path):
    doc = copy.deepcopy(VALID)
    doc["workflows"]["tickets"]["gate"] = {
        "metrics": {"accuracy": {"min": 0.7}, "macro_f1": {"min": 0.6, "max_drop": 0.01}},
        "approval": "manual",
    }
    wf = load_workflows(write(tmp_path, doc))["tickets"]
    assert wf.gate.judged_metrics == (
        MetricRule("accuracy", min=0.7, what="accuracy"),
        MetricRule("macro_f1", min=0.6, max_drop=0.01, what="macro-F1"),
    )
    assert wf.gate.approval == "manual"


@pytest.mark.parametrize(
    "doc, message",
    [
        (
            with_changes(task="regression"),
            "tickets.task: 'regression' is not one of classification, extraction",
        ),
        (
            with_changes(gate={"metrics": {"f1_macro": {"min": 0.6}}}),
            "gate.metrics: 'f1_macro' is not a metric of task classification; allowed: macro_f1, accuracy",
        ),
        (with_changes(gate={"metrics": {"macro_f1": {"min": 1.5}}}), "macro_f1.min: 1.5 must be a share"),
        (
            with_changes(gate={"metrics": {"macro_f1": {"min": float("nan")}}}),
            "macro_f1.min: nan must be a share",
        ),
        (with_changes(gate={"metrics": {"macro_f1": {"floor": 0.5}}}), "expected {min: X, max_drop: Y}"),
        (with_changes(gate={"metrics": {"macro_f1": {}}}), "expected {min: X, max_drop: Y}"),
        (with_changes(gate={"metrics": {}}), "gate.metrics: {} is invalid (expected a mapping"),
        (with_changes(gate={"metrics": ["macro_f1"]}), "expected a mapping {NAME: {min: X, max_drop: Y}}"),
        (with_changes(gate={"metrics": {"accuracy": {"min": True}}}), "accuracy.min: True must be a share"),
        (
            with_changes(gate={"min_macro_f1": 0.6, "metrics": {"macro_f1": {"min": 0.6}}}),
            "gate: both min_macro_f1 and metrics are set",
        ),
        (with_changes(fields=["party_a"]), "tickets.fields: fields are for task: extraction"),
    ],
)
def test_bad_task_keys_are_refused_naming_them(tmp_path, doc, message):
    with pytest.raises(WorkflowError) as err:
        load_workflows(write(tmp_path, doc))
    assert message in str(err.value)


def extraction(**body) -> dict:
    return {"workflows": {"contracts": {"task": "extraction", "teacher": {"kind": "call_log"}, **body}}}


@pytest.mark.parametrize(
    "doc, message",
    [
        (extraction(), "contracts.fields: task extraction needs the fields to find"),
        (extraction(fields=[]), "contracts.fields: task extraction needs the fields"),
        (extraction(fields="party_a"), "fields: 'party_a' is invalid (expected a list of field names"),
        (extraction(fields=["party_a", "Party B"]), "fields[1]: 'Party B' must be an identifier-like name"),
        (extraction(fields=["party_a", True]), "fields[1]: True must be an identifier-like name"),
        (extraction(fields=["party_a", "party_a"]), "fields: 'party_a' is declared twice"),
        (
            extraction(fields=["party_a"], labels=["a", "b"]),
            "contracts.labels: labels are for task: classification",
        ),
        (
            extraction(fields=["party_a"], gate={"min_macro_f1": 0.6}),
            "gate.min_macro_f1: a classification key; task extraction declares gate.metrics",
        ),
    ],
)
def test_an_extraction_workflow_declares_fields_not_labels(tmp_path, doc, message):
    with pytest.raises(WorkflowError) as err:
        load_workflows(write(tmp_path, doc))
    assert message in str(err.value)


def test_the_readme_example_loads(tmp_path):
    import importlib.util
    import re

    import yaml

    readme = (SHIPPED.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("**Task and gate.**") :]
    doc = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    if importlib.util.find_spec("ml.tasks.extraction") is None:  # written beside this change
        doc["workflows"].pop("contract_fields")
    workflows = load_workflows(write(tmp_path, doc))
    assert [r.name for r in workflows["ticket_routing"].gate.judged_metrics] == ["macro_f1", "per_class_f1"]


def test_the_headline_metric_is_the_gates_first_whole_model_metric(tmp_path):
    # What `mlops models list` and the demo's summary show: the task's own score, not macro_f1 for all.
    assert load_workflows(write(tmp_path, VALID))["tickets"].headline_metric == "macro_f1"
    doc = copy.deepcopy(VALID)
    tickets = doc["workflows"]["tickets"]
    for key in ("labels", "min_per_class"):
        tickets.pop(key, None)
    tickets.get("validation", {}).pop("min_per_class", None)
    tickets["gate"] = {"approval": "auto"}
    doc["workflows"]["contracts"] = {**tickets, "task": "extraction", "fields": ["party_a", "governing_law"]}
    doc["workflows"]["contracts"]["gate"] = {
        "metrics": {"per_field_f1": {"min": 0.5}, "exact_match_macro": {"min": 0.5}}
    }
    wf = load_workflows(write(tmp_path, doc))["contracts"]
    assert wf.headline_metric == "exact_match_macro"
