"""`mlops workflows init | show | list`: a user's own labelled file becomes a workflow, any label text."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ml.cli import main
from ml.workflows import load_workflows

ROOT = Path(__file__).resolve().parents[2]
AWKWARD = ["what is this?", "card / lost", "Réclamation", "UPPER case", "yes", "1.10", "#tag", "a: b"]


@pytest.fixture()
def workflows_file(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "workflows.yaml"
    shutil.copyfile(ROOT / "dags" / "workflows.yaml", path)
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(path))
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    return path


def labelled_csv(tmp_path: Path, labels, name="mine.csv") -> Path:
    import pandas as pd

    rows = [
        {"query": f"text number {i} about {label}", "intent": label} for i, label in enumerate(labels * 3)
    ]
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_init_declares_the_files_labels_exactly_and_the_file_still_loads(tmp_path, workflows_file, capsys):
    source = labelled_csv(tmp_path, AWKWARD)
    assert (
        main(
            [
                "workflows",
                "init",
                "my_intents",
                "--from",
                str(source),
                "--text-col",
                "query",
                "--label-col",
                "intent",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["labels"] == sorted(AWKWARD)
    assert f"mlops data import {source} -w my_intents" in out["next"]
    declared = load_workflows(workflows_file)
    wf = declared["my_intents"]
    assert list(wf.labels) == sorted(AWKWARD)  # "yes" and "1.10" stayed text: quoted
    assert (wf.text_column, wf.label_column, wf.teacher.kind) == ("query", "intent", "labels")
    assert "ticket_routing" in declared  # what was there is kept
    assert "# The workflows worth post-training" in workflows_file.read_text()  # comments too


@pytest.mark.parametrize(
    "labels, argv_extra, message",
    [
        (["billing", " padded"], [], "label ' padded' in column 'intent' starts or ends with whitespace"),
        (["only_one"], [], "1 distinct label(s)"),
        (["a", "b"], ["--label-col", "nope"], "missing column(s) ['nope']"),
    ],
)
def test_init_refuses_naming_the_problem_and_leaves_the_file_as_it_was(
    tmp_path, workflows_file, capsys, labels, argv_extra, message
):
    before = workflows_file.read_text()
    source = labelled_csv(tmp_path, labels)
    argv = [
        "workflows",
        "init",
        "my_intents",
        "--from",
        str(source),
        "--text-col",
        "query",
        "--label-col",
        "intent",
    ]
    assert main(argv + argv_extra) == 1
    assert message in capsys.readouterr().err
    assert workflows_file.read_text() == before
    assert not list(workflows_file.parent.glob(".*.tmp"))


def test_init_refuses_an_existing_name_and_a_bad_name(tmp_path, workflows_file, capsys):
    source = labelled_csv(tmp_path, ["a", "b"])
    assert (
        main(
            [
                "workflows",
                "init",
                "ticket_routing",
                "--from",
                str(source),
                "--text-col",
                "query",
                "--label-col",
                "intent",
            ]
        )
        == 1
    )
    assert "already declares 'ticket_routing'" in capsys.readouterr().err
    assert main(["workflows", "init", "My-Intents", "--from", str(source)]) == 1
    assert "lower_snake_case" in capsys.readouterr().err


def test_show_lists_every_setting_with_its_help(workflows_file, capsys):
    assert main(["workflows", "show", "ticket_routing", "--json"]) == 0
    rows = {r["key"]: r for r in json.loads(capsys.readouterr().out)["settings"]}
    assert (
        rows["training.max_epochs"]["value"] == 3.0
        and "early stopping" in rows["training.max_epochs"]["help"]
    )
    assert {"teacher.kind", "gate.min_macro_f1", "validation.min_rows", "training.patience"} <= set(rows)
    assert main(["workflows", "show", "nope"]) == 1
    assert "unknown workflow 'nope'" in capsys.readouterr().err


def test_list_is_still_the_default(workflows_file, capsys):
    assert main(["workflows", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == ["ticket_routing"]


@pytest.mark.parametrize("start", ["workflows:\n", None], ids=["only the key", "no file yet"])
def test_init_starts_a_first_workflows_file(tmp_path, monkeypatch, capsys, start):
    path = tmp_path / "workflows.yaml"
    if start is not None:
        path.write_text(start)
    monkeypatch.setenv("MLOPS_WORKFLOWS_FILE", str(path))
    monkeypatch.setenv("MLOPS_STATE_DIR", str(tmp_path / "state"))
    source = labelled_csv(tmp_path, ["what is this?", "Bill Pay"])
    assert (
        main(
            [
                "workflows",
                "init",
                "first",
                "--from",
                str(source),
                "--text-col",
                "query",
                "--label-col",
                "intent",
            ]
        )
        == 0
    ), capsys.readouterr().err
    assert list(load_workflows(path)) == ["first"]
