"""The diffusion forward process shared by every part of latentgap that adds noise to latents.

Noise-conditioned classifiers (``models/film.py``) train on it, and the latent diffusion generator and the
segmenter must use the *same* process so that a classifier can guide their samplers (DESIGN.md, "Classifier
guidance"). ``abar`` comes from diffusers' ``DDPMScheduler`` (Stable Diffusion's ``scaled_linear``
0.00085..0.012 over 1000 steps by default), ``q_sample`` is guided-diffusion's.

Index convention: timestep ids run over ``-1..T-1``; ``-1`` (:data:`CLEAN`) is an un-noised sample, ``t >= 0``
is diffusers' timestep ``t``. Besides the timestep, every quantity is available as a function of the noise
level ``sigma = sqrt(1 - abar)`` and of ``log_snr = log(abar / (1 - abar))``, the parameter that does not
depend on the schedule's discretisation.
"""

from __future__ import annotations

import torch
from torch import nn

CLEAN = -1  # timestep id of an un-noised sample


class NoiseSchedule(nn.Module):
    """``abar_t`` of a diffusion model, ``q_sample`` and per-sample timestep draws.

    Args:
        num_train_timesteps: T (timesteps 0..T-1; -1 means clean).
        beta_schedule: a diffusers schedule name ("scaled_linear", "linear", "squaredcos_cap_v2").
        beta_start, beta_end: betas at t = 0 and T - 1.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "scaled_linear",
                 beta_start: float = 0.00085, beta_end: float = 0.012):
        super().__init__()
        from diffusers import DDPMScheduler
        sched = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                              beta_start=beta_start, beta_end=beta_end)
        # index 0 is the clean sample (abar = 1), index t + 1 is diffusers' timestep t
        abar = torch.cat([torch.ones(1), sched.alphas_cumprod.float()])
        self.register_buffer("abar", abar, persistent=False)
        self.num_train_timesteps = num_train_timesteps

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        """sigma = sqrt(1 - abar_t) in [0, 1]; t: (B,) int in [-1, T-1]."""
        return (1 - self.abar[t + 1]).clamp_min(0).sqrt()

    def q_sample(self, z: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps. z, noise: (B, C, H, W); t: (B,)."""
        a = self.abar[t + 1].view(-1, 1, 1, 1).to(z.dtype)
        return a.sqrt() * z + (1 - a).sqrt() * noise

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None, *,
                         clean_fraction: float = 0.0, max_fraction: float = 1.0) -> torch.Tensor:
        """Per-sample t: clean with probability ``clean_fraction``, else uniform on [0, max_fraction * T).

        Args:
            n: batch size.
            generator: CPU generator (reproducible draws whatever the device).
            clean_fraction: share of clean samples in [0, 1].
            max_fraction: largest noise level used, as a fraction of T (1 = up to pure noise).
        """
        t_max = max(1, int(round(max_fraction * self.num_train_timesteps)))
        t = torch.randint(0, t_max, (n,), generator=generator)
        if clean_fraction > 0:
            clean = torch.rand(n, generator=generator) < clean_fraction
            t = torch.where(clean, torch.full_like(t, CLEAN), t)
        return t

    def quartile(self, t: torch.Tensor) -> torch.Tensor:
        """Timestep quartile 0..3 (guided-diffusion's ``loss_q0..q3``); clean samples count as q0."""
        return (4 * t.clamp_min(0) // self.num_train_timesteps).clamp_max(3)

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """log(abar_t / (1 - abar_t)); +inf for clean samples (t = -1). t: (B,) int in [-1, T-1]."""
        a = self.abar[t + 1].double()
        return (a.log() - (1 - a).log()).float()
