"""The three evaluation spaces of the learnability-gap paper, as torch datasets.

* ``image``  — the original images x,
* ``recon``  — reconstructions decode(encode(x)) from the cache,
* ``latent`` — latents encode(x) from the cache, channel-normalised with the statistics of the fold's
  *training* part (the paper normalises "over the training set").

With encode-time views (``views: [identity, hflip, ...]``, see ``views.py``), a training part serves view v of
image i in every space alike: ``view_v(x_i)``, its reconstruction, its latent; ``Batches`` draws the view per
sample. All three return ``(x, y)`` with x a float tensor (C, H, W) and y a class id (long) or, for multi-label
data, a 0/1 float vector. Classifier code receives a dataset and :func:`input_spec` and never
branches on the space (the classifier builder chooses the architecture from the spec).
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from ..data.base import to_float
from .views import IDENTITY, apply_view_uint8, check_views

SPACES = ("image", "recon", "latent")  # the one list of spaces (train configs and study specs import it)
Space = Literal[SPACES]  # type: ignore[valid-type]
PARTS = ("train", "val", "test")


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise UserError(f"unknown space '{space}'", f"use one of: {', '.join(SPACES)}")


class NpyRows:
    """Read rows of a ``.npy`` file with positioned reads (``os.preadv``), not a memory map.

    A memory map keeps every page it has touched resident in the process, so an epoch over a large
    cache would grow the RSS by the size of the cache; positioned reads go through the page cache
    and leave the process's memory at one batch. Runs of consecutive rows are read in one call.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        mm = np.load(self.path, mmap_mode="r")
        self.offset, self.dtype, self.shape = int(mm.offset), mm.dtype, tuple(mm.shape)
        del mm
        self.row_bytes = int(self.dtype.itemsize * int(np.prod(self.shape[1:])))

    def __len__(self) -> int:
        return self.shape[0]

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order, repeats allowed) as an array (len(idx), *row_shape)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), *self.shape[1:]), dtype=self.dtype)
        if len(idx) == 0:
            return out
        order = np.argsort(idx, kind="stable")
        srt = idx[order]
        tmp = np.empty_like(out)
        raw = tmp.reshape(len(idx), -1).view(np.uint8)  # (n, row_bytes)
        breaks = np.flatnonzero(np.diff(srt) != 1) + 1
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(srt)]):
                buf = raw[lo:hi].reshape(-1)
                got = os.preadv(fd, [buf], self.offset + int(srt[lo]) * self.row_bytes)
                if got != buf.nbytes:
                    raise OSError(f"short read from {self.path}")
        finally:
            os.close(fd)
        out[order] = tmp
        return out


class SpaceDataset(Dataset):
    """Inputs of one fold part in one space, read per batch.

    Nothing is copied into memory up front: images come from the dataset (``load_uint8``), recon-
    structions and latents from the cache files by positioned reads, so memory does not grow with the
    dataset (data wait stays far below a training step; see benchmarks/). Latents are normalised per
    batch with the fold's training statistics. ``get_batch`` returns whole float batches.

    Attributes:
        indices: (n,) positions in the dataset.
        targets: (n,) long or (n, L) float tensor.
        views: names of the views a training batch may draw (``("identity",)``: no views).
    """

    def __init__(self, space: str, indices: np.ndarray, read, targets: torch.Tensor,
                 mean: np.ndarray | None = None, std: np.ndarray | None = None, views: tuple[str, ...] = IDENTITY):
        self.space, self.indices, self.targets = space, np.asarray(indices, dtype=np.int64), targets
        # one reader per view: dataset indices -> uint8 (b, H, W, C) or float (b, c, h, w)
        self._reads = list(read) if isinstance(read, (list, tuple)) else [read]
        self.views = tuple(views)
        if len(self._reads) != len(self.views):
            raise ValueError(f"{len(self._reads)} readers for {len(self.views)} views")
        self._mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)[None, :, None, None]
        self._std = None if std is None else torch.as_tensor(std, dtype=torch.float32)[None, :, None, None]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def normalisation(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) per channel applied to latents (the fold's training statistics), None for images."""
        if self._mean is None:
            return None
        return self._mean.flatten().numpy().astype(np.float64), self._std.flatten().numpy().astype(np.float64)

    @property
    def num_views(self) -> int:
        return len(self.views)

    def _inputs(self, idx: np.ndarray, views: np.ndarray | None = None) -> torch.Tensor:
        if views is None or self.num_views == 1 or not np.any(views):
            rows = self._reads[0](idx)
        else:  # gather each view's rows, then put them back in batch order
            rows = None
            for v in np.unique(views):
                sel = np.flatnonzero(views == v)
                part = self._reads[int(v)](idx[sel])
                if rows is None:
                    rows = np.empty((len(idx), *part.shape[1:]), dtype=part.dtype)
                rows[sel] = part
        if rows.dtype == np.uint8:  # images / reconstructions (b, H, W, C) -> (b, C, H, W) in [0, 1]
            return to_float(rows)  # standard NCHW strides (grey images: see data.base.to_float)
        z = torch.from_numpy(np.asarray(rows, dtype=np.float32))  # latents (b, c, h, w)
        return (z - self._mean) / self._std

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._inputs(self.indices[i:i + 1])[0], self.targets[i]

    def get_batch(self, positions: torch.Tensor | np.ndarray,
                  views: torch.Tensor | np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Float inputs (B, C, H, W) and targets for positions 0..n-1 of this part; ``views`` (B,) picks the
        view of each sample by its index in :attr:`views` (None: identity)."""
        positions = torch.as_tensor(positions, dtype=torch.long)
        v = None if views is None else np.asarray(torch.as_tensor(views).numpy(), dtype=np.int64)
        return self._inputs(self.indices[positions.numpy()], v), self.targets[positions]


def _targets(ds, idx: np.ndarray) -> torch.Tensor:
    y = np.asarray(ds.labels)[idx]
    return torch.as_tensor(y, dtype=torch.float32 if ds.multilabel else torch.long)


def space_dataset(space: str, ds, cache, splits, fold: int, part: str,
                  views: tuple[str, ...] | list[str] | None = None) -> SpaceDataset:
    """The ``part`` ("train", "val", "test") of fold ``fold`` in ``space``.

    Args:
        space: "image", "recon" or "latent".
        ds: the ``ImageDataset`` the cache was made from.
        cache: a ``LatentCache`` (ignored for the image space; may be None there).
        splits: ``Splits``; fold indices index into ``ds`` and the cache alike.
        views: encode-time views a batch may draw (identity first); recon/latent need a cache holding them.
            Latent normalisation is always fitted on the identity view of the fold's training part.
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
    views = check_views(views, tuple(ds.image_size))
    if space == "image":
        return SpaceDataset(space, idx, [_viewed(ds.load_uint8, v) for v in views], _targets(ds, idx), views=views)
    if space == "recon":
        return SpaceDataset(space, idx, [NpyRows(cache.recon_path(v)) for v in views], _targets(ds, idx), views=views)
    mean, std = cache.fold_stats(splits, fold)
    return SpaceDataset(space, idx, [NpyRows(cache.latents_path(v)) for v in views], _targets(ds, idx), mean, std,
                        views=views)


def _viewed(load, view: str):
    """A reader of images under ``view`` (the image-space counterpart of a cached view)."""
    return load if view == "identity" else (lambda idx: apply_view_uint8(view, load(idx)))


def input_spec(space: str, ds, cache=None) -> tuple[int, int, int]:
    """(channels, height, width) of the inputs a classifier sees in ``space``."""
    _check_space(space)
    if space == "latent":
        if cache is None:
            raise UserError("the latent space needs a latent cache", "run `latentgap encode` for this dataset and AE")
        return cache.latent_shape
    h, w = ds.image_size
    return (int(ds.channels), int(h), int(w))


def synthetic_part(space: str, synthetic, views=None, mean=None, std=None) -> SpaceDataset:
    """Every sample of a synthetic dataset (``latentgap.data.synthetic``) as a training part in ``space``.

    image / recon: the decoded synthetic images (they are decode(z), the autoencoder's output, so they stand for
    reconstructions too), under the encode-time ``views`` like real images; latent: the generated latents,
    normalised with the real fold's ``mean`` / ``std`` (identity view only: a flipped latent is not a latent).
    """
    _check_space(space)
    n = len(synthetic)
    idx = np.arange(n, dtype=np.int64)
    targets = _targets(synthetic, idx)
    if space == "latent":
        reader = NpyRows(synthetic.synthetic_path / "latents.npy")
        views = check_views(views)
        return SpaceDataset(space, idx, [reader] * len(views), targets, mean, std, views=views)
    views = check_views(views, tuple(synthetic.image_size))
    return SpaceDataset(space, idx, [_viewed(synthetic.load_uint8, v) for v in views], targets, views=views)


class CombinedParts:
    """Two training parts served as one (real, then synthetic): ``get_batch`` maps positions to either."""

    def __init__(self, first: SpaceDataset, second: SpaceDataset):
        if first.views != second.views:
            raise ValueError("combined parts must draw the same views")
        self.parts, self.n1 = (first, second), len(first)
        self.views, self.num_views, self.space = first.views, first.num_views, first.space
        self.targets = torch.cat([first.targets, second.targets])
        self.indices = np.concatenate([first.indices, -1 - second.indices])  # synthetic rows: negative ids
        self.normalisation = first.normalisation

    def __len__(self) -> int:
        return self.n1 + len(self.parts[1])

    def get_batch(self, positions, views=None):
        pos = torch.as_tensor(positions, dtype=torch.long)
        first = pos < self.n1
        xs, ys = [None, None], [None, None]
        for j, sel in enumerate((first, ~first)):
            if sel.any():
                p = pos[sel] - (0 if j == 0 else self.n1)
                v = None if views is None else torch.as_tensor(views)[sel]
                xs[j], ys[j] = self.parts[j].get_batch(p, v)
        x0 = xs[0] if xs[0] is not None else xs[1]
        x = torch.empty((len(pos), *x0.shape[1:]), dtype=x0.dtype)
        y = torch.empty((len(pos), *self.targets.shape[1:]), dtype=self.targets.dtype)
        for j, sel in enumerate((first, ~first)):
            if xs[j] is not None:
                x[sel], y[sel] = xs[j], ys[j]
        return x, y
