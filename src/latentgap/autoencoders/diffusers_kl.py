"""diffusers ``AutoencoderKL`` with the Stable Diffusion 1.x and FLUX.1 latent conventions.

SD 1.x (Rombach et al., CVPR 2022, sec. 4.3.2 / D.1): images in [-1, 1], latent = posterior mode x 0.18215.
FLUX.1 (black-forest-labs/flux, ``AutoEncoder.encode``): latent = (mode - 0.1159) x 0.3611.
The factors come from the model's ``config.json`` (``scaling_factor``, ``shift_factor``); the documented
values above are the fallback when a config lacks them.
"""

from __future__ import annotations

import dataclasses

import torch

from .base import AUTOENCODERS, AEInfo, Autoencoder
from .hub import describe_weights, from_pretrained, split_hub_spec

# Documented defaults (DESIGN.md "Facts"), used only when the config does not carry its own values.
SD_SCALE = 0.18215
FLUX1_SCALE, FLUX1_SHIFT = 0.3611, 0.1159


def kl_factors(config, convention: str | None) -> tuple[str, float, float]:
    """(convention, scale, shift) for an ``AutoencoderKL`` config; ``convention=None`` infers it
    (a non-zero ``shift_factor`` means FLUX.1)."""
    shift_cfg = config.get("shift_factor")
    if convention is None:
        convention = "flux1" if shift_cfg else "sd"
    if convention == "sd":
        return "sd", float(config.get("scaling_factor") or SD_SCALE), 0.0
    if convention == "flux1":
        if shift_cfg is None:  # config without FLUX.1 factors: its scaling_factor is only the class default
            return "flux1", FLUX1_SCALE, FLUX1_SHIFT
        return "flux1", float(config.get("scaling_factor") or FLUX1_SCALE), float(shift_cfg)
    raise ValueError(f"unknown AutoencoderKL convention '{convention}' (use 'sd' or 'flux1')")


def kl_training_outputs(vae, x: torch.Tensor, generator: torch.Generator | None = None):
    """One stochastic pass of a diffusers KL VAE for training: images [0, 1] -> (reconstruction in [0, 1]
    from a posterior *sample*, per-sample KL to N(0, I)). Shared by every diffusers KL backend."""
    post = vae.encode(x * 2 - 1).latent_dist
    x_hat = vae.decode(post.sample(generator)).sample
    return (x_hat + 1) / 2, post.kl()


class DiffusersKL(Autoencoder):
    """Wraps ``diffusers.AutoencoderKL``; ``z = (mode - shift) * scale``, decode inverts it.

    Args:
        vae: the diffusers model (float32).
        name: name to record in :class:`AEInfo`.
        weights_id / weights_sha256: provenance of the weights.
        convention: ``"sd"``, ``"flux1"`` or ``None`` (infer from the config).
    """

    trainable = True

    def __init__(self, vae, *, name: str, weights_id: str, weights_sha256: str, convention: str | None = None):
        super().__init__()
        self.vae = vae.eval()
        cfg = vae.config
        convention, self.scale, self.shift = kl_factors(cfg, convention)
        formula = f"mode * {self.scale:g}" if convention == "sd" else f"(mode - {self.shift:g}) * {self.scale:g}"
        self.info = AEInfo(
            name=name, backend="diffusers-kl", weights_id=weights_id, weights_sha256=weights_sha256,
            in_channels=int(cfg.in_channels), latent_channels=int(cfg.latent_channels),
            downsample=2 ** (len(cfg.block_out_channels) - 1), scaling=formula, image_range=(-1.0, 1.0),
            deterministic=True,
            notes={"convention": convention, "scaling_factor": self.scale, "shift_factor": self.shift,
                   "posterior": "mode (mean of the diagonal Gaussian), never a sample"},
        )

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.vae.encode(x * 2 - 1).latent_dist.mode()  # (B, c, H/f, W/f)
        return (mode - self.shift) * self.scale

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode(z / self.scale + self.shift).sample  # [-1, 1]
        return (x + 1) / 2

    def training_outputs(self, x, generator=None):
        return kl_training_outputs(self.vae, x, generator)

    def trainable_module(self):
        return self.vae

    def set_scaling_factor(self, value: float) -> None:
        """SD convention after training: ``scaling_factor = 1 / std`` of the raw training latents."""
        self.vae.register_to_config(scaling_factor=float(value))
        _, self.scale, self.shift = kl_factors(self.vae.config, self.info.notes["convention"])
        formula = (f"mode * {self.scale:g}" if self.info.notes["convention"] == "sd"
                   else f"(mode - {self.shift:g}) * {self.scale:g}")
        self.info = dataclasses.replace(self.info, scaling=formula,
                                        notes={**self.info.notes, "scaling_factor": self.scale})

    def save_pretrained(self, directory):
        self.vae.save_pretrained(str(directory), safe_serialization=True)


def load_kl(spec: str, *, name: str | None = None, subfolder: str | None = None,
            convention: str | None = None) -> DiffusersKL:
    """Load an ``AutoencoderKL`` from a hub id (``owner/name[/subfolder]``) or a local folder."""
    from diffusers import AutoencoderKL

    repo, sub = split_hub_spec(spec)
    sub = subfolder or sub
    vae = from_pretrained(AutoencoderKL, repo, sub)
    wid, sha = describe_weights(repo, sub)
    return DiffusersKL(vae, name=name or spec, weights_id=wid, weights_sha256=sha, convention=convention)


# ---------------------------------------------------------------- registry (hub weights; users are online)


@AUTOENCODERS.register("sd-vae")
def _sd_vae():
    return load_kl("CompVis/stable-diffusion-v1-4", subfolder="vae", name="sd-vae", convention="sd")


@AUTOENCODERS.register("sd-vae-ft-mse")
def _sd_vae_ft_mse():
    return load_kl("stabilityai/sd-vae-ft-mse", name="sd-vae-ft-mse", convention="sd")


@AUTOENCODERS.register("flux1-vae")
def _flux1_vae():
    # FLUX.1-dev is gated on the hub: the user must accept its licence and be logged in.
    return load_kl("black-forest-labs/FLUX.1-dev", subfolder="vae", name="flux1-vae", convention="flux1")

