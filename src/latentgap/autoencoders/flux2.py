"""diffusers ``AutoencoderKLFlux2`` (FLUX.2 VAE) with the FLUX.2 pipeline's latent normalisation.

Follows ``diffusers/pipelines/flux2/pipeline_flux2.py`` (``_encode_vae_image``, ``_patchify_latents``,
``_unpatchify_latents``): the 32-channel posterior mode at x8 is grouped into 2x2 patches (128 channels
at x16), then normalised per channel with the VAE's own BatchNorm running statistics,
``(z - bn.running_mean) / sqrt(bn.running_var + config.batch_norm_eps)``. There is no scaling factor.
Images enter the VAE in [-1, 1] (``Flux2ImageProcessor`` normalises to [-1, 1]).
"""

from __future__ import annotations

import torch

from .base import AUTOENCODERS, AEInfo, Autoencoder
from .diffusers_kl import kl_training_outputs
from .hub import describe_weights, from_pretrained, split_hub_spec


def patchify(z: torch.Tensor, ph: int = 2, pw: int = 2) -> torch.Tensor:
    """``(B, C, H, W) -> (B, C*ph*pw, H/ph, W/pw)``; output channel ``c*ph*pw + i*pw + j`` holds
    ``z[:, c, i::ph, j::pw]`` (the pipeline's view / permute(0, 1, 3, 5, 2, 4) order)."""
    b, c, h, w = z.shape
    z = z.view(b, c, h // ph, ph, w // pw, pw).permute(0, 1, 3, 5, 2, 4)
    return z.reshape(b, c * ph * pw, h // ph, w // pw)


def unpatchify(z: torch.Tensor, ph: int = 2, pw: int = 2) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, C*ph*pw, h, w) -> (B, C, h*ph, w*pw)``."""
    b, cp, h, w = z.shape
    z = z.reshape(b, cp // (ph * pw), ph, pw, h, w).permute(0, 1, 4, 2, 5, 3)
    return z.reshape(b, cp // (ph * pw), h * ph, w * pw)


class Flux2KL(Autoencoder):
    """Wraps ``diffusers.AutoencoderKLFlux2``; ``encode`` returns patchified, BN-normalised latents.

    Args:
        vae: the diffusers model (float32); its ``bn`` running statistics define the normalisation.
        name / weights_id / weights_sha256: recorded in :class:`AEInfo`.
    """

    trainable = True

    def __init__(self, vae, *, name: str, weights_id: str, weights_sha256: str):
        super().__init__()
        self.vae = vae.eval()
        cfg = vae.config
        self.ph, self.pw = (int(p) for p in cfg.patch_size)
        self.eps = float(cfg.batch_norm_eps)
        f = 2 ** (len(cfg.block_out_channels) - 1)
        if self.ph != self.pw:
            raise ValueError(f"non-square FLUX.2 patch size {cfg.patch_size} is not supported")
        self.info = AEInfo(
            name=name, backend="flux2", weights_id=weights_id, weights_sha256=weights_sha256,
            in_channels=int(cfg.in_channels), latent_channels=int(cfg.latent_channels) * self.ph * self.pw,
            downsample=f * self.ph,
            scaling=f"(patchify{self.ph}x{self.pw}(mode) - bn.running_mean) / sqrt(bn.running_var + {self.eps:g})",
            image_range=(-1.0, 1.0), deterministic=True,
            notes={"convention": "flux2", "vae_latent_channels": int(cfg.latent_channels), "vae_downsample": f,
                   "patch_size": [self.ph, self.pw], "batch_norm_eps": self.eps,
                   "posterior": "mode (mean of the diagonal Gaussian), never a sample"},
        )

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.vae.bn.running_mean.view(1, -1, 1, 1).to(like)
        std = torch.sqrt(self.vae.bn.running_var.view(1, -1, 1, 1) + self.eps).to(like)
        return mean, std

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.vae.encode(x * 2 - 1).latent_dist.mode()  # (B, 32, H/8, W/8)
        z = patchify(mode, self.ph, self.pw)  # (B, 128, H/16, W/16)
        mean, std = self._stats(z)
        return (z - mean) / std

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        raw = unpatchify(z * std + mean, self.ph, self.pw)
        return (self.vae.decode(raw).sample + 1) / 2

    def training_outputs(self, x, generator=None):
        # The BatchNorm is only a latent normaliser outside the VAE's forward pass; fine-tuning keeps the
        # parent's running statistics so latents stay in the FLUX.2 transformer's coordinates.
        return kl_training_outputs(self.vae, x, generator)

    def trainable_module(self):
        return self.vae

    def save_pretrained(self, directory):
        self.vae.save_pretrained(str(directory), safe_serialization=True)


def load_flux2(spec: str, *, name: str | None = None, subfolder: str | None = None) -> Flux2KL:
    """Load an ``AutoencoderKLFlux2`` from a hub id (``owner/name[/subfolder]``) or a local folder."""
    from diffusers import AutoencoderKLFlux2

    repo, sub = split_hub_spec(spec)
    sub = subfolder or sub
    vae = from_pretrained(AutoencoderKLFlux2, repo, sub)
    wid, sha = describe_weights(repo, sub)
    return Flux2KL(vae, name=name or spec, weights_id=wid, weights_sha256=sha)


@AUTOENCODERS.register("flux2-vae")
def _flux2_vae():
    # FLUX.2-dev is gated on the hub: the user must accept its licence and be logged in.
    return load_flux2("black-forest-labs/FLUX.2-dev", subfolder="vae", name="flux2-vae")

