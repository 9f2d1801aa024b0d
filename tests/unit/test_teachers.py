"""Teacher targets: recorded frontier answers (with and without probabilities) and a local model."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from ml.data import contract
from ml.teachers import Targets, local_model_targets, recorded_targets, teacher_targets
from ml.train.student import TeacherMismatchError, build_student, fingerprint_model_dir

LABELS = ["billing", "login", "shipping"]


def frame(rows: list[tuple], source: str = "teacher") -> pd.DataFrame:
    """rows: (text, label, probs dict or None[, teacher version])."""
    return pd.DataFrame(
        {
            contract.TEXT: [r[0] for r in rows],
            contract.LABEL: [r[1] for r in rows],
            contract.SOURCE: source,
            contract.TEACHER_VERSION: [r[3] if len(r) > 3 else "2026-06" for r in rows],
            contract.TEACHER_PROBS: [json.dumps(r[2]) if r[2] is not None else "" for r in rows],
        }
    )


# Recorded answers ----------------------------------------------------------------------


def test_answers_without_probabilities_are_one_hot():
    targets = recorded_targets(frame([("refund", "billing", None), ("parcel", "shipping", None)]), LABELS)
    assert isinstance(targets, Targets)
    assert targets.probs.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    assert targets.hard.tolist() == [0, 2] and targets.hard.dtype == np.int64
    assert targets.teacher == {"kind": "call_log", "version": "2026-06"}


@pytest.mark.parametrize(
    "label, probs, expected",
    [
        # every label given: taken as is
        ("login", {"billing": 0.1, "login": 0.7, "shipping": 0.2}, [0.1, 0.7, 0.2]),
        # top two only (the log keeps the top few): the rest of the mass goes to the others
        ("billing", {"billing": 0.8, "shipping": 0.15}, [0.8, 0.05, 0.15]),
        # the answer alone: the remaining 0.4 is spread over the two others
        ("shipping", {"shipping": 0.6}, [0.2, 0.2, 0.6]),
        # floored values that sum a little short of 1 are renormalised
        (
            "billing",
            {"billing": 0.4999, "login": 0.2999, "shipping": 0.1999},
            [0.4999 / 0.9997, 0.2999 / 0.9997, 0.1999 / 0.9997],
        ),
        # labels the student does not have are ignored; nothing known left means one-hot
        ("login", {"refund": 0.9}, [0.0, 1.0, 0.0]),
    ],
)
def test_recorded_probabilities_are_soft_targets(label, probs, expected):
    targets = recorded_targets(frame([("some text", label, probs)]), LABELS)
    assert targets.probs[0] == pytest.approx(expected)
    assert targets.probs.sum(axis=1) == pytest.approx([1.0])
    assert LABELS[targets.probs[0].argmax()] == label == LABELS[targets.hard[0]]


def test_rows_sum_to_one_and_argmax_is_the_label_on_a_mixed_log():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        label = LABELS[i % 3]
        others = [lab for lab in LABELS if lab != label]
        top = float(rng.uniform(0.5, 0.95))
        probs = None if i % 4 == 0 else {label: top, others[i % 2]: round((1 - top) * 0.6, 4)}
        rows.append((f"text {i}", label, probs, f"v{i % 2}"))
    targets = recorded_targets(frame(rows), LABELS)
    assert targets.probs.shape == (60, 3) and targets.hard.shape == (60,)
    assert targets.probs.sum(axis=1) == pytest.approx(np.ones(60))
    assert (targets.probs >= 0).all()
    assert (targets.probs.argmax(axis=1) == targets.hard).all()
    assert [LABELS[h] for h in targets.hard] == [r[1] for r in rows]
    assert targets.teacher["version"] == "v0,v1"


def test_missing_probabilities_from_parquet_or_csv_mean_one_hot(tmp_path):
    df = frame([("a", "billing", None), ("b", "login", {"login": 0.9, "billing": 0.1})])
    df[contract.TEACHER_PROBS] = [None, df[contract.TEACHER_PROBS][1]]
    df[contract.TEACHER_VERSION] = [None, "2026-06"]
    df.to_csv(tmp_path / "t.csv", index=False)
    for loaded in (df, pd.read_csv(tmp_path / "t.csv")):  # None, then NaN
        targets = recorded_targets(loaded, LABELS)
        assert targets.probs == pytest.approx(np.array([[1.0, 0.0, 0.0], [0.1, 0.9, 0.0]]))
        assert targets.teacher["version"] == "2026-06"


def test_an_empty_frame_gives_empty_targets():
    targets = recorded_targets(frame([]), LABELS)
    assert targets.probs.shape == (0, 3) and targets.hard.shape == (0,)
    assert targets.teacher["version"] == "unknown"


def test_an_answer_the_student_does_not_have_is_a_mismatch():
    df = frame([("a", "billing", None), ("b", "refund", None), ("c", "fraud", None)])
    with pytest.raises(
        TeacherMismatchError, match=r"\['fraud', 'refund'\]; add them to the workflow's labels"
    ):
        recorded_targets(df, LABELS)


@pytest.mark.parametrize("raw", ["{not json", "[0.2, 0.8]", '{"billing": "high"}'])
def test_unreadable_probabilities_name_the_value(raw):
    df = frame([("a", "billing", None)])
    df[contract.TEACHER_PROBS] = [raw]
    with pytest.raises(TeacherMismatchError, match="is not a JSON object of label: probability"):
        recorded_targets(df, LABELS)


def test_teacher_targets_dispatches_on_the_kind():
    df = frame([("a", "billing", None)])
    assert teacher_targets("call_log", "frontier-large", df, LABELS).teacher == {
        "kind": "call_log",
        "version": "2026-06",
        "model": "frontier-large",
    }
    # openai asks the live API (tests/unit/test_openai_teacher.py); with none configured it says what to set.
    with pytest.raises(ValueError, match="MLOPS_FRONTIER_BASE_URL"):
        teacher_targets("openai", "frontier-large", df, LABELS, base_url="", api_key="")
    with pytest.raises(TeacherMismatchError, match="unknown teacher kind 'oracle'"):
        teacher_targets("oracle", "x", df, LABELS)


# A local model as teacher --------------------------------------------------------------

TEACHER_ORDER = ["shipping", "billing", "login"]  # deliberately not the student's order


@pytest.fixture(scope="module")
def local_teacher(tiny_base_model, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model, tokenizer = build_student(tiny_base_model, TEACHER_ORDER)
    # A random head scores every text almost alike; a sharper one makes the column order visible.
    with torch.no_grad():
        model.classifier.weight.mul_(50)
    directory = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    yield directory
    torch.set_num_threads(threads)


TEXTS = [
    "my parcel never arrived",
    "I was charged twice",
    "cannot log in",
    "where is my order",
    "refund please",
    "reset my password",
]


def test_a_local_teacher_gives_soft_targets_in_the_students_column_order(local_teacher):
    from ml.evaluate.serving import load_classifier, predict_probs

    df = frame([(t, "billing", None) for t in TEXTS])
    targets = local_model_targets(df, LABELS, local_teacher)
    model, tokenizer = load_classifier(local_teacher)
    raw = predict_probs(model, tokenizer, TEXTS)  # columns in the teacher's order
    for student_col, name in enumerate(LABELS):
        assert targets.probs[:, student_col] == pytest.approx(raw[:, TEACHER_ORDER.index(name)], abs=1e-6)
    assert targets.probs.sum(axis=1) == pytest.approx(np.ones(len(TEXTS)), abs=1e-5)
    assert (targets.hard == targets.probs.argmax(axis=1)).all()  # teacher rows: the teacher's answer
    assert not np.allclose(targets.probs, raw)  # the reordering did something
    assert targets.teacher == {
        "kind": "local_model",
        "model": str(local_teacher),
        "version": fingerprint_model_dir(local_teacher)[:16],
    }


def test_gold_rows_keep_their_label_as_the_hard_target(local_teacher):
    df = pd.concat(
        [
            frame([(t, "login", None) for t in TEXTS[:3]], source="gold"),
            frame([(t, "login", None) for t in TEXTS[3:]]),
        ],
        ignore_index=True,
    )
    targets = local_model_targets(df, LABELS, local_teacher)
    assert targets.hard[:3].tolist() == [LABELS.index("login")] * 3
    assert (targets.hard[3:] == targets.probs[3:].argmax(axis=1)).all()


@pytest.mark.parametrize(
    "student_labels, words",
    [
        (["billing", "login"], "extra ['shipping']"),
        (["billing", "login", "shipping", "refund"], "missing ['refund']"),
        (["billing", "login", "refund"], "missing ['refund'], extra ['shipping']"),
    ],
)
def test_a_local_teacher_with_other_labels_is_a_mismatch(local_teacher, student_labels, words):
    with pytest.raises(TeacherMismatchError, match=re.escape(words)):
        local_model_targets(frame([("a", "billing", None)]), student_labels, local_teacher)


def test_a_gold_label_the_student_lacks_is_a_mismatch(local_teacher):
    with pytest.raises(TeacherMismatchError, match=r"gold labels the student does not have: \['refund'\]"):
        local_model_targets(frame([("a", "refund", None)], source="gold"), LABELS, local_teacher)


def test_a_teacher_folder_without_a_model_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="set teacher.model"):
        local_model_targets(frame([("a", "billing", None)]), LABELS, tmp_path / "nothing_here")


# The data's own labels as teacher ------------------------------------------------------------


def test_labels_teacher_gives_one_hot_targets_for_any_label_text():
    labels = ["what is this?", "billing / invoices", "Réclamation"]
    df = pd.DataFrame(
        {
            contract.TEXT: ["a", "b", "c", "d"],
            contract.LABEL: ["Réclamation", "what is this?", "Réclamation", "billing / invoices"],
        }
    )
    targets = teacher_targets("labels", "", df, labels)
    assert targets.hard.tolist() == [2, 0, 2, 1]
    assert np.array_equal(targets.probs, np.eye(3)[[2, 0, 2, 1]])
    assert targets.teacher["kind"] == "labels"


def test_labels_teacher_names_a_label_the_workflow_lacks():
    df = pd.DataFrame({contract.TEXT: ["a"], contract.LABEL: ["refund?"]})
    with pytest.raises(TeacherMismatchError, match=r"does not declare: \['refund\?'\]"):
        teacher_targets("labels", "", df, ["billing"])
