"""The dataset contract every adapter fulfils (docs/architecture.md, "Datasets"), and image conversions.

A dataset holds its labels in RAM and hands out images by index, as ``uint8 (B, H, W, C)`` for storage
or as ``float32 (B, C, H, W)`` in ``[0, 1]`` for computation. Adapters implement :meth:`_load_native`
(images at their own size); resizing, conversion and ``describe()`` live here once.
Design follows torchxrayvision's typed ``Dataset`` base (``labels``, ``pathologies``) with MONAI-style
explicit array layouts.
"""

from __future__ import annotations

import abc
import hashlib
import json
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError

SPLIT_NAMES = ("train", "val", "test")


# --------------------------------------------------------------------------- conversions

def to_float(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images to float tensors.

    Args:
        x: ``uint8`` array ``(B, H, W, C)`` (or ``(H, W, C)``), values 0..255.

    Returns:
        ``float32`` tensor ``(B, C, H, W)`` in ``[0, 1]`` (``x / 255``, exact for every level).
    """
    if isinstance(x, np.ndarray) and not x.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable
        x = x.copy()
    t = torch.as_tensor(x)
    if t.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {t.dtype}")
    if t.ndim == 3:
        t = t[None]
    # a fresh NCHW tensor: permuting NHWC gives strides (HW, 1, W, 1) for grey images, which torch treats as both
    # contiguous and channels-last (so .contiguous() keeps them); CPU convolution backward on such inputs
    # corrupted the heap in torch 2.14.1 ("double free or corruption" on a batch of 5 after one of 16)
    out = torch.empty((t.shape[0], t.shape[3], t.shape[1], t.shape[2]), dtype=torch.float32)
    return out.copy_(t.permute(0, 3, 1, 2)).div_(255.0)


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float images back to uint8 storage.

    Args:
        x: float tensor ``(B, C, H, W)`` (or ``(C, H, W)``); values outside ``[0, 1]`` are clamped.

    Returns:
        ``uint8`` array ``(B, H, W, C)``; ``round(255 x)`` with ties to even (``torch.round``), so
        ``to_uint8(to_float(u)) == u`` for every uint8 ``u``.
    """
    t = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if t.ndim == 3:
        t = t[None]
    t = torch.round(t.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return t.permute(0, 2, 3, 1).contiguous().numpy()


def resize_uint8(x: np.ndarray, side: int) -> np.ndarray:
    """Antialiased bilinear resize to a square ``side x side`` (matches PIL ``BILINEAR`` to 1 grey level).

    Args:
        x: ``uint8 (B, H, W, C)``; non-square images are squashed, not cropped.
        side: output side in pixels.
    """
    if x.shape[1] == side and x.shape[2] == side:
        return x
    # antialias=True low-pass filters when shrinking, so fine texture above the new Nyquist limit is
    # removed (as a real downsampled scan would) instead of aliasing into spurious coarse patterns.
    y = F.interpolate(to_float(x), size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return to_uint8(y)


def check_resize(resize: int | None) -> int | None:
    if resize is None:
        return None
    if int(resize) != resize or resize < 4:
        raise UserError(f"resize {resize} is not a usable image side", "pass --resize as an integer >= 4, e.g. 64")
    return int(resize)


# --------------------------------------------------------------------------- the base class

class ImageDataset(abc.ABC):
    """Labelled 2-D images addressed by index.

    Attributes:
        name: short name used in cache folders and result rows.
        source: where the data came from (path, generator spec or MedMNIST name).
        labels: ``(N,)`` int64 class ids, or ``(N, L)`` int64 0/1 for multi-label.
        multilabel: True when ``labels`` is a 0/1 matrix.
        num_classes: number of classes (``L`` for multi-label).
        class_names: one name per class / label column.
        official_split: ``(N,)`` array of ``"train"/"val"/"test"`` when the source has one, else None.
        patient_ids: ``(N,)`` group ids for patient-grouped folds, else None.
        ids: ``(N,)`` per-image ids (file stems, paths) when the source has them, else None.
        channels: 1 (grey) or 3 (RGB), after conversion.
        image_size: ``(H, W)`` after the optional resize.
        resize: the requested square side, or None.
    """

    name: str
    source: str
    labels: np.ndarray
    multilabel: bool
    class_names: list[str]
    official_split: np.ndarray | None = None
    patient_ids: np.ndarray | None = None
    ids: np.ndarray | None = None
    channels: int
    native_size: tuple[int, int]
    resize: int | None = None

    # ---- adapter hooks
    @abc.abstractmethod
    def _load_native(self, idx: np.ndarray) -> np.ndarray:
        """``uint8 (B, H, W, C)`` at native size (or already at ``resize`` if the adapter handles it)."""

    @abc.abstractmethod
    def _content_key(self) -> dict[str, Any]:
        """JSON-able description of everything that defines the source content (hashed by fingerprint)."""

    # ---- public API
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.resize, self.resize) if self.resize else tuple(self.native_size)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load_uint8(self, idx) -> np.ndarray:
        """Images ``idx`` (1-D ints, order kept) as ``uint8 (B, H, W, C)`` at :attr:`image_size`."""
        idx = np.atleast_1d(np.asarray(idx, dtype=np.int64))
        if idx.ndim != 1:
            raise ValueError("idx must be 1-D")
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for dataset of {n} images")
        idx = np.where(idx < 0, idx + n, idx)
        x = self._load_native(idx)
        if self.resize and x.shape[1:3] != (self.resize, self.resize):
            x = resize_uint8(x, self.resize)
        return x

    def load(self, idx) -> torch.Tensor:
        """Images ``idx`` as ``float32 (B, C, H, W)`` in ``[0, 1]``."""
        return to_float(self.load_uint8(idx))

    def fingerprint(self) -> str:
        """sha256 hex of everything that defines the content: source bytes / generator params, labels, resize."""
        if getattr(self, "_fingerprint", None) is None:
            key = {"content": self._content_key(), "resize": self.resize, "channels": self.channels,
                   "labels": hashlib.sha256(np.ascontiguousarray(self.labels, dtype=np.int64)).hexdigest()}
            # class names are left out on purpose: the same file opened by name (names from medmnist.INFO)
            # or by path (names "0", "1", ...) holds the same images and labels, so folds and caches are shared.
            blob = json.dumps(key, sort_keys=True, default=str).encode()
            self._fingerprint = hashlib.sha256(blob).hexdigest()
        return self._fingerprint

    def class_counts(self) -> list[int]:
        """Images per class (positives per label for multi-label)."""
        if self.multilabel:
            return [int(c) for c in self.labels.sum(axis=0)]
        return [int(c) for c in np.bincount(self.labels, minlength=self.num_classes)]

    def imbalance(self) -> float:
        """Largest over smallest non-empty class count (inf when a class is empty)."""
        counts = np.asarray(self.class_counts(), dtype=float)
        return float(counts.max() / counts.min()) if counts.min() > 0 else float("inf")

    def describe(self) -> dict[str, Any]:
        """JSON-able summary recorded in cache manifests and printed by ``latentgap data info``."""
        out = {
            "name": self.name, "source": self.source, "fingerprint": self.fingerprint(), "n": len(self),
            "channels": self.channels, "image_size": list(self.image_size), "native_size": list(self.native_size),
            "resize": self.resize, "multilabel": self.multilabel, "class_names": list(self.class_names),
            "class_counts": self.class_counts(),
            "imbalance": self.imbalance() if np.isfinite(self.imbalance()) else None,  # strict JSON: no Infinity
            "has_official_split": self.official_split is not None, "has_patient_ids": self.patient_ids is not None,
        }
        if self.official_split is not None:
            out["official_split_counts"] = {s: int((self.official_split == s).sum()) for s in SPLIT_NAMES}
        return out

    def __repr__(self) -> str:
        h, w = self.image_size
        return f"{type(self).__name__}({self.name!r}, n={len(self)}, {h}x{w}x{self.channels}, classes={self.num_classes})"


# --------------------------------------------------------------------------- label checks shared by adapters

def check_labels(labels: np.ndarray, where: str, class_names: list[str] | None) -> tuple[np.ndarray, bool]:
    """Validate a label array and return ``(labels_int64, multilabel)``.

    Args:
        labels: ``(N,)`` or ``(N, 1)`` class ids, or ``(N, L)`` 0/1 with ``L > 1`` for multi-label.
        where: file / column named in error messages.
        class_names: names if the source gives them (labels must then be ``< len(class_names)``).
    """
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2) or not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)
                                    or (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0))):
        raise UserError(f"labels in {where} have shape {y.shape} and dtype {y.dtype}, not integer class ids",
                        "store labels as int (N,) / (N,1) class ids, or an (N,L) 0/1 matrix for multi-label")
    y = y.astype(np.int64)
    if y.ndim == 2:
        bad = np.setdiff1d(np.unique(y), [0, 1])
        if bad.size:
            raise UserError(f"multi-label labels in {where} contain {bad[:5].tolist()}, not only 0/1",
                            "store multi-label targets as a 0/1 matrix (one column per finding)")
        if class_names is not None and len(class_names) != y.shape[1]:
            raise UserError(f"{where} has {y.shape[1]} label columns but {len(class_names)} class names",
                            "give one class name per label column")
        return y, True
    if y.size and y.min() < 0:
        raise UserError(f"labels in {where} are out of range: found {int(y.min())} (negative)",
                        "use class ids 0..K-1; remove or relabel unlabelled samples")
    if class_names is not None and y.size and y.max() >= len(class_names):
        raise UserError(f"labels in {where} are out of range: found {int(y.max())} but only "
                        f"{len(class_names)} class names", "use class ids 0..K-1 or add the missing class names")
    return y, False
