"""The built-in KL autoencoder: an SD-style ``AutoencoderKL`` (Rombach et al., CVPR 2022) sized by a few knobs.

It is a plain diffusers ``AutoencoderKL`` built from a config, so it trains here, saves with
``save_pretrained`` and loads back through the same adapter (SD convention: images in [-1, 1],
latent = mode x scaling_factor, where training sets scaling_factor = 1 / std of the training latents).
"""

from __future__ import annotations

from typing import Any

from ..errors import UserError
from .base import AUTOENCODERS, state_dict_sha256
from .diffusers_kl import DiffusersKL

from ..defaults import BUILTIN_DEFAULTS  # noqa: F401  (sized for the CPU main job; re-exported)


def builtin_kl_config(width: int = 8, depth: int = 1, latent_channels: int = 4, downsample: int = 4,
                      in_channels: int = 1, attention: bool = False) -> dict[str, Any]:
    """``AutoencoderKL`` config for the built-in model.

    Args:
        width: channels of the first stage; stage i has ``width * min(2**i, 4)`` (SD: 128 -> 512).
        depth: ResNet blocks per stage (``layers_per_block``; SD uses 2).
        latent_channels: channels of the latent (SD: 4).
        downsample: spatial factor f, a power of two >= 2 (SD: 8); f = 2**(stages - 1).
        in_channels: 1 (grey) or 3 (RGB) -- the model reconstructs the same channels.
        attention: self-attention in the mid blocks (SD: True; off by default for CPU speed).
    """
    stages = downsample.bit_length()  # f = 2**(stages-1)
    if downsample < 2 or downsample & (downsample - 1):
        raise UserError(f"--downsample {downsample} is not a power of two >= 2", "use 2, 4, 8 or 16")
    if in_channels not in (1, 3):
        raise UserError(f"in_channels {in_channels} is not 1 or 3", "train on grey (1) or RGB (3) images")
    if width < 8 or width % 8:
        raise UserError(f"--width {width} is not a positive multiple of 8", "use e.g. --width 32")
    if depth < 1 or latent_channels < 1:
        raise UserError("--depth and --latent-channels must be >= 1", "use e.g. --depth 1 --latent-channels 4")
    channels = [width * min(2**i, 4) for i in range(stages)]
    return dict(
        in_channels=in_channels, out_channels=in_channels,
        down_block_types=["DownEncoderBlock2D"] * stages, up_block_types=["UpDecoderBlock2D"] * stages,
        block_out_channels=channels, layers_per_block=depth, latent_channels=latent_channels,
        norm_num_groups=8,  # divides every width that is a multiple of 8 (SD's 32 would need width >= 32)
        mid_block_add_attention=attention, scaling_factor=1.0, force_upcast=False,
    )


def build_builtin(name: str = "kl-builtin", **knobs) -> DiffusersKL:
    """A freshly initialised built-in autoencoder (call under a seeded torch RNG for repeatable init)."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**builtin_kl_config(**{**BUILTIN_DEFAULTS, **knobs}))
    ae = DiffusersKL(vae, name=name, weights_id="random-init", weights_sha256=state_dict_sha256(vae), convention="sd")
    ae.info.notes["untrained"] = True
    return ae


@AUTOENCODERS.register("kl-builtin")
def _kl_builtin(**knobs):
    return build_builtin(name="kl-builtin", **knobs)
