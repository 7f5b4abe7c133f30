"""Segmentation datasets: image + mask pairs, checked on load, with folds grouped by patient / video ids.

Sources:

* ``.npz`` with ``{split}_images`` and ``{split}_masks`` (``split`` in train / val / test; optional ``{split}_ids``,
  ``{split}_labels``, ``class_names``) — the format of ``../shared/data/datasets/*_seg_128.npz``; a bare name
  (``kvasir_seg_128``) opens the shared file;
* an images folder and a masks folder with the same file names (``images/``, ``masks/`` under one folder);
* a CSV manifest with ``image`` and ``mask`` columns (paths relative to the CSV) and an optional ``id`` column.

Masks are integer label maps (N, H, W): binary masks take values {0, 1} (0 / 255 PNGs are mapped to 0 / 1);
multi-class masks take 0..K-1 with ``num_classes`` given (they load, describe and split; the models train binary
masks and refuse them in one line). Empty masks (no foreground) are kept and counted: how a
metric treats them is the metric's business (``metrics.py``) and is named in every table.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..storage import shared_data_dir

SPLITS = ("train", "val", "test")
IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class SegDataset:
    """Images (N, H, W, C) uint8 and masks (N, H, W) uint8 label maps in RAM (the shared sets are small).

    Attributes:
        name, images, masks, num_classes (2 for binary), ids (N,) group ids or None, labels (N,) image-level
        labels or None, class_names (image-level) or None, official_split (N,) or None, source.
    """

    def __init__(self, name: str, images: np.ndarray, masks: np.ndarray, *, num_classes: int = 2,
                 ids: np.ndarray | None = None, labels: np.ndarray | None = None, class_names=None,
                 official_split: np.ndarray | None = None, source: str = ""):
        if images.ndim == 3:
            images = images[..., None]
        if len(images) != len(masks):
            raise UserError(f"{name}: {len(images)} images but {len(masks)} masks",
                            "give exactly one mask per image (same order / same file names)")
        if images.shape[1:3] != masks.shape[1:3]:
            raise UserError(f"{name}: masks are {masks.shape[1]}x{masks.shape[2]}, images {images.shape[1]}x{images.shape[2]}",
                            "give masks of the same size as their images")
        masks = np.asarray(masks)
        values = np.unique(masks)
        if num_classes == 2 and set(values.tolist()) <= {0, 255}:
            masks = (masks > 0).astype(np.uint8)  # 0 / 255 PNG masks
            values = np.unique(masks)
        bad = values[(values < 0) | (values >= num_classes)]
        if len(bad):
            raise UserError(f"{name}: mask value {bad[0]} is outside the label set 0..{num_classes - 1}",
                            "binary masks hold 0/1 (or 0/255); multi-class label maps load with "
                            "open_seg_dataset(..., num_classes=K) (the models train binary masks)")
        self.name, self.images, self.masks = name, np.ascontiguousarray(images, np.uint8), masks.astype(np.uint8)
        self.num_classes, self.ids, self.labels, self.class_names = num_classes, ids, labels, class_names
        self.official_split, self.source = official_split, source
        self.resized_from: list[int] | None = None  # original size when resize_seg made this copy

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])  # type: ignore[return-value]

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    @property
    def empty(self) -> np.ndarray:
        """(N,) True where the mask has no foreground."""
        return self.masks.reshape(len(self), -1).max(1) == 0

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self.images, self.masks):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "n": len(self), "image_size": list(self.image_size),
                "channels": self.channels, "num_classes": self.num_classes, "empty_masks": int(self.empty.sum()),
                "foreground_share": float((self.masks > 0).mean()), "grouped_by_ids": self.ids is not None,
                "fingerprint": self.fingerprint()}


def open_seg_dataset(spec: str | os.PathLike, *, num_classes: int = 2) -> SegDataset:
    """A segmentation dataset by shared name, ``.npz`` path, folder (``images/`` + ``masks/``) or CSV manifest."""
    spec = str(spec)
    path = Path(spec)
    if not path.exists() and os.sep not in spec and "." not in spec:
        path = shared_data_dir() / "datasets" / f"{spec}.npz"
        if not path.is_file():
            raise UserError(f"'{spec}' is neither a file, a folder nor a shared segmentation dataset",
                            "pass kvasir_seg_128, busi_seg_128, a .npz with {split}_images/{split}_masks, a folder "
                            "with images/ and masks/, or a CSV with image,mask columns")
    if path.suffix == ".npz":
        return _from_npz(path, num_classes)
    if path.is_dir():
        from ..data.synthetic import is_synthetic_folder

        if is_synthetic_folder(path):
            raise UserError(f"{path} is a synthetic classification dataset (latentgap synth sample): it has class labels "
                            "but no masks", "train and evaluate segmenters on image + mask pairs; `latentgap seg "
                            "predict --data` takes a synthetic folder to segment its images")
        return _from_folder(path, num_classes)
    if path.suffix == ".csv":
        return _from_csv(path, num_classes)
    raise UserError(f"{path} is not a segmentation dataset", "pass a .npz, a folder with images/ and masks/, or a .csv")


def _from_npz(path: Path, num_classes: int) -> SegDataset:
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        parts = [s for s in SPLITS if f"{s}_images" in keys]
        if not parts:
            raise UserError(f"{path} has no '<split>_images' arrays", "use keys train_images / train_masks (and val_, test_)")
        missing = [s for s in parts if f"{s}_masks" not in keys]
        if missing:
            raise UserError(f"{path} has {missing[0]}_images but no {missing[0]}_masks", "add the masks of every split")
        cat = lambda k: np.concatenate([z[f"{s}_{k}"] for s in parts]) if all(f"{s}_{k}" in keys for s in parts) else None  # noqa: E731
        images, masks = cat("images"), cat("masks")
        ids, labels = cat("ids"), cat("labels")
        split = np.concatenate([np.full(len(z[f"{s}_images"]), s) for s in parts])
        names = [str(n) for n in z["class_names"]] if "class_names" in keys else None
    return SegDataset(path.stem, images, masks, num_classes=num_classes, ids=ids,
                      labels=None if labels is None else labels.reshape(-1), class_names=names,
                      official_split=split, source=str(path))


def _read(path: Path, grey: bool = False) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L") if grey else im.convert("RGB") if im.mode not in ("L",) else im)


def _from_pairs(name: str, img_paths: list[Path], mask_paths: list[Path], ids, num_classes: int, source: str) -> SegDataset:
    if len(img_paths) != len(mask_paths):
        raise UserError(f"{name}: {len(img_paths)} images but {len(mask_paths)} masks",
                        "give exactly one mask per image (same file names)")
    images = [_read(p) for p in img_paths]
    masks = [_read(p, grey=True) for p in mask_paths]
    for p, im, m in zip(img_paths, images, masks):
        if im.shape[:2] != m.shape[:2]:
            raise UserError(f"mask of {p.name} is {m.shape[1]}x{m.shape[0]}, the image {im.shape[1]}x{im.shape[0]}",
                            "give masks of the same size as their images")
    if len({im.shape for im in images}) > 1:
        raise UserError(f"{name}: images have different sizes", "resize them to one size first")
    return SegDataset(name, np.stack(images), np.stack(masks), num_classes=num_classes,
                      ids=None if ids is None else np.asarray(ids), source=source)


def _from_folder(path: Path, num_classes: int) -> SegDataset:
    idir, mdir = path / "images", path / "masks"
    if not idir.is_dir() or not mdir.is_dir():
        raise UserError(f"{path} has no images/ and masks/ folders", "arrange pairs as <folder>/images/x.png, <folder>/masks/x.png (images alone: seg predict)")
    imgs = sorted(p for p in idir.iterdir() if p.suffix.lower() in IMAGE_EXT)
    masks = {p.stem: p for p in mdir.iterdir() if p.suffix.lower() in IMAGE_EXT}
    missing = [p.name for p in imgs if p.stem not in masks]
    if missing or len(masks) != len(imgs):
        raise UserError(f"{path}: {len(imgs)} images but {len(masks)} masks" + (f" (no mask for {missing[0]})" if missing else ""),
                        "give every image a mask of the same file name")
    return _from_pairs(path.name, imgs, [masks[p.stem] for p in imgs], None, num_classes, str(path))


def _from_csv(path: Path, num_classes: int) -> SegDataset:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not {"image", "mask"} <= set(rows[0]):
        raise UserError(f"{path} needs 'image' and 'mask' columns", "one row per pair: image,mask[,id]")
    base = path.parent
    return _from_pairs(path.stem, [base / r["image"] for r in rows], [base / r["mask"] for r in rows],
                       [r["id"] for r in rows] if "id" in rows[0] else None, num_classes, str(path))


def seg_splits(ds: SegDataset, k: int = 5, seed: int = 0, val_fraction: float = 0.1):
    """K folds, grouped by ``ds.ids`` when present (frames of one video / images of one patient stay in one part)
    and stratified by empty vs non-empty mask; returns a ``latentgap.data.Splits``."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    from ..data.splits import Fold, Splits

    n = len(ds)
    groups = np.asarray(ds.ids) if ds.ids is not None else np.arange(n)
    strat = ds.empty.astype(int)
    folds = []
    for tr, te in StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), strat, groups):
        inner = GroupShuffleSplit(1, test_size=val_fraction, random_state=seed)
        a, b = next(inner.split(tr, groups=groups[tr]))
        folds.append(Fold(np.sort(tr[a]), np.sort(tr[b]), np.sort(te)))
    return Splits("kfold", k, folds=folds, seed=int(seed), val_fraction=float(val_fraction), fingerprint=ds.fingerprint(),
                  dataset=ds.name, n=n)


def resize_seg(ds: SegDataset, size: tuple[int, int] | int) -> SegDataset:
    """A copy of ``ds`` at ``size`` (images bilinear, masks nearest, so labels stay labels); the original size is
    kept in ``ds.resized_from`` for the record. Returns ``ds`` itself when it already has that size."""
    from PIL import Image

    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(ds.image_size) == size:
        return ds
    h, w = size
    img = np.stack([np.asarray(Image.fromarray(a.squeeze(-1) if a.shape[-1] == 1 else a).resize((w, h), Image.BILINEAR))
                    for a in ds.images])
    msk = np.stack([np.asarray(Image.fromarray(m).resize((w, h), Image.NEAREST)) for m in ds.masks])
    out = SegDataset(ds.name, img, msk, num_classes=ds.num_classes, ids=ds.ids, labels=ds.labels,
                     class_names=ds.class_names, official_split=ds.official_split, source=ds.source)
    out.resized_from = list(ds.image_size)
    return out


def check_training_size(image_size, ds: SegDataset) -> None:
    """A run configured for one image size must not train on another (a resized dataset is another run)."""
    if image_size is not None and tuple(image_size) != tuple(ds.image_size):
        raise UserError(f"the run is configured for {image_size[0]}x{image_size[1]} images, {ds.name} is "
                        f"{ds.image_size[0]}x{ds.image_size[1]}", "resize the data to the run's size or use a new --out")


def _hflip_where(t, flip):
    """Flip the samples of (B, C, H, W) ``t`` horizontally where ``flip`` (B,) is True (None: no flips)."""
    import torch

    return t if flip is None else torch.where(flip.to(t.device)[:, None, None, None], t.flip(-1), t)


def image_batch(ds: SegDataset, idx: np.ndarray, flip=None):
    """Images ``idx`` as a (B, C, H, W) float tensor in [0, 1], flipped horizontally where ``flip`` is True."""
    from ..data import to_float

    return _hflip_where(to_float(ds.images[idx]), flip)  # standard NCHW strides (see data.base.to_float)


def mask_batch(ds: SegDataset, idx: np.ndarray, flip=None):
    """Foreground masks ``idx`` as a (B, 1, H, W) float tensor in {0, 1}, flipped where ``flip`` is True."""
    import torch

    return _hflip_where(torch.from_numpy(ds.masks[idx] > 0).float()[:, None], flip)
