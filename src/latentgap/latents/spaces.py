"""The three evaluation spaces of the learnability-gap paper, as torch datasets.

* ``image``  — the original images x,
* ``recon``  — reconstructions decode(encode(x)) from the cache,
* ``latent`` — latents encode(x) from the cache, channel-normalised with the statistics of the fold's
  *training* part (the paper normalises "over the training set").

All three return ``(x, y)`` with x a float tensor (C, H, W) and y a class id (long) or, for multi-label
data, a 0/1 float vector. Classifier code receives a dataset and :func:`input_spec` and never
branches on the space (the classifier builder chooses the architecture from the spec).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError

SPACES = ("image", "recon", "latent")
Space = Literal["image", "recon", "latent"]
PARTS = ("train", "val", "test")


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise UserError(f"unknown space '{space}'", f"use one of: {', '.join(SPACES)}")


class SpaceDataset(Dataset):
    """Inputs of one fold part in one space.

    The part is gathered into memory once (uint8 for images and reconstructions, float32 normalised
    latents), so an epoch does no disk I/O and no autoencoder call. ``get_batch`` returns whole float
    batches without per-item Python overhead, for fast loops.

    Attributes:
        indices: (n,) positions in the dataset.
        inputs: (n, C, H, W) uint8 tensor (image/recon) or float32 tensor (latent).
        targets: (n,) long or (n, L) float tensor.
    """

    def __init__(self, space: str, indices: np.ndarray, inputs: torch.Tensor, targets: torch.Tensor):
        self.space, self.indices, self.inputs, self.targets = space, indices, inputs, targets

    def __len__(self) -> int:
        return len(self.indices)

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._to_float(self.inputs[i]), self.targets[i]

    def get_batch(self, positions: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Float inputs (B, C, H, W) and targets for positions 0..n-1 of this part."""
        positions = torch.as_tensor(positions, dtype=torch.long)
        return self._to_float(self.inputs[positions]), self.targets[positions]


def _gather(source, idx: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Rows ``idx`` of an array-like or of ``ds.load_uint8``, read in sorted chunks (memmap friendly)."""
    order = np.argsort(idx, kind="stable")
    out = None
    for s in range(0, len(idx), chunk):
        sel = order[s:s + chunk]
        rows = source(idx[sel]) if callable(source) else np.asarray(source[idx[sel]])
        if out is None:
            out = np.empty((len(idx), *rows.shape[1:]), dtype=rows.dtype)
        out[sel] = rows
    return out


def _targets(ds, idx: np.ndarray) -> torch.Tensor:
    y = np.asarray(ds.labels)[idx]
    return torch.as_tensor(y, dtype=torch.float32 if ds.multilabel else torch.long)


def space_dataset(space: str, ds, cache, splits, fold: int, part: str) -> SpaceDataset:
    """The ``part`` ("train", "val", "test") of fold ``fold`` in ``space``.

    Args:
        space: "image", "recon" or "latent".
        ds: the ``ImageDataset`` the cache was made from.
        cache: a ``LatentCache`` (ignored for the image space; may be None there).
        splits: ``Splits``; fold indices index into ``ds`` and the cache alike.
    """
    _check_space(space)
    if part not in PARTS:
        raise UserError(f"unknown fold part '{part}'", f"use one of: {', '.join(PARTS)}")
    if not 0 <= fold < len(splits.folds):
        raise UserError(f"fold {fold} does not exist (the splits have {len(splits.folds)})",
                        f"use a fold between 0 and {len(splits.folds) - 1}")
    idx = np.asarray(getattr(splits.folds[fold], part), dtype=np.int64)
    if space != "image":
        if cache is None:
            raise UserError(f"the {space} space needs a latent cache", "run `latentgap encode` for this dataset and AE")
        if len(cache) != len(ds) or cache.manifest["dataset_fingerprint"] != ds.fingerprint():
            raise UserError(f"latent cache '{cache.path}' was made from another dataset than '{ds.name}'",
                            "use the cache built for this dataset (drop --cache to let latentgap find it)")
    if space == "image":
        x = torch.from_numpy(_gather(ds.load_uint8, idx)).permute(0, 3, 1, 2).contiguous()  # (n, C, H, W)
    elif space == "recon":
        if cache.recon is None:
            raise UserError(f"cache '{cache.path}' has no reconstructions", "re-encode without --no-recon")
        x = torch.from_numpy(_gather(cache.recon, idx)).permute(0, 3, 1, 2).contiguous()
    else:
        mean, std = cache.fold_stats(splits, fold)
        z = _gather(cache.latents, idx).astype(np.float32)  # (n, c, h, w)
        z = (z - mean[None, :, None, None].astype(np.float32)) / std[None, :, None, None].astype(np.float32)
        x = torch.from_numpy(z)
    return SpaceDataset(space, idx, x, _targets(ds, idx))


def input_spec(space: str, ds, cache=None) -> tuple[int, int, int]:
    """(channels, height, width) of the inputs a classifier sees in ``space``."""
    _check_space(space)
    if space == "latent":
        if cache is None:
            raise UserError("the latent space needs a latent cache", "run `latentgap encode` for this dataset and AE")
        return cache.latent_shape
    h, w = ds.image_size
    return (int(ds.channels), int(h), int(w))
