"""The distillation loss against hand-computed values and its defining properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ml.train.loss import distillation_loss, soften


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# (name, student logits, teacher probs, hard labels, T, alpha, expected), worked out on paper:
#   logits [0, 0] -> q = [1/2, 1/2]; logits [ln 3, 0] -> q = [3/4, 1/4].
#   At T=2, logits [ln 9, 0] / 2 = [ln 3, 0] -> q_T = [3/4, 1/4], and teacher [0.8, 0.2]
#   softens to sqrt: [sqrt .8, sqrt .2] ∝ [2, 1] -> p_T = [2/3, 1/3].
HAND_COMPUTED = [
    (
        "one-hot vs uniform, half and half",
        [[0.0, 0.0]],
        [[1.0, 0.0]],
        [0],
        1.0,
        0.5,
        0.5 * math.log(2) + 0.5 * math.log(2),
    ),
    (
        "soft only",
        [[math.log(3), 0.0]],
        [[0.5, 0.5]],
        [1],
        1.0,
        1.0,
        0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25),
    ),
    ("hard only", [[math.log(3), 0.0]], [[0.5, 0.5]], [1], 1.0, 0.0, -math.log(0.25)),
    (
        "temperature 2 softens both sides, T^2 scales",
        [[math.log(9), 0.0]],
        [[0.8, 0.2]],
        [0],
        2.0,
        0.5,
        0.5 * 4 * (2 / 3 * math.log((2 / 3) / 0.75) + 1 / 3 * math.log((1 / 3) / 0.25)) - 0.5 * math.log(0.9),
    ),
    (
        "batch mean of two rows",
        [[0.0, 0.0], [math.log(3), 0.0]],
        [[1.0, 0.0], [0.5, 0.5]],
        [0, 1],
        1.0,
        1.0,
        (math.log(2) + 0.5 * math.log(4 / 3)) / 2,
    ),
    (
        "three classes, zero teacher prob",
        [[0.0, 0.0, 0.0]],
        [[0.0, 0.5, 0.5]],
        [1],
        1.0,
        1.0,
        math.log(0.5 / (1 / 3)),
    ),
]


@pytest.mark.parametrize(
    "logits, probs, labels, temperature, alpha, expected",
    [case[1:] for case in HAND_COMPUTED],
    ids=[case[0] for case in HAND_COMPUTED],
)
def test_hand_computed_values(logits, probs, labels, temperature, alpha, expected):
    loss = distillation_loss(t(logits), t(probs), torch.tensor(labels), temperature=temperature, alpha=alpha)
    assert loss.item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_alpha_zero_is_cross_entropy(temperature):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=gen)
    probs = torch.softmax(torch.randn(5, 4, generator=gen), dim=-1)
    labels = torch.tensor([0, 3, 1, 2, 1])
    loss = distillation_loss(logits, probs, labels, temperature=temperature, alpha=0.0)
    torch.testing.assert_close(loss, F.cross_entropy(logits, labels))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_teacher_equal_to_student_costs_nothing(temperature):
    # softmax(z)^(1/T) ∝ exp(z/T), so a teacher that agrees with the student at T=1 also
    # agrees at every T: this checks the temperature rule for probability targets.
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    teacher = torch.softmax(logits, dim=-1)
    loss = distillation_loss(logits, teacher, torch.tensor([0, 1, 2, 0]), temperature=temperature, alpha=1.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_soft_term_is_t_squared_times_kl(temperature):
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    teacher = torch.softmax(3 * torch.randn(6, 3, generator=gen, dtype=torch.float64), dim=-1)
    loss = distillation_loss(
        logits, teacher, torch.zeros(6, dtype=torch.long), temperature=temperature, alpha=1.0
    )
    # Independent implementation: torch's kl_div on the softened teacher.
    kl = F.kl_div(
        F.log_softmax(logits / temperature, dim=-1), soften(teacher, temperature), reduction="batchmean"
    )
    torch.testing.assert_close(loss, temperature**2 * kl)


@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_zero_teacher_probabilities_give_finite_loss_and_gradient(temperature, alpha):
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # one-hot: labels only
    loss = distillation_loss(logits, teacher, torch.tensor([0, 2]), temperature=temperature, alpha=alpha)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_soften_keeps_zeros_and_one_hot():
    probs = torch.tensor([[1.0, 0.0, 0.0], [0.64, 0.36, 0.0]])
    softened = soften(probs, 2.0)
    torch.testing.assert_close(softened, torch.tensor([[1.0, 0.0, 0.0], [0.8 / 1.4, 0.6 / 1.4, 0.0]]))


def test_teacher_gets_no_gradient():
    logits = torch.zeros(1, 2, requires_grad=True)
    teacher = torch.tensor([[0.3, 0.7]], requires_grad=True)
    distillation_loss(logits, teacher, torch.tensor([1]), temperature=2.0, alpha=1.0).backward()
    assert teacher.grad is None
    assert logits.grad is not None


BAD_INPUTS = [
    ("teacher has fewer classes", (2, 3), (2, 2), (2,), {}, "teacher_probs shape"),
    ("one label per example", (2, 3), (2, 3), (3,), {}, "hard_labels shape"),
    ("logits must be 2-D", (3,), (3,), (1,), {}, "student_logits must be"),
    ("labels must be indices", (2, 3), (2, 3), "float", {}, "integer class indices"),
    ("temperature positive", (2, 3), (2, 3), (2,), {"temperature": 0.0}, "temperature"),
    ("alpha within 0..1", (2, 3), (2, 3), (2,), {"alpha": 1.5}, "alpha"),
]


@pytest.mark.parametrize(
    "logits_shape, probs_shape, labels_shape, overrides, message",
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_inputs_raise_clear_errors(logits_shape, probs_shape, labels_shape, overrides, message):
    logits = torch.zeros(logits_shape)
    probs = torch.full(probs_shape, 1.0 / probs_shape[-1])
    if labels_shape == "float":
        labels = torch.zeros(2, dtype=torch.float32)
    else:
        labels = torch.zeros(labels_shape, dtype=torch.long)
    kwargs = {"temperature": 2.0, "alpha": 0.5, **overrides}
    with pytest.raises(ValueError, match=message):
        distillation_loss(logits, probs, labels, **kwargs)


def test_sample_weights_make_a_weighted_mean_of_the_per_example_losses():
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    probs = torch.softmax(torch.randn(4, 3), dim=-1)
    per_example = torch.stack(
        [
            distillation_loss(
                logits[i : i + 1], probs[i : i + 1], labels[i : i + 1], temperature=2.0, alpha=0.5
            )
            for i in range(4)
        ]
    )
    weights = torch.tensor([1.0, 3.0, 0.5, 0.0])
    weighted = distillation_loss(logits, probs, labels, temperature=2.0, alpha=0.5, sample_weights=weights)
    assert weighted == pytest.approx(float((weights * per_example).sum() / weights.sum()), rel=1e-5)
    unweighted = distillation_loss(logits, probs, labels, temperature=2.0, alpha=0.5)
    assert unweighted == pytest.approx(float(per_example.mean()), rel=1e-5)
    assert distillation_loss(
        logits, probs, labels, temperature=2.0, alpha=0.5, sample_weights=torch.ones(4)
    ) == pytest.approx(float(unweighted), rel=1e-6)
    with pytest.raises(ValueError, match="sample_weights shape"):
        distillation_loss(logits, probs, labels, temperature=2.0, alpha=0.5, sample_weights=torch.ones(3))
