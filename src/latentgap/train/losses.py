"""Losses as function/module pairs: LDAM with deferred re-weighting, distillation, multi-label BCE.

LDAM and DRW follow Cao et al., "Learning Imbalanced Datasets with Label-Distribution-Aware Margin Loss",
NeurIPS 2019 (kaidic/LDAM-DRW ``losses.py`` and its ``DRW`` rule, here a named function); distillation
follows Hinton et al. 2015 in the form of the learnability-gap paper:
``CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------- LDAM

def ldam_margins(class_counts: Sequence[int], max_margin: float = 0.5) -> torch.Tensor:
    """m_j = C / n_j^(1/4) with C chosen so that the largest margin (rarest class) is ``max_margin``.

    Args:
        class_counts: n_j, training samples per class (K,), all >= 1.
        max_margin: largest margin (0.5 in LDAM).
    """
    n = torch.as_tensor(np.asarray(class_counts, dtype=np.float64))
    if (n < 1).any():
        raise ValueError(f"every class needs at least one training sample, got counts {n.tolist()}")
    m = 1.0 / n ** 0.25
    return (m * (max_margin / m.max())).float()


def ldam_loss(logits: torch.Tensor, target: torch.Tensor, margins: torch.Tensor, s: float = 30.0,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """LDAM: cross-entropy after subtracting the true class's margin from its cosine logit, scale s.

    Args:
        logits: (B, K) scaled cosine logits ``s * cos`` from :class:`~latentgap.models.CosineLinear`
            (subtracting ``s * m_y`` from them equals ``s * (cos_y - m_y)``).
        target: (B,) int64 class ids.
        margins: (K,) from :func:`ldam_margins`.
        s: the head's scale.
        weight: (K,) optional class weights (DRW), as in ``F.cross_entropy``.
    """
    shift = F.one_hot(target, logits.shape[1]).to(logits.dtype) * (s * margins.to(logits.dtype))[None]
    return F.cross_entropy(logits - shift, target, weight=weight)


class LDAMLoss(nn.Module):
    """Module form of :func:`ldam_loss`; margins and class weights are buffers (device-agnostic).

    Args:
        class_counts: training samples per class (K,).
        max_margin: largest margin (0.5).
        s: logit scale of the cosine head (30).
        drw_switch_epoch: epoch from which :func:`drw_weights` re-weights the classes; None = never.
        drw_beta: beta of the class-balanced weights.
    """

    def __init__(self, class_counts: Sequence[int], max_margin: float = 0.5, s: float = 30.0,
                 drw_switch_epoch: int | None = 10, drw_beta: float = 0.9999):
        super().__init__()
        self.register_buffer("margins", ldam_margins(class_counts, max_margin))
        self.register_buffer("weight", torch.ones(len(class_counts)))
        self.class_counts = list(class_counts)
        self.s, self.drw_switch_epoch, self.drw_beta = s, drw_switch_epoch, drw_beta

    def set_epoch(self, epoch: int) -> None:
        """Apply the DRW schedule for ``epoch`` (0-based); called by the training loop each epoch."""
        if self.drw_switch_epoch is not None:
            self.weight.copy_(drw_weights(self.class_counts, epoch, self.drw_switch_epoch, self.drw_beta))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ldam_loss(logits, target, self.margins, self.s, self.weight)


def drw_weights(class_counts: Sequence[int], epoch: int, switch_epoch: int = 10, beta: float = 0.9999) -> torch.Tensor:
    """Deferred re-weighting: uniform before ``switch_epoch``, then class-balanced (Cui et al. 2019) weights.

    ``w_j = (1 - beta) / (1 - beta^{n_j})`` normalised so that the weights sum to K.

    Args:
        class_counts: n_j (K,).
        epoch: current epoch, 0-based (the switch happens when ``epoch >= switch_epoch``).
        switch_epoch: first re-weighted epoch (10 in the paper; LDAM-DRW's CIFAR schedule uses 160).
        beta: 0.9999.
    """
    n = np.asarray(class_counts, dtype=np.float64)
    if epoch < switch_epoch:
        return torch.ones(len(n), dtype=torch.float32)
    w = (1.0 - beta) / (1.0 - np.power(beta, n))
    return torch.as_tensor(w / w.sum() * len(n), dtype=torch.float32)


# ----------------------------------------------------------------------------- distillation

def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, alpha: float = 1.0,
                      temperature: float = 4.0, base: torch.Tensor | None = None) -> torch.Tensor:
    """CE(student, y) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)), batch mean.

    Args:
        student, teacher: (B, K) logits.
        target: (B,) class ids.
        alpha: weight of the soft term.
        temperature: T.
        base: an already computed hard-label loss (e.g. LDAM) to use instead of plain CE.
    """
    hard = F.cross_entropy(student, target) if base is None else base
    log_p_s = F.log_softmax(student / temperature, dim=1)
    log_p_t = F.log_softmax(teacher.to(student.dtype) / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")  # KL(p_t || p_s)
    return hard + alpha * temperature ** 2 * kl


def multilabel_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
                                 alpha: float = 1.0, temperature: float = 4.0,
                                 base: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-label form: BCE(student, y) + alpha * T^2 * mean over samples and labels of the binary
    KL(Bernoulli(sigmoid(teacher / T)) || Bernoulli(sigmoid(student / T))).

    Each label is its own two-class problem (sigmoid, not softmax over labels), so the soft term is the
    per-label two-class KL of :func:`distillation_loss`, averaged over labels like the BCE it is added to.

    Args:
        student, teacher: (B, L) logits.
        target: (B, L) 0/1 labels.
        base: an already computed hard-label loss (e.g. weighted BCE) to use instead of plain BCE.
    """
    hard = multilabel_bce(student, target) if base is None else base
    s, t = student / temperature, teacher.to(student.dtype) / temperature
    p_t = torch.sigmoid(t)
    kl = p_t * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p_t) * (F.logsigmoid(-t) - F.logsigmoid(-s))
    return hard + alpha * temperature ** 2 * kl.mean()


class DistillationLoss(nn.Module):
    """Module form of :func:`distillation_loss` (or, with ``multilabel``, :func:`multilabel_distillation_loss`)
    on top of any hard-label loss module (CE, or BCE for multi-label, by default)."""

    def __init__(self, base: nn.Module | None = None, alpha: float = 1.0, temperature: float = 4.0,
                 multilabel: bool = False):
        super().__init__()
        self.base = base if base is not None else (MultiLabelBCELoss(num_labels=1) if multilabel
                                                   else nn.CrossEntropyLoss())
        self.alpha, self.temperature, self.multilabel = alpha, temperature, multilabel

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def forward(self, student: torch.Tensor, target: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        fn = multilabel_distillation_loss if self.multilabel else distillation_loss
        return fn(student, teacher, target, self.alpha, self.temperature, base=self.base(student, target))


# ----------------------------------------------------------------------------- multi-label

def pos_weights(labels: np.ndarray) -> torch.Tensor:
    """Per-label ``n_neg / n_pos`` (BCE ``pos_weight``), so each label's positives and negatives weigh equally.

    Args:
        labels: (N, L) 0/1 training labels; a label without positives gets weight 1.
    """
    y = np.asarray(labels, dtype=np.float64)
    pos = y.sum(0)
    neg = len(y) - pos
    return torch.as_tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)


def multilabel_bce(logits: torch.Tensor, target: torch.Tensor, pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over labels. logits, target: (B, L); pos_weight: (L,)."""
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=pos_weight)


class MultiLabelBCELoss(nn.Module):
    """Module form of :func:`multilabel_bce` with ``pos_weight`` from the training labels as a buffer."""

    def __init__(self, train_labels: np.ndarray | None = None, num_labels: int | None = None):
        super().__init__()
        pw = pos_weights(train_labels) if train_labels is not None else torch.ones(num_labels)
        self.register_buffer("pos_weight", pw)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return multilabel_bce(logits, target, self.pos_weight)
