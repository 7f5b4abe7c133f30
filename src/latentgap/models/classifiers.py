"""Classifier builders for the three spaces: timm ResNets (images, reconstructions) and ConvNeXts (latents).

Follows timm's ``create_model`` / ``forward_features`` / ``forward_head`` interface (Wightman,
pytorch-image-models) and the paper's setup (learnability-gap paper, Setup): ImageNet-pretrained ResNet-50
for image and reconstruction space, ConvNeXt-Tiny (Liu et al., CVPR 2022) with its input layer adapted to
the autoencoder's latent channels for latent space. LDAM's cosine head follows Cao et al., NeurIPS 2019.

Small inputs. Both families downsample by 32 (a stride-4 stem, then three stride-2 stages), so a 4x4..16x16
latent would vanish. The stem stride and the number of stride-2 stages are chosen from ``input_size``
(:func:`plan_strides`): ConvNeXt keeps the standard /32 geometry where the last stage still sees >= 1x1 and
lowers the stem stride (4 -> 2 -> 1) only as far as needed; below 8x8 the last stages keep their resolution.
Every change only edits strides and padding, so weight shapes (and ImageNet weights) stay loadable, and
the standard layouts are untouched at 224 px.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..storage import hub_reachable
from ..registry import Registry

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())  # the rich line below is the visible one; apps may route the log record

CLASSIFIERS = Registry("classifiers")

# 'same' padding with the 2x2/4x4 kernels kept below costs one padded copy per call; harmless at these sizes.
warnings.filterwarnings("ignore", message="Using padding='same' with even kernel lengths")

# timm architecture behind each registered name, and the stem rule of its family.
_ARCH = {
    "resnet18": "resnet", "resnet50": "resnet",
    "convnext_atto": "convnext", "convnext_nano": "convnext", "convnext_tiny": "convnext",
}


# ----------------------------------------------------------------------------- heads

class CosineLinear(nn.Module):
    """Cosine (normalised) head: ``logits = s * cos(feature, w_j)`` (LDAM-DRW's ``NormedLinear``, times s).

    The scale lives here so that every consumer (softmax probabilities, distillation, LDAM) sees the
    same logits; LDAM subtracts ``s * m_y``, which equals ``s * (cos - m_y)``.

    Args:
        in_features: feature width D.
        num_classes: K.
        scale: s (30 in LDAM).
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features).uniform_(-1, 1))
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, K)
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


class Classifier(nn.Module):
    """A timm backbone with its own head, exposing ``forward_features`` / ``forward_head`` like timm.

    Args:
        backbone: timm model built with ``num_classes=0`` (its ``forward_head(pre_logits=True)`` pools).
        num_classes: K (classes, or labels for multi-label).
        cosine_head: LDAM's normalised head instead of a linear one.
        scale: logit scale s of the cosine head.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, cosine_head: bool = False, scale: float = 30.0,
                 in_chans: int = 1, input_mean=None, input_std=None):
        super().__init__()
        # input normalisation of the pretrained weights (ImageNet mean/std for images in [0, 1]); identity
        # otherwise. Buffers, so that a run folder's checkpoint carries it back (load_run).
        c = len(input_mean) if input_mean is not None else in_chans
        self.register_buffer("input_mean", torch.zeros(1, c, 1, 1) if input_mean is None
                             else torch.tensor(input_mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("input_std", torch.ones(1, c, 1, 1) if input_std is None
                             else torch.tensor(input_std, dtype=torch.float32).view(1, c, 1, 1))
        self.backbone = backbone
        self.num_features = backbone.num_features
        self.num_classes = num_classes
        self.head = (CosineLinear(self.num_features, num_classes, scale) if cosine_head
                     else nn.Linear(self.num_features, num_classes))
        self.arch = getattr(backbone, "default_cfg", {}).get("architecture", type(backbone).__name__)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        return (x - self.input_mean.to(x.dtype)) / self.input_std.to(x.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, D, h, w)
        return self.backbone.forward_features(self.normalize(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:  # (B, D, h, w) -> (B, K)
        x = self.backbone.forward_head(x, pre_logits=True)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------- stems for small inputs

def plan_strides(family: str, input_size: int) -> tuple[int, int]:
    """(stem stride, number of stride-2 stages) for an input side of ``input_size`` pixels.

    ConvNeXt keeps the standard geometry (stride-4 patchify stem, then three stride-2 stages: /32) wherever
    the last stage still sees >= 1x1, and otherwise lowers the stem stride only as far as needed
    (64 px and 32x32 latents: stem 4; 16x16: 2; 8x8: 1). Below 8x8 even a stride-1 stem would lose the
    map, so the last stages keep their resolution instead (4x4 -> 4, 2, 1, 1). Staying as close as possible
    to ImageNet's /32 geometry keeps latent training cheap, which is the point of a latent classifier;
    its downsampling convs have no padding, so sizes are floored.

    ResNets follow small-image practice (CIFAR / MedMNIST ResNets): the max-pool, then the stem stride,
    are dropped until the stem output is >= 14 px, so a 28 px image reaches the last stage at 2x2 rather
    than 1x1; their padded convs round sizes up, so a ResNet map never vanishes.
    """
    if family == "resnet":
        stem = 4
        while stem > 1 and math.ceil(input_size / stem) < 14:
            stem //= 2
        return stem, 3
    stem = 4
    while stem > 1 and input_size // stem < 8:
        stem //= 2
    side, n_down = input_size // stem, 0
    while n_down < 3 and side // 2 >= 1:
        side, n_down = side // 2, n_down + 1
    return stem, n_down


def _adapt_convnext(model: nn.Module, input_size: int, stem_patch: int | None = None) -> dict:
    if stem_patch:
        # architecture-matched control: images of a x p autoencoder's latent grid g = side / p get the stem of a
        # latent classifier on that grid scaled by p (a (p*s) x (p*s) patchify conv, s the latent stem's stride),
        # so every layer after the stem sees the maps of the latent classifier, only the input differs
        latent_stem, n_down = plan_strides("convnext", input_size // stem_patch)
        k = stem_patch * latent_stem
        conv = model.stem[0]
        model.stem[0] = nn.Conv2d(conv.in_channels, conv.out_channels, k, stride=k)
        for i in range(1 + n_down, 4):
            ds = model.stages[i].downsample[1]
            ds.stride, ds.padding = (1, 1), "same"
        return {"stem_stride": k, "stride2_stages": n_down, "stem_patch": stem_patch}
    stem, n_down = plan_strides("convnext", input_size)
    conv = model.stem[0]  # Conv2d(in, C, 4, stride 4): keep the 4x4 kernel (weights), change stride/padding
    if stem == 2:
        conv.stride, conv.padding = (2, 2), (1, 1)  # (H + 2 - 4) // 2 + 1 = H / 2
    elif stem == 1:
        conv.stride, conv.padding = (1, 1), "same"
    for i in range(1 + n_down, 4):  # stages 1..3 start with LayerNorm + Conv2d(k=2, s=2)
        ds = model.stages[i].downsample[1]
        ds.stride, ds.padding = (1, 1), "same"
    return {"stem_stride": stem, "stride2_stages": n_down}


def _adapt_resnet(model: nn.Module, input_size: int, stem_stride: int | None = None) -> dict:
    stem, n_down = plan_strides("resnet", input_size)
    stem = stem_stride or stem  # an explicit stem (e.g. 1: MedMNIST v2's ResNets at 28 px) overrides the rule
    if stem < 4:  # drop the max-pool first (CIFAR / MedMNIST-style small-image ResNets)
        model.maxpool = nn.Identity()
    if stem < 2:
        model.conv1.stride = (1, 1)
    return {"stem_stride": stem, "stride2_stages": n_down}


# ----------------------------------------------------------------------------- pretrained weights

def _cached_hub_file(name: str) -> str | None:
    """Path of the ImageNet weights of ``name`` in the local Hugging Face cache, if any."""
    from huggingface_hub import try_to_load_from_cache
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    for fname in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(cfg.hf_hub_id, fname)
        if isinstance(path, str):
            return path
    return None


def _build_backbone(name: str, in_chans: int, pretrained, **kw) -> tuple[nn.Module, dict]:
    """timm model (no head) plus a record of what weights it got: {pretrained: bool, reason: str}."""
    def build(**extra):
        return timm.create_model(name, in_chans=in_chans, num_classes=0, **kw, **extra)

    if pretrained is False:
        return build(), {"pretrained": False, "pretrained_reason": "disabled"}
    if isinstance(pretrained, (str, Path)) and pretrained != "auto":
        path = Path(pretrained)
        if not path.is_file():
            raise UserError(f"pretrained weights file '{path}' does not exist",
                            "pass an existing .safetensors/.pth file, or --pretrained auto/false")
        # timm adapts the input conv to in_chans and drops the ImageNet classifier for us
        model = build(pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        return model, {"pretrained": True, "pretrained_reason": f"file {path.name}"}
    # "auto" or True: local HF cache first, then the hub when it answers
    cached = _cached_hub_file(name)
    if cached:
        return (build(pretrained=True, pretrained_cfg_overlay={"file": cached}),
                {"pretrained": True, "pretrained_reason": "imagenet (local hub cache)"})
    if hub_reachable():
        try:
            return build(pretrained=True), {"pretrained": True, "pretrained_reason": "imagenet (hub)"}
        except Exception as e:  # hub answered but the file could not be fetched
            reason = f"hub download failed: {type(e).__name__}"
    else:
        reason = "offline: ImageNet weights not reachable"
    if pretrained is True:
        raise UserError(f"ImageNet weights for '{name}' are not available ({reason})",
                        "pass --pretrained PATH to a local weights file, or --pretrained auto to fall back to random init")
    _warn(f"{name}: {reason}; training from random initialisation (recorded as pretrained=false in the result row)")
    return build(), {"pretrained": False, "pretrained_reason": reason}


def _warn(msg: str) -> None:
    log.warning(msg)
    from ..progress import console
    console.print(f"[bold yellow]warning:[/] {msg}")


# ----------------------------------------------------------------------------- registry

def _factory(arch_name: str):
    def make(*, in_chans: int, num_classes: int, input_size: int, pretrained="auto",
             cosine_head: bool = False, scale: float = 30.0, image_input: bool = True, stem_patch: int | None = None,
             stem_stride: int | None = None, **kw) -> Classifier:
        family = _ARCH[arch_name]
        if stem_stride is not None and (family != "resnet" or stem_stride not in (1, 2, 4)):
            raise UserError(f"stem_stride {stem_stride} for '{arch_name}': only ResNets take a stem stride, and only "
                            "1, 2 or 4", "drop model_kwargs.stem_stride, or give a resnet* model 1 (no max-pool, "
                            "stride-1 conv: MedMNIST's 28-px ResNets), 2 or 4 (ImageNet's)")
        if stem_patch and family != "convnext":
            raise UserError(f"a patch stem (architecture-matched control) needs a ConvNeXt, not '{arch_name}'",
                            "give the latent space a convnext_* model (space_train.latent.model)")
        if stem_patch and (stem_patch < 1 or input_size % stem_patch):
            raise UserError(f"patch stem {stem_patch} does not divide the input side {input_size}",
                            "use an autoencoder whose downsampling factor divides the image size")
        backbone, info = _build_backbone(arch_name, in_chans, pretrained, **kw)
        info.update(_adapt_convnext(backbone, input_size, stem_patch) if family == "convnext"
                    else _adapt_resnet(backbone, input_size, stem_stride))
        mean = std = None
        if info.get("pretrained") and image_input and in_chans in (1, 3):
            # the weights expect their own input statistics; grey input: timm summed the RGB filters, so
            # the grey image stands for all three channels and gets their average statistics
            cfg = getattr(backbone, "pretrained_cfg", None) or {}
            mean, std = list(cfg.get("mean", IMAGENET_MEAN)), list(cfg.get("std", IMAGENET_STD))
            if in_chans == 1:
                mean, std = [sum(mean) / 3], [sum(std) / 3]
            info["input_normalisation"] = {"mean": mean, "std": std}
        model = Classifier(backbone, num_classes, cosine_head=cosine_head, scale=scale, in_chans=in_chans,
                           input_mean=mean, input_std=std)
        model.build_info = {"model": arch_name, "in_chans": in_chans, "input_size": input_size, **info}
        return model
    return make


for _name in _ARCH:
    CLASSIFIERS.register(_name)(_factory(_name))


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def create_classifier(name: str, in_chans: int, num_classes: int, input_size: int | tuple[int, int],
                      pretrained="auto", **kw) -> Classifier:
    """Build a registered classifier.

    Args:
        name: one of ``CLASSIFIERS.names()`` (resnet18, resnet50, convnext_atto, convnext_nano, convnext_tiny).
        in_chans: input channels (1/3 for images, the AE's latent channels for latents).
        num_classes: K classes (labels for multi-label).
        input_size: input side H (or (H, W); the smaller side sets the strides), 4..224+.
        pretrained: "auto" (ImageNet if reachable, else random init with a warning), True (must load),
            False, or a path to a local weights file.
        **kw: ``cosine_head``, ``scale``, ``image_input`` (False for latents: no ImageNet input normalisation
            even with pretrained weights), ``stem_stride`` (ResNets: 1, 2 or 4 instead of the small-image rule of
            :func:`plan_strides`) and timm overrides (``depths``, ``dims``, ``drop_path_rate``...).

    Returns:
        :class:`Classifier` with ``build_info`` (pretrained, reason, stem stride) for the result row.
    """
    if isinstance(pretrained, str) and pretrained.lower() in ("false", "no", "0", "none", "true", "yes", "1"):
        pretrained = pretrained.lower() in ("true", "yes", "1")  # CLI / YAML spellings
    size = min(input_size) if isinstance(input_size, (tuple, list)) else int(input_size)
    return CLASSIFIERS.create(name, in_chans=in_chans, num_classes=num_classes, input_size=size,
                              pretrained=pretrained, **kw)
