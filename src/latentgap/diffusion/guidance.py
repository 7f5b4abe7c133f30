"""Classifier guidance in every parameterisation, from one gradient at the variance-preserving (VP) point.

A noise-conditioned classifier is trained on the VP forward process z_vp = alpha x + sigma eps and conditioned on
sigma (equivalently log-SNR). For a generator state z at the network's time input, :func:`guidance_shift` maps z
to its VP point, asks ``log_prob_grad(z_vp, sigma)`` for g = grad_{z_vp} log p(y | z_vp, sigma), and returns the
change of the generator's prediction per unit guidance scale that moves its noise estimate by -sigma g
(Dhariwal & Nichol's eps' = eps - s sigma g):

* v-prediction (z = z_vp): v' = v - s sigma g / alpha;
* flow matching (z_vp = z_t / S, S = sqrt((1 - t)^2 + t^2), sigma = t / S): v' = v - s sigma g / (1 - t),
  which is DESIGN.md's v - s t / (1 - t) grad_{z_t} log p, since grad_{z_t} = g / S.
"""

from __future__ import annotations

from typing import Callable

import torch

from .objectives import MODEL_TIME_SCALE, FlowMatching


def guidance_shift(objective, z: torch.Tensor, model_time: torch.Tensor,
                   log_prob_grad: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The prediction's change per unit guidance scale at state ``z`` (B, C, H, W) and network time input (B,)."""
    if isinstance(objective, FlowMatching):
        t = (model_time / MODEL_TIME_SCALE).clamp(0, 1)
        scale, sigma = FlowMatching.vp(t)
        grad = log_prob_grad(z / scale.view(-1, 1, 1, 1), sigma)
        return -(sigma / (1 - t).clamp_min(1e-3)).view(-1, 1, 1, 1) * grad
    abar = objective.schedule.abar[model_time.long() + 1].to(z)
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    grad = log_prob_grad(z, sigma)
    return -(sigma / alpha.clamp_min(1e-4)).view(-1, 1, 1, 1) * grad
