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

from ..diffusion import CLEAN, NoiseSchedule  # noqa: F401  (the shared forward process)


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
        h = bb.stem(self.classifier.normalize(x))
        for stage, film in zip(bb.stages, self.film):
            h = stage(h)  # (B, C_i, H_i, W_i)
            gamma, beta = film(e).to(h.dtype)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + gamma) + beta
        return bb.norm_pre(h)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.classifier.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, noise_level))
