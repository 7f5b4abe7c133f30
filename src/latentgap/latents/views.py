"""Encode-time views: augmentation that means the same thing in every space.

A flipped latent is not the latent of a flipped image (TAEF2 on ISIC-8: |encode(flip x) - flip(encode x)| /
|encode x| = 0.84), so geometric augmentation cannot be applied to cached latents. Instead, the cache encodes
a fixed set of *views* of every image — ``view(x)`` for each named view — and stores their latents and
reconstructions. In training, each sample of a batch draws one view; the image space reads ``view(x)``, the
reconstruction space ``decode(encode(view(x)))`` and the latent space ``encode(view(x))``, so all three see the
same augmented images. Validation and test parts always read the identity view.

Views are exact, deterministic array operations (flips and 90-degree rotations of square images), applied to
``(..., H, W)``-last tensors or ``(B, H, W, C)`` uint8 arrays alike.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import UserError

# name -> (function on a torch (B, C, H, W) tensor, function on a numpy (B, H, W, C) array, needs a square image)
_VIEWS: dict[str, tuple[Callable, Callable, bool]] = {
    "identity": (lambda x: x, lambda a: a, False),
    "hflip": (lambda x: x.flip(-1), lambda a: a[:, :, ::-1], False),
    "vflip": (lambda x: x.flip(-2), lambda a: a[:, ::-1], False),
    "hvflip": (lambda x: x.flip(-2, -1), lambda a: a[:, ::-1, ::-1], False),
    "rot90": (lambda x: torch.rot90(x, 1, (-2, -1)), lambda a: np.rot90(a, 1, axes=(1, 2)), True),
    "rot270": (lambda x: torch.rot90(x, -1, (-2, -1)), lambda a: np.rot90(a, -1, axes=(1, 2)), True),
}
VIEWS = tuple(_VIEWS)
IDENTITY = ("identity",)


def check_views(views: Sequence[str] | None, image_size: tuple[int, int] | None = None) -> tuple[str, ...]:
    """Validate a list of view names (identity first, no repeats); return it as a tuple.

    Raises:
        UserError: an unknown name, a repeat, identity missing or not first, or a rotation of a non-square image.
    """
    views = tuple(views or IDENTITY)
    unknown = [v for v in views if v not in _VIEWS]
    if unknown:
        raise UserError(f"unknown view '{unknown[0]}'", f"use names from: {', '.join(VIEWS)}")
    if len(set(views)) != len(views):
        raise UserError(f"views {list(views)} contain a repeat", "list each view once")
    if views[0] != "identity":
        raise UserError(f"views {list(views)} must start with 'identity'",
                        "put identity first: validation and test parts read the identity view")
    if image_size is not None and image_size[0] != image_size[1]:
        rot = [v for v in views if _VIEWS[v][2]]
        if rot:
            raise UserError(f"view '{rot[0]}' needs square images, these are {image_size[0]}x{image_size[1]}",
                            "use flips only (hflip, vflip, hvflip) or resize the images to a square")
    return views


def apply_view(name: str, x: torch.Tensor) -> torch.Tensor:
    """``view(x)`` for a float tensor (..., H, W)."""
    return _VIEWS[name][0](x)


def apply_view_uint8(name: str, images: np.ndarray) -> np.ndarray:
    """``view(images)`` for a uint8 array (B, H, W, C), returned C-contiguous."""
    return np.ascontiguousarray(_VIEWS[name][1](images))
