"""The distillation loss: soft teacher targets plus hard labels, as one pure function.

    loss = alpha * T^2 * KL(p_T || softmax(z / T)) + (1 - alpha) * CE(z, y)

z are the student's logits, y the hard labels, and p the teacher's class probabilities.
The teacher arrives as probabilities rather than logits because that is what we can get
from every teacher: a frontier call log gives logprobs (exponentiated by the caller), a
labelled drop gives only the label (a one-hot or label-smoothed vector), a local teacher
gives its softmax.

Temperature on probability targets: softening logits by T, softmax(l / T), is the same as
raising the probabilities to 1/T and renormalising, because exp(l / T) = exp(l)^(1/T).
So p_T = p^(1/T) / sum(p^(1/T)), which needs no logits and keeps zeros at zero. One-hot
targets stay one-hot at any T; that is expected, only real teacher distributions soften.

The T^2 factor (Hinton et al., 2015) keeps the soft term's gradients the same size as T
changes, so alpha means the same thing at T=1 and T=4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soften(teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """p^(1/T), renormalised per row. Zeros stay exactly zero (0 ** x == 0 for x > 0)."""
    powered = teacher_probs.clamp_min(0.0).pow(1.0 / temperature)
    return powered / powered.sum(dim=-1, keepdim=True)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    hard_labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    sample_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over the batch of alpha*T^2*KL(teacher_T || student_T) + (1-alpha)*CE(student, labels).

    student_logits: (B, C) float; teacher_probs: (B, C), rows sum to 1, zeros allowed;
    hard_labels: (B,) integer class indices. Returns a scalar that carries gradient to
    the student only (the teacher is a fixed target). sample_weights (B,), when given, makes
    it a weighted mean (sum w_i * loss_i / sum w_i): how rare classes get their say.
    """
    if student_logits.ndim != 2:
        raise ValueError(
            f"student_logits must be (batch, classes), got shape {tuple(student_logits.shape)}; "
            "pass the classifier's logits, not a single row."
        )
    if teacher_probs.shape != student_logits.shape:
        raise ValueError(
            f"teacher_probs shape {tuple(teacher_probs.shape)} does not match student_logits "
            f"{tuple(student_logits.shape)}; the teacher needs one probability per student label, "
            "in the student's label order."
        )
    if hard_labels.shape != student_logits.shape[:1]:
        raise ValueError(
            f"hard_labels shape {tuple(hard_labels.shape)} must be ({student_logits.shape[0]},): "
            "one class index per example."
        )
    if hard_labels.dtype.is_floating_point:
        raise ValueError("hard_labels must be integer class indices, not floats or one-hot vectors.")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}.")

    target = soften(teacher_probs.detach().to(student_logits.dtype), temperature)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    # KL(p || q) = sum p log p - p log q; xlogy gives 0 * log 0 = 0 where plain p*log(p) gives NaN.
    kl = (torch.xlogy(target, target) - target * student_log_probs).sum(dim=-1)
    ce = F.cross_entropy(student_logits, hard_labels, reduction="none")
    per_example = alpha * temperature**2 * kl + (1.0 - alpha) * ce
    if sample_weights is None:
        return per_example.mean()
    if sample_weights.shape != per_example.shape:
        raise ValueError(
            f"sample_weights shape {tuple(sample_weights.shape)} must be ({per_example.shape[0]},)."
        )
    weights = sample_weights.to(per_example.dtype)
    return (weights * per_example).sum() / weights.sum().clamp_min(1e-12)
