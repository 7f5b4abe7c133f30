"""Latents of a fold's images for the segmentation models that read an image autoencoder: every image encoded once,
as itself and horizontally flipped (encode-time views), so training picks the view its flip asks for instead of
encoding each batch."""

from __future__ import annotations

import numpy as np
import torch

from .data import image_batch


def encode_images(image_ae, x: torch.Tensor) -> torch.Tensor:
    """The image autoencoder's latents of (B, C, H, W) [0, 1] images (grey replicated for RGB autoencoders)."""
    from ..autoencoders.base import adapt_images

    dev = next(image_ae.parameters()).device
    return image_ae.encode(adapt_images(x.to(dev), image_ae.info)).float()


def two_views(n: int, encode, batch_size: int) -> torch.Tensor:
    """(2, N, ...) of ``encode(index_batch, view)`` for the identity and the horizontally flipped view (encode-time
    views: a flipped sample reads the code of the flipped input, never a flipped code)."""
    return torch.stack([torch.cat([encode(np.arange(lo, min(lo + batch_size, n)), view).cpu()
                                   for lo in range(0, n, batch_size)]) for view in ("identity", "hflip")])


def pick_view(views: torch.Tensor, idx: np.ndarray, flip: torch.Tensor) -> torch.Tensor:
    """The codes of samples ``idx`` from (2, N, ...) ``views``: the flipped view where ``flip``, else the identity."""
    return torch.where(flip[:, None, None, None], views[1, idx], views[0, idx])


def encode_image_views(image_ae, ds, batch_size: int = 32) -> torch.Tensor:
    """(2, N, c, h, w) image latents of the identity and flipped view of every image."""
    from ..latents.views import apply_view

    return two_views(len(ds), lambda idx, v: encode_images(image_ae, apply_view(v, image_batch(ds, idx))), batch_size)
