"""The live OpenAI-compatible teacher against the fake server on 127.0.0.1 (tests/integration/fake_openai.py)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml.data import contract
from ml.teachers import (
    OPENAI_TOP_LOGPROBS,
    TeacherUnavailableError,
    _answer_probs,
    openai_targets,
    teacher_targets,
)
from ml.train.student import TeacherMismatchError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from fake_openai import FakeOpenAI  # noqa: E402  (the helper the frontier proxy tests use)

LABELS = ["billing", "login", "shipping"]
WORDS = {"refund": "billing", "password": "login", "parcel": "shipping"}
KEY = "sk-test-teacher-3b1f"


def frame(n: int = 40, *, gold: tuple[int, ...] = ()) -> pd.DataFrame:
    words = list(WORDS)
    texts = [f"{words[i % 3]} problem, ticket {i}" for i in range(n)]
    return pd.DataFrame(
        {
            contract.TEXT: texts,
            contract.LABEL: [WORDS[words[i % 3]] for i in range(n)],
            contract.SOURCE: ["gold" if i in gold else "teacher" for i in range(n)],
        }
    )


def user_text(body: dict) -> str:
    return body["messages"][-1]["content"]


def answer_of(body: dict) -> str:
    """The label of the ticket's topic word; on ticket 3 (a refund) the teacher is wrong: login."""
    return "login" if user_text(body).endswith("ticket 3") else WORDS[user_text(body).split()[0]]


def topical(body: dict) -> str:
    """answer_of, written as a chat model might: capitalised, padded."""
    return f" {answer_of(body).capitalize()}\n"


def topical_logprobs(body: dict) -> list[dict]:
    answer = answer_of(body)
    others = [label for label in LABELS if label != answer]
    alternatives = [(answer, 0.8), (others[0], 0.15), (others[1][:4], 0.04)]  # "ship": a label's first token
    return [
        {
            "token": answer,
            "logprob": math.log(0.8),
            "top_logprobs": [{"token": " " + t, "logprob": math.log(p)} for t, p in alternatives],
        },
        {"token": "\n", "logprob": 0.0, "top_logprobs": []},
    ]


def label(df, fake, **kwargs):
    return openai_targets(
        df, LABELS, model="frontier-large", base_url=fake.url, api_key=KEY, max_retries=0, **kwargs
    )


def test_answers_and_logprobs_become_soft_targets():
    df = frame(gold=(3,))
    with FakeOpenAI(answer=topical, logprobs=topical_logprobs) as fake:
        targets = label(df, fake)
    expected_hard = [LABELS.index(lab) for lab in df[contract.LABEL]]
    assert targets.hard.tolist() == expected_hard  # row 3: the teacher said login, the gold label wins
    assert LABELS[targets.probs[3].argmax()] == "login"  # and the soft target is still the teacher's
    np.testing.assert_allclose(targets.probs.sum(axis=1), 1.0)
    # Row 0 ("refund"): billing 0.8, login 0.15, shipping 0.04 from "ship"; renormalised over 0.99.
    np.testing.assert_allclose(targets.probs[0], np.array([0.8, 0.15, 0.04]) / 0.99, rtol=1e-9)
    assert targets.teacher == {
        "kind": "openai",
        "model": "frontier-large",
        "version": "fake-2026-06-01",
        "n_calls": 40,
        "n_unusable": 0,
        "n_with_logprobs": 40,
        "tokens_in": targets.teacher["tokens_in"],
        "tokens_out": 40,
    }
    # What the API was asked: every text once, the label set in the prompt, logprobs on, our key.
    request = fake.requests[0]
    assert len(fake.requests) == 40 and request["authorization"] == f"Bearer {KEY}"
    body = request["body"]
    assert all(lab in body["messages"][0]["content"] for lab in LABELS)
    assert (body["logprobs"], body["top_logprobs"], body["temperature"]) == (True, OPENAI_TOP_LOGPROBS, 0)
    assert sorted(user_text(r["body"]) for r in fake.requests) == sorted(df[contract.TEXT])


def test_without_logprobs_the_answer_is_a_one_hot_target():
    with FakeOpenAI(answer=topical) as fake:  # a provider that ignores the logprobs request
        targets = label(frame(9), fake)
    assert (
        targets.probs.tolist() == np.eye(3)[[0, 1, 2, 1, 1, 2, 0, 1, 2]].tolist()
    )  # row 3: the teacher's login
    assert targets.teacher["n_with_logprobs"] == 0


def test_a_few_unusable_answers_keep_their_recorded_label():
    df = frame(40)  # 5 % of 40: two may be unusable
    with FakeOpenAI(
        answer=lambda body: "no idea" if "ticket 7" in user_text(body) else topical(body)
    ) as fake:
        fake.script = ["ok"] * 4 + [
            "error500"
        ]  # and the call for ticket 4 fails (one call at a time: in order)
        targets = label(df, fake, concurrency=1)
    assert targets.teacher["n_unusable"] == 2
    recorded = [LABELS.index(lab) for lab in df[contract.LABEL]]
    assert targets.hard.tolist() == recorded[:3] + [1] + recorded[4:]  # row 3: the teacher's answer, login
    assert targets.probs[7].tolist() == [0.0, 1.0, 0.0]  # recorded label, one-hot
    assert targets.probs[4].tolist() == [0.0, 1.0, 0.0]


def test_a_teacher_answering_outside_the_label_set_stops_early_with_a_named_error():
    df = frame(200)
    with FakeOpenAI(answer=" refund_request\n") as fake:
        with pytest.raises(
            TeacherMismatchError, match=r"answered outside the workflow's labels.*'refund_request'"
        ):
            label(df, fake, concurrency=4)
    assert len(fake.requests) < 40  # it stopped once more than 10 (5 %) were off the label set


def test_a_failing_api_is_a_named_error_that_says_what_to_check():
    with FakeOpenAI(default_mode="error500") as fake:
        with pytest.raises(TeacherUnavailableError, match=r"ServerError.*MLOPS_FRONTIER_BASE_URL"):
            label(frame(20), fake)


def test_teacher_targets_reads_the_api_from_the_settings(monkeypatch):
    with FakeOpenAI(answer=topical) as fake:
        monkeypatch.setenv("MLOPS_FRONTIER_BASE_URL", fake.url)
        monkeypatch.setenv("MLOPS_FRONTIER_API_KEY", KEY)
        targets = teacher_targets("openai", "frontier-large", frame(6), LABELS)
    assert targets.teacher["kind"] == "openai" and targets.hard.tolist() == [0, 1, 2, 1, 1, 2]
    assert {r["authorization"] for r in fake.requests} == {f"Bearer {KEY}"}


def test_a_training_set_with_labels_the_student_lacks_stops_before_any_call():
    df = frame(6)
    df.loc[2, contract.LABEL] = "spam"
    with FakeOpenAI(answer=topical) as fake:
        with pytest.raises(TeacherMismatchError, match=r"\['spam'\]"):
            label(df, fake)
    assert fake.requests == []


SIXTEEN = ["billing_refund", "billing_invoice", "shipping_delay", "password_reset"]


@pytest.mark.parametrize(
    "alternatives, expected",
    [
        # a first token that starts one label only counts for it
        ([("ship", 0.1)], {"billing_refund": 0.7, "shipping_delay": 0.1}),
        # one that starts two labels cannot be split between them: left out
        ([("billing", 0.2)], {"billing_refund": 0.7}),
        # the answer's own first token is not counted twice; case and spaces do not matter
        ([(" BILLING_", 0.7), (" Pass", 0.05)], {"billing_refund": 0.7, "password_reset": 0.05}),
    ],
    ids=["unique prefix", "ambiguous prefix", "own token, case"],
)
def test_logprobs_of_multi_token_labels(alternatives, expected):
    # The answer "billing_refund" as two tokens whose joint probability is 0.7.
    data = {
        "choices": [
            {
                "logprobs": {
                    "content": [
                        {
                            "token": "billing_",
                            "logprob": math.log(0.875),
                            "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in alternatives],
                        },
                        {"token": "refund", "logprob": math.log(0.8), "top_logprobs": []},
                    ]
                }
            }
        ]
    }
    got = _answer_probs(data, "billing_refund", SIXTEEN)
    assert got.keys() == expected.keys()
    assert all(got[k] == pytest.approx(v) for k, v in expected.items())


def test_a_response_without_logprobs_gives_no_probabilities():
    assert (
        _answer_probs(json.loads('{"choices": [{"message": {"content": "x"}}]}'), "billing_refund", SIXTEEN)
        == {}
    )
