"""The workflows file: the shipped declarations load, and every mistake names its key."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from ml.workflows import Schedule, Workflow, WorkflowError, get_workflow, load_workflows

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "dags" / "workflows.yaml"
TWO = ROOT / "tests" / "fixtures" / "workflows_two.yaml"

VALID = {
    "workflows": {
        "tickets": {
            "labels": ["billing", "shipping", "login"],
            "teacher": {"kind": "call_log", "model": "frontier-large"},
            "schedule": {"cron": "0 3 * * 0", "on_new_data": True},
            "training": {"epochs": 1, "alpha": 0.5},
            "gate": {"min_macro_f1": 0.6, "approval": "auto"},
        }
    }
}


def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "workflows.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def with_changes(**changes) -> dict:
    """VALID with keys of the `tickets` workflow replaced; a dotted key reaches into a section."""
    doc = copy.deepcopy(VALID)
    body = doc["workflows"]["tickets"]
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = body
        for parent in parents:
            target = target.setdefault(parent, {})
        target[key] = value
    return doc


# The files in the repository ----------------------------------------------------------------


def test_the_shipped_file_loads_the_demo_workflow():
    # Types and structure only: the tuning values in the file are meant to change.
    wf = load_workflows(SHIPPED)["ticket_routing"]
    assert len(wf.labels) == 16 and len(set(wf.labels)) == 16
    assert wf.model_name == "ticket_routing_student"
    assert wf.teacher.kind == "call_log" and wf.teacher.model
    assert wf.schedule.cron or wf.schedule.on_new_data
    assert isinstance(wf.monthly_budget_usd, Decimal) and wf.monthly_budget_usd > 0
    assert isinstance(wf.monthly_calls, int) and wf.monthly_calls > 0
    assert isinstance(wf.latency_sla_p99_ms, float) and wf.latency_sla_p99_ms > 0
    assert isinstance(wf.training.learning_rate, float) and wf.training.learning_rate > 0
    assert isinstance(wf.training.batch_size, int) and 0.0 <= wf.training.alpha <= 1.0
    assert wf.gate.approval in ("auto", "manual")


def test_the_two_workflow_fixture_loads_both_with_defaults_filled_in():
    workflows = load_workflows(TWO)
    assert list(workflows) == ["ticket_routing", "clause_classification"]
    clause = workflows["clause_classification"]
    assert clause.labels == ("indemnity", "termination", "liability", "other")
    assert clause.schedule.cron is None and clause.schedule.on_new_data
    assert clause.gate.approval == "manual" and clause.gate.min_macro_f1 == 0.5  # the default
    assert clause.training == Workflow(name="x").training
    assert get_workflow(TWO, "clause_classification") == clause


def test_get_workflow_names_the_declared_ones_for_an_unknown_name():
    with pytest.raises(WorkflowError, match="'nope'.*ticket_routing, clause_classification"):
        get_workflow(TWO, "nope")


# Schedules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule, cron, on_new_data",
    [
        ({"cron": "0 3 * * 0", "on_new_data": False}, "0 3 * * 0", False),  # cron only
        ({"cron": None, "on_new_data": True}, None, True),  # data only
        ({"cron": "@daily", "on_new_data": True}, "@daily", True),  # both
        ({}, None, True),  # the default: data only
    ],
)
def test_schedule_variants(tmp_path, schedule, cron, on_new_data):
    doc = copy.deepcopy(VALID)
    doc["workflows"]["tickets"]["schedule"] = schedule
    wf = load_workflows(write(tmp_path, doc))["tickets"]
    assert (wf.schedule.cron, wf.schedule.on_new_data) == (cron, on_new_data)
    assert wf.schedule.ingest == Schedule().ingest


def test_a_workflow_with_only_labels_gets_every_default(tmp_path):
    wf = load_workflows(write(tmp_path, {"workflows": {"tiny": {"labels": ["a", "b"]}}}))["tiny"]
    assert wf == Workflow(name="tiny", labels=("a", "b"))


def test_yaml_anchors_under_x_keys_are_allowed(tmp_path):
    text = (
        "x-common: &common {labels: [a, b], gate: {approval: manual}}\n"
        "workflows:\n  one: *common\n  two: {<<: *common, description: second}\n"
    )
    workflows = load_workflows(write(tmp_path, text))
    assert workflows["two"].gate.approval == "manual" and workflows["two"].description == "second"


def test_curation_rules_are_read_per_workflow(tmp_path):
    doc = with_changes(curation={"mask_pii": ["email"], "pii_patterns": {"<ORDER>": r"ORD-\d{6}"}})
    wf = load_workflows(write(tmp_path, doc))["tickets"]
    assert wf.curation.mask_pii == ("email",)
    assert wf.curation.pii_patterns == (("<ORDER>", r"ORD-\d{6}"),)
    assert load_workflows(write(tmp_path, VALID))["tickets"].curation.mask_pii == ("email", "card", "phone")


# Every mistake names its key ---------------------------------------------------------------


@pytest.mark.parametrize(
    "doc, names",
    [
        # unknown keys at each level
        ({**VALID, "workflow": {}}, "'workflow'"),
        (
            {"workflows": {"tickets": {"labels": ["a", "b"]}}, "other_flow": {"labels": ["a", "b"]}},
            "'other_flow'",
        ),
        (with_changes(lables=["a", "b"]), "unknown key 'lables'"),
        (with_changes(training__epoch=3), "training: unknown key 'epoch'"),
        (with_changes(schedule__crontab="0 3 * * *"), "schedule: unknown key 'crontab'"),
        (with_changes(gate__min_f1=0.5), "gate: unknown key 'min_f1'"),
        (with_changes(teacher__name="x"), "teacher: unknown key 'name'"),
        (with_changes(validation__min_row=3), "validation: unknown key 'min_row'"),
        # names
        ({"workflows": {"Ticket-Routing": {"labels": ["a", "b"]}}}, "'Ticket-Routing'"),
        ({"workflows": {"x": {"labels": ["a", "b"]}}}, "name 'x'"),
        ({"workflows": {123: {"labels": ["a", "b"]}}}, "name '123'"),
        (with_changes(name="other"), "tickets.name"),
        # values
        (with_changes(teacher__kind="gpt4"), "teacher.kind: 'gpt4'"),
        (with_changes(gate__approval="yes please"), "gate.approval"),
        (
            with_changes(gate__approval_timeout_hours=0),
            "gate.approval_timeout_hours: 0.0 must be more than 0",
        ),
        (with_changes(gate__approval_timeout_hours=-1), "gate.approval_timeout_hours"),
        (with_changes(gate__approval_timeout_hours=721), "at most 720 (30 days)"),
        (
            with_changes(gate__approval_timeout_hours=float("nan")),
            "gate.approval_timeout_hours: nan must be more than 0",
        ),
        (
            with_changes(gate__approval_timeout_hours="a day"),
            "gate.approval_timeout_hours: 'a day' is invalid",
        ),
        (with_changes(training__alpha=1.5), "training.alpha"),
        (with_changes(training__alpha=-0.1), "training.alpha"),
        (with_changes(training__temperature=0), "training.temperature"),
        (with_changes(serving_utilisation=0), "serving_utilisation"),
        (with_changes(schedule__on_new_data="yes"), "schedule.on_new_data"),
        (with_changes(serving_always_on=1), "serving_always_on"),
        (with_changes(proprietary_data="true"), "proprietary_data"),
        (with_changes(training__batch_size=3.5), "training.batch_size"),
        (with_changes(training__batch_size=True), "training.batch_size"),
        (with_changes(monthly_calls="lots"), "monthly_calls"),
        (with_changes(training__epochs="three"), "training.epochs"),
        (with_changes(training__epochs=True), "training.epochs"),
        (with_changes(monthly_budget_usd="a lot"), "monthly_budget_usd"),
        (with_changes(teacher="call_log"), "teacher: expected a mapping"),
        (with_changes(labels="billing"), "labels: 'billing' is invalid (expected a list"),
        (with_changes(labels=["billing", "shipping", "billing"]), "labels: labels must be unique"),
        (with_changes(schedule={"cron": None, "on_new_data": False}), "schedule: set a cron"),
        (with_changes(schedule={"on_new_data": False}), "schedule: set a cron"),
        (with_changes(schedule__cron="  "), "schedule.cron"),
        (with_changes(curation__mask_pii=["email", "passport"]), "curation: unknown PII rule 'passport'"),
        (with_changes(curation__mask_pii="email"), "curation.mask_pii: 'email' is invalid (expected a list"),
        (
            with_changes(curation__pii_patterns={"<ORDER>": "ORD-(\\d"}),
            "curation: PII pattern for '<ORDER>' is not a valid",
        ),
        (with_changes(curation__pii_patterns=["ORD-\\d+"]), "curation.pii_patterns"),
        (with_changes(curation__mask=["email"]), "curation: unknown key 'mask'"),
        ({"workflows": {"tickets": ["labels", "a"]}}, "workflows.tickets: expected a mapping"),
        # the file itself
        ({"workflows": {}}, "top-level 'workflows:'"),
        ({"workflows": ["tickets"]}, "top-level 'workflows:'"),
        ("workflows: [unclosed\n", "not valid YAML"),
        ("workflows:\n  tickets:\n    labels: [a, b]\n   gate: {}\n", "not valid YAML"),
        ("", "top-level 'workflows:'"),
        ("# only a comment\n", "top-level 'workflows:'"),
        ("just a string", "top-level 'workflows:'"),
    ],
)
def test_an_invalid_file_raises_naming_the_key(tmp_path, doc, names):
    path = write(tmp_path, doc)
    with pytest.raises(WorkflowError) as err:
        load_workflows(path)
    message = str(err.value)
    assert names in message, message
    assert "workflows.yaml" in message  # the file is always named


def test_a_missing_file_names_the_setting_to_change(tmp_path):
    with pytest.raises(WorkflowError, match="not found; set MLOPS_WORKFLOWS_FILE"):
        load_workflows(tmp_path / "absent.yaml")


def test_a_folder_is_not_a_workflows_file(tmp_path):
    with pytest.raises(WorkflowError, match="not found"):
        load_workflows(tmp_path)


def test_the_error_is_a_value_error_so_callers_can_catch_bad_input():
    assert issubclass(WorkflowError, ValueError)


# Values are checked when the file loads (issue 16.8), naming the field and the value -------------


@pytest.mark.parametrize(
    "doc, names",
    [
        (with_changes(training__epochs=-1), "training.max_epochs: -1.0 is out of range"),
        (with_changes(training__epochs=0), "training.max_epochs: 0.0"),
        (with_changes(training__epochs=float("nan")), "training.max_epochs: nan"),
        (with_changes(training__epochs=float("inf")), "training.max_epochs: inf"),
        (with_changes(training__epochs=2, training__max_epochs=3), "both epochs and max_epochs"),
        (with_changes(training__batch_size=0), "training.batch_size: 0"),
        (with_changes(training__learning_rate=-1), "training.learning_rate: -1.0"),
        (with_changes(training__checkpoint_every=0), "training.checkpoint_every: 0"),
        (with_changes(training__max_length=0), "training.max_length: 0"),
        (with_changes(training__patience=-1), "training.patience: -1"),
        (with_changes(training__validation_fraction=0.9), "training.validation_fraction: 0.9"),
        (with_changes(training__class_weight_power=2), "training.class_weight_power: 2.0"),
        (with_changes(latency_sla_p99_ms=-5), "latency_sla_p99_ms: -5.0"),
        (with_changes(validation__min_rows=-5), "validation.min_rows: -5"),
        (with_changes(validation__drift_p_value=2), "validation.drift_p_value: 2.0"),
        (
            with_changes(validation__max_text_chars=2, validation__min_text_chars=3),
            "validation.max_text_chars: 2",
        ),
        (with_changes(gate__min_macro_f1=7), "gate.min_macro_f1: 7.0"),
        (with_changes(gate__per_class_f1_floor=float("nan")), "gate.per_class_f1_floor: nan"),
        (with_changes(monthly_budget_usd=-100), "monthly_budget_usd: -100"),
        (with_changes(monthly_budget_usd="NaN"), "monthly_budget_usd: NaN"),
        (with_changes(monthly_calls=-1), "monthly_calls: -1"),
        (with_changes(schedule__cron="every tuesday"), "schedule.cron: 'every tuesday' is not a cron"),
        (with_changes(schedule__ingest="hourly"), "schedule.ingest: 'hourly'"),
        (with_changes(schedule__watch_upstream="61 * * * *"), "schedule.watch_upstream"),
        # labels: any non-empty text works; what cannot be used is refused here, naming it
        (with_changes(labels=["billing", ""]), "labels[1]: '' is empty"),
        (with_changes(labels=["billing", "  "]), "labels[1]: '  ' is empty"),
        (
            with_changes(labels=["billing", " shipping"]),
            "labels[1]: ' shipping' starts or ends with whitespace",
        ),
        (with_changes(labels=["billing", "ship\nping"]), "control character"),
        (with_changes(labels=["billing", "x" * 201]), "longer than 200"),
        (with_changes(labels=["billing", True]), "label True is read by YAML as bool, not text; quote it"),
        (with_changes(labels=["billing", 1.1]), "label 1.1 is read by YAML as float"),
        (with_changes(labels=["billing", None]), "label None is read by YAML as NoneType"),
        (
            with_changes(teacher__kind="label"),
            "teacher.kind: 'label' is not call_log, labels, local_model or openai",
        ),
    ],
)
def test_out_of_range_values_are_refused_at_load_naming_field_and_value(tmp_path, doc, names):
    path = write(tmp_path, doc)
    with pytest.raises(WorkflowError) as err:
        load_workflows(path)
    assert names in str(err.value), str(err.value)
    assert str(err.value).count("workflows.yaml") == 1  # one message, not one wrapped in another


def test_the_old_epochs_key_is_the_epoch_budget():
    assert load_workflows(SHIPPED)  # the shipped file may use either name
    wf = Workflow(name="x")
    assert wf.training.max_epochs > 0 and wf.training.patience >= 0


@pytest.mark.parametrize(
    "labels",
    [
        [
            "what is this?",
            "billing / invoices",
            "Réclamation",
            "UPPER case",
            "日本語",
            "a.b",
            "..",
            "/",
            "50% off",
            "$5",
        ],
    ],
)
def test_any_non_empty_label_text_loads_as_written(tmp_path, labels):
    wf = load_workflows(write(tmp_path, with_changes(labels=labels)))["tickets"]
    assert list(wf.labels) == labels


def test_a_config_error_is_not_retryable():
    from ml.workflows import ConfigurationError

    assert issubclass(WorkflowError, ConfigurationError)
