"""FiLM noise conditioning for latent classifiers (learnability-gap paper, "Noise-conditioned latent classifier").

The noise level is embedded with Fourier features and an MLP with SiLU (DiT's ``TimestepEmbedder``); after
each ConvNeXt stage ``h <- h * (1 + gamma) + beta`` per channel (FiLM, Perez et al., AAAI 2018), with gamma and
beta from zero-initialised linear layers (DiT adaLN-Zero), so an untrained conditioned network computes
exactly the plain backbone. Noise follows the diffusion forward process ``z_t = sqrt(abar_t) z +
sqrt(1 - abar_t) eps`` with ``abar`` from diffusers' ``DDPMScheduler`` (Stable Diffusion's ``scaled_linear``
0.00085..0.012 over 1000 steps by default), as guided-diffusion's noisy classifier does with ``q_sample``.

The network is conditioned on the noise *level* ``sigma = sqrt(1 - abar_t)`` in [0, 1] (0 = clean) rather
than on a timestep index: a sampler with any schedule can guide with it by passing its own ``abar_t``.
"""

from __future__ import annotations

import math

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


class FourierEmbedding(nn.Module):
    """Sinusoidal features of the noise level followed by an MLP with SiLU (DiT ``TimestepEmbedder``).

    Args:
        dim: embedding width.
        freq_dim: number of Fourier features (half sine, half cosine).
        max_period: longest period; sigma is multiplied by 1000 so that [0, 1] spans the usual timestep range.
    """

    def __init__(self, dim: int = 256, freq_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        half = freq_dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:  # (B,) in [0, 1] -> (B, dim)
        args = 1000.0 * sigma.float()[:, None] * self.freqs[None]
        return self.mlp(torch.cat([torch.cos(args), torch.sin(args)], dim=1))


class NoiseConditioned(nn.Module):
    """A ConvNeXt :class:`~latentgap.models.classifiers.Classifier` with FiLM after every stage.

    Args:
        classifier: a Classifier whose backbone is a timm ConvNeXt (``stem``, ``stages``, ``norm_pre``).
        embed_dim: width of the noise embedding.
    """

    def __init__(self, classifier: nn.Module, embed_dim: int = 256):
        super().__init__()
        bb = classifier.backbone
        if not hasattr(bb, "stages") or not hasattr(bb, "stem"):
            raise ValueError("FiLM noise conditioning needs a ConvNeXt backbone (stem + stages)")
        self.classifier = classifier
        self.embed = FourierEmbedding(embed_dim)
        widths = [stage.blocks[-1].conv_dw.out_channels for stage in bb.stages]
        self.film = nn.ModuleList(nn.Linear(embed_dim, 2 * c) for c in widths)
        for lin in self.film:  # zero init: the conditioned network starts as the plain one
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.num_classes = classifier.num_classes
        self.build_info = {**getattr(classifier, "build_info", {}), "noise_cond": True}

    def forward_features(self, x: torch.Tensor, noise_level: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W) latents; noise_level: (B,) sigma in [0, 1] or None (clean)."""
        bb = self.classifier.backbone
        if noise_level is None:
            noise_level = torch.zeros(x.shape[0], device=x.device)
        e = self.embed(noise_level)  # (B, E)
        h = bb.stem(x)
        for stage, film in zip(bb.stages, self.film):
            h = stage(h)  # (B, C_i, H_i, W_i)
            gamma, beta = film(e).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + gamma) + beta
        return bb.norm_pre(h)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.classifier.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, noise_level))
