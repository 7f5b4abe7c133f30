"""Training objectives of the latent diffusion generator, and their common noise parameter.

* ``flow`` — rectified flow / flow matching (Liu et al. 2023; Esser et al. 2024, SD3): z_t = (1 - t) x + t eps,
  the network predicts the velocity v = eps - x, timesteps t = sigmoid(u) with u ~ N(m, s) (logit-normal).
* ``vpred`` — DDPM with v-prediction (Salimans & Ho 2022) on the shared :class:`~latentgap.diffusion.NoiseSchedule`:
  z_t = sqrt(abar) x + sqrt(1 - abar) eps, target v = sqrt(abar) eps - sqrt(1 - abar) x, loss weighted by
  min-SNR-gamma (Hang et al. 2023): w = min(SNR, gamma) / (SNR + 1) for v-prediction.

Both expose the state as a variance-preserving (VP) pair ``(alpha, sigma)`` with alpha^2 + sigma^2 = 1 after
scaling: for flow, z_t / s with s = sqrt((1 - t)^2 + t^2), alpha = (1 - t)/s, sigma = t/s. A noise-conditioned
latent classifier is trained on the VP process and conditioned on sigma (log-SNR = log(alpha^2 / sigma^2) is the
same information), so one classifier can guide either generator (``guidance.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .schedule import NoiseSchedule

OBJECTIVES = ("flow", "vpred")
MODEL_TIME_SCALE = 1000.0  # flow times in [0, 1] reach the network as t * 1000 (the range of DDPM timesteps)


@dataclass
class NoisyBatch:
    """One training draw: the noisy input, the network's time input, the target, per-sample loss weights and
    the VP coordinates (scale s: z_vp = z_t / s; sigma: the VP noise level)."""

    z_t: torch.Tensor
    model_time: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    scale: torch.Tensor
    sigma: torch.Tensor


class FlowMatching:
    """Rectified flow with logit-normal timesteps."""

    name = "flow"

    def __init__(self, logit_mean: float = 0.0, logit_std: float = 1.0):
        self.logit_mean, self.logit_std = logit_mean, logit_std

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> NoisyBatch:
        b = x.shape[0]
        t = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(b, generator=generator))
        eps = torch.randn(x.shape, generator=generator)
        return self.noisy(x, t, eps)

    def noisy(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> NoisyBatch:
        """The batch for given times t (B,) in [0, 1] and noise eps."""
        tt = t.view(-1, 1, 1, 1).to(x)
        z_t = (1 - tt) * x + tt * eps.to(x)
        scale, sigma = self.vp(t)
        return NoisyBatch(z_t, t * MODEL_TIME_SCALE, eps.to(x) - x, torch.ones_like(t), scale, sigma)

    @staticmethod
    def vp(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s, sigma) at flow time t: z_t / s = alpha x + sigma eps with alpha^2 + sigma^2 = 1."""
        s = ((1 - t) ** 2 + t ** 2).sqrt()
        return s, t / s

    @staticmethod
    def x0_eps(z_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) from a velocity prediction: x0 = z_t - t v, eps = z_t + (1 - t) v."""
        tt = t.view(-1, 1, 1, 1).to(z_t)
        return z_t - tt * pred, z_t + (1 - tt) * pred


class VPrediction:
    """DDPM v-prediction with min-SNR-gamma loss weights, on the shared noise schedule."""

    name = "vpred"

    def __init__(self, schedule: NoiseSchedule | None = None, min_snr_gamma: float | None = 5.0):
        self.schedule = schedule or NoiseSchedule()
        self.gamma = min_snr_gamma

    def draw(self, x: torch.Tensor, generator: torch.Generator) -> NoisyBatch:
        t = torch.randint(0, self.schedule.num_train_timesteps, (x.shape[0],), generator=generator)
        eps = torch.randn(x.shape, generator=generator)
        return self.noisy(x, t, eps)

    def noisy(self, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> NoisyBatch:
        """The batch for integer timesteps t (B,) in [0, T) and noise eps."""
        abar = self.schedule.abar[t + 1].to(x)
        a, s = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
        eps = eps.to(x)
        snr = abar / (1 - abar)
        w = torch.ones_like(snr) if self.gamma is None else snr.clamp(max=self.gamma) / (snr + 1)
        return NoisyBatch(a * x + s * eps, t.float(), a * eps - s * x, w, torch.ones_like(abar), (1 - abar).sqrt())

    def x0_eps(self, z_t: torch.Tensor, pred: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) from a v prediction: x0 = a z - s v, eps = s z + a v."""
        abar = self.schedule.abar[t.long() + 1].to(z_t)
        a, s = abar.sqrt().view(-1, 1, 1, 1), (1 - abar).sqrt().view(-1, 1, 1, 1)
        return a * z_t - s * pred, s * z_t + a * pred


def build_objective(name: str, *, logit_mean: float = 0.0, logit_std: float = 1.0,
                    min_snr_gamma: float | None = 5.0):
    if name == "flow":
        return FlowMatching(logit_mean, logit_std)
    if name == "vpred":
        return VPrediction(NoiseSchedule(), min_snr_gamma)
    from ..errors import UserError

    raise UserError(f"unknown objective '{name}'", f"use one of: {', '.join(OBJECTIVES)}")


def weighted_mse(pred: torch.Tensor, batch: NoisyBatch) -> torch.Tensor:
    """mean_i w_i * mean((pred_i - target_i)^2)."""
    per = ((pred.float() - batch.target.float()) ** 2).mean(dim=tuple(range(1, pred.ndim)))
    return (batch.weight.to(per) * per).mean()
