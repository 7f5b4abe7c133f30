"""Class-conditional denoisers from diffusers, behind one call: ``model(z_t, model_time, labels) -> prediction``.

* ``dit`` (default) — ``DiTTransformer2DModel`` (Peebles & Xie 2023): adaLN-Zero blocks conditioned on the
  time and a class embedding whose extra row (index K) is the "no class" token of classifier-free guidance.
  diffusers drops labels inside the model with the global RNG; here the drop is done by the training loop from
  the run's own generator (reproducible, resumable), so the model's internal drop is switched off.
* ``unet`` — ``UNet2DModel`` with a class-embedding table of K + 1 rows (the last one "no class").

Sizes run from ``tiny`` (CPU, minutes) to ``base`` (DiT-B/UNet of the ADM class, GPU). The DiT patch size is
chosen from the latent grid so that the token count stays at or below 256 (the DiT paper's 32x32 / p2).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError

BACKBONES = ("dit", "unet")
# name -> (heads, head dim, layers) for DiT; (block channels, layers per block, attention) for the UNet
DIT_SIZES = {"tiny": (4, 16, 4), "small": (6, 32, 8), "base": (12, 64, 12), "large": (16, 64, 24)}
UNET_SIZES = {"tiny": ((32, 64), 1, False), "small": ((64, 128, 128), 2, True),
              "base": ((128, 256, 256, 512), 2, True), "large": ((192, 384, 576, 768), 2, True)}


def dit_patch_size(grid: int) -> int:
    """The smallest patch in (1, 2, 4, 8) that keeps the token count (grid / p)^2 <= 256 and divides the grid."""
    for p in (1, 2, 4, 8):
        if grid % p == 0 and (grid // p) ** 2 <= 256:
            return p
    raise UserError(f"latent grid {grid} is too large or not divisible by a DiT patch size",
                    "use the unet backbone for this latent grid")


class Denoiser(nn.Module):
    """A diffusers backbone with latentgap's calling convention and its build record.

    Attributes:
        num_classes: K (label K is "no class", used for classifier-free guidance).
        build: what was built (backbone, size, channels, grid, patch, parameters).
    """

    def __init__(self, net: nn.Module, backbone: str, num_classes: int, build: dict):
        super().__init__()
        self.net, self.backbone, self.num_classes, self.build = net, backbone, num_classes, build

    def forward(self, z_t: torch.Tensor, model_time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.backbone == "dit":
            return self.net(z_t, timestep=model_time, class_labels=labels).sample
        return self.net(z_t, model_time, class_labels=labels).sample


def build_denoiser(backbone: str, size: str, channels: int, grid: int, num_classes: int, *,
                   patch_size: int | None = None) -> Denoiser:
    """The generator network for latents of ``channels`` x ``grid`` x ``grid`` and ``num_classes`` classes."""
    from diffusers import DiTTransformer2DModel, UNet2DModel

    if backbone not in BACKBONES:
        raise UserError(f"unknown backbone '{backbone}'", f"use one of: {', '.join(BACKBONES)}")
    sizes = DIT_SIZES if backbone == "dit" else UNET_SIZES
    if size not in sizes:
        raise UserError(f"unknown generator size '{size}'", f"use one of: {', '.join(sizes)}")
    if backbone == "dit":
        heads, head_dim, layers = sizes[size]
        p = patch_size or dit_patch_size(grid)
        if grid % p:
            raise UserError(f"DiT patch size {p} does not divide the latent grid {grid}", "pick another --patch-size")
        net = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=head_dim, in_channels=channels,
                                    out_channels=channels, num_layers=layers, sample_size=grid, patch_size=p,
                                    num_embeds_ada_norm=num_classes)
        for m in net.modules():  # the null-class row stays; the training loop drops labels itself
            if type(m).__name__ == "LabelEmbedding":
                m.dropout_prob = 0.0
        build = {"patch_size": p, "width": heads * head_dim, "layers": layers}
    else:
        chans, per_block, attn = sizes[size]
        levels = len(chans)
        while levels > 1 and grid % (2 ** (levels - 1)):
            levels -= 1
        chans = chans[:levels]
        down = tuple("AttnDownBlock2D" if attn and i > 0 else "DownBlock2D" for i in range(levels))
        up = tuple("AttnUpBlock2D" if attn and i < levels - 1 else "UpBlock2D" for i in range(levels))
        groups = 8 if min(chans) % 8 == 0 else 1
        net = UNet2DModel(sample_size=grid, in_channels=channels, out_channels=channels, block_out_channels=chans,
                          layers_per_block=per_block, down_block_types=down, up_block_types=up,
                          norm_num_groups=groups, num_class_embeds=num_classes + 1)
        build = {"block_out_channels": list(chans), "layers_per_block": per_block}
    n_params = sum(q.numel() for q in net.parameters())
    return Denoiser(net, backbone, num_classes, {"backbone": backbone, "size": size, "channels": channels,
                                                 "grid": grid, "num_classes": num_classes, "parameters": n_params,
                                                 **build})
