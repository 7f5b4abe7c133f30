"""The task kinds of segmentation in a study (registered; see ``tasks.py`` and docs/segmentation.md).

* ``seg-unet`` — the U-Net baseline on one dataset x fold (``latentgap.seg.baseline.train_unet``);
* ``seg-diffusion`` — a diffusion segmenter (latent or pixel target) on the same dataset x fold
  (``latentgap.seg.segmenter.train_segmenter``, which trains the fold's mask autoencoder first).

Both open the dataset (resized when ``seg.resize`` asks), build the grouped folds of ``seg.k`` / ``seg.split_seed``,
resume from their checkpoints like a classifier cell, and save ``overlays.png`` of the first test images (image,
ground truth, prediction, confidence) for the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .tasks import Inputs, register_task


def _data(cfg: dict[str, Any]):
    from ..seg.data import open_seg_dataset, resize_seg, seg_splits

    ds = open_seg_dataset(cfg["dataset"])
    if cfg.get("resize"):
        ds = resize_seg(ds, cfg["resize"])
    return ds, seg_splits(ds, k=cfg["k"], seed=cfg["split_seed"])


def _overlays(run_dir: Path, ds, splits, fold: int, n: int = 4) -> None:
    from ..seg.apply import load_seg_model, save_overlays

    if (run_dir / "overlays.png").exists():
        return
    te = np.asarray(splits.folds[fold].test)
    # the first test images with a lesion, then any (an empty mask shows little)
    pick = np.concatenate([te[~ds.empty[te]], te[ds.empty[te]]])[:n]
    m = load_seg_model(run_dir)
    save_overlays(run_dir / "overlays.png", ds.images[pick], m.predict(ds.images[pick]), ds.masks[pick], n=n)


def _common(cfg: dict[str, Any], ds) -> dict[str, Any]:
    return dict(dataset=ds.name, image_size=list(ds.image_size), fold=cfg["fold"], k=cfg["k"],
                split_seed=cfg["split_seed"], device=cfg["device"])


@register_task("seg-unet", row_kind="seg")
def seg_unet_task(cfg: dict[str, Any], run_dir: Path, inputs: Inputs) -> dict[str, Any]:
    from ..seg.baseline import UNetConfig, train_unet

    ds, splits = _data(cfg)
    row = dict(train_unet(UNetConfig(**cfg["settings"], **_common(cfg, ds)), run_dir, ds, splits, progress=False))
    _overlays(run_dir, ds, splits, cfg["fold"])
    return {**row, "resize": cfg.get("resize")}


@register_task("seg-diffusion", row_kind="seg")
def seg_diffusion_task(cfg: dict[str, Any], run_dir: Path, inputs: Inputs) -> dict[str, Any]:
    from ..seg.segmenter import SegmenterConfig, train_segmenter

    ds, splits = _data(cfg)
    scfg = SegmenterConfig(**cfg["settings"], space=cfg["space"], **_common(cfg, ds))
    row = dict(train_segmenter(scfg, run_dir, ds, splits, progress=False))
    _overlays(run_dir, ds, splits, cfg["fold"])
    return {**row, "resize": cfg.get("resize")}
