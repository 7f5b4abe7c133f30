"""Apply a trained segmentation run (diffusion segmenter or U-Net baseline) to any images: ``seg predict`` / ``seg eval``.

Images of another size are resized to the run's training size (bilinear; masks nearest) and the resize is
recorded in every output. Predictions are the probability map, the thresholded mask and the confidence maps
(std across samples and entropy of the mean; the U-Net, deterministic, has only the entropy).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..storage import read_json
from .segmenter import prediction_maps


class SegModel:
    """A loaded run: ``predict(images)`` for uint8 (B, H, W, C) images at the training size."""

    def __init__(self, run_dir: Path, method: str, image_size: tuple[int, int], channels: int, segmenter=None, unet=None):
        self.run_dir, self.method, self.image_size, self.channels = run_dir, method, image_size, channels
        self.segmenter, self.unet = segmenter, unet

    def predict(self, images: np.ndarray, *, samples: int | None = None, steps: int | None = None,
                sampler: str | None = None, seed: int = 0) -> dict[str, np.ndarray]:
        from ..data import to_float

        x = to_float(np.ascontiguousarray(images))
        if self.segmenter is not None:
            return self.segmenter.predict(x, samples=samples, steps=steps, sampler=sampler,
                                          generator=torch.Generator().manual_seed(seed))
        dev = next(self.unet.parameters()).device
        with torch.no_grad():
            prob = torch.cat([torch.sigmoid(self.unet(x[lo:lo + 32].to(dev))).float().cpu()[:, 0]
                              for lo in range(0, len(x), 32)]).numpy() if len(x) else np.zeros((0, *self.image_size))
        return prediction_maps(prob[None])  # one deterministic "sample": std 0, the entropy is its confidence map

    @property
    def cost(self) -> dict[str, Any]:
        if self.segmenter is None:
            return {"samples": 1, "steps": 1}
        c = self.segmenter.config
        return {"samples": c.samples, "steps": c.steps}


def load_seg_model(run_dir: str | os.PathLike, device: str = "cpu") -> SegModel:
    """A finished ``seg train`` run folder (diffusion segmenter or U-Net)."""
    import yaml

    from ..device import resolve_device
    from ..runs import load_checkpoint, prefixed

    run_dir = Path(run_dir)
    res = run_dir / "result.json"
    if not res.is_file():
        raise UserError(f"{run_dir} is not a finished segmentation run (no result.json)",
                        "point --model at a folder written by latentgap seg train (after it finished)")
    row = read_json(res)
    dev = resolve_device(device)
    if row.get("method") in ("unet", "unet-latent"):
        from .baseline import UNetConfig, build_unet, image_autoencoder

        cfg = UNetConfig(**{k: v for k, v in yaml.safe_load((run_dir / "config.yaml").read_text()).items()
                            if k != "config_hash"})
        t, _ = load_checkpoint(run_dir / "checkpoint.safetensors")
        net = build_unet(cfg, int(row["image_channels"]), *image_autoencoder(cfg, tuple(row["image_size"]), dev))
        net.load_state_dict(prefixed(t, "best"))
        return SegModel(run_dir, cfg.method, tuple(row["image_size"]), int(row["image_channels"]), unet=net.to(dev).eval())
    from .segmenter import load_segmenter

    seg = load_segmenter(run_dir, dev)
    return SegModel(run_dir, row["method"], seg.image_size, int(seg.record["image_channels"]), segmenter=seg)


def fit_to_model(ds, model: SegModel):
    """``ds`` at the model's training size (a resized copy when needed), and the resize record."""
    from .data import resize_seg

    if ds.channels != model.channels:
        raise UserError(f"{ds.name} has {ds.channels}-channel images, the model was trained on {model.channels}-channel "
                        "images", "use images of the training data's kind")
    out = resize_seg(ds, model.image_size)
    return out, {"resized_from": list(ds.image_size), "resized_to": list(model.image_size),
                 "resized": tuple(ds.image_size) != tuple(model.image_size),
                 "resize_method": "images bilinear, masks nearest"}


def evaluate_model(model: SegModel, ds, *, samples: int | None = None, steps: int | None = None,
                   sampler: str | None = None, seed: int = 0):
    """``(row, predictions, resized ds)``: metrics of ``model`` on every image of ``ds`` at the training size."""
    from .segmenter import evaluate_predictions

    ds, resize = fit_to_model(ds, model)
    t0 = time.perf_counter()
    pred = model.predict(ds.images, samples=samples, steps=steps, sampler=sampler, seed=seed)
    sec = (time.perf_counter() - t0) / max(len(ds), 1)
    cost = model.cost
    if samples:
        cost["samples"] = samples
    if steps and model.segmenter is not None:
        cost["steps"] = steps
    row = {"dataset": ds.name, "model": str(model.run_dir), "method": model.method, **evaluate_predictions(pred, ds.masks),
           **cost, "cost_steps_x_samples": cost["samples"] * cost["steps"], "seconds_per_image": sec, **resize}
    if model.segmenter is None:  # a deterministic model has no spread across samples
        row["uncertainty_auroc_std"], row["uncertainty_auroc_std_ci"] = None, None
    return row, pred, ds


def save_overlays(path: str | os.PathLike, images: np.ndarray, pred: dict[str, np.ndarray],
                  truth: np.ndarray | None = None, n: int = 6) -> Path:
    """A PNG grid, one row per image: image, ground truth (when given), prediction, confidence map (std across
    samples, or the entropy of a deterministic model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..storage import atomic_write

    n = min(n, len(images))
    conf = pred["std"] if float(np.max(pred["std"], initial=0)) > 0 else pred["entropy"]
    cols = ["image"] + (["ground truth"] if truth is not None else []) + ["prediction", "confidence (std)" if conf is pred["std"] else "entropy"]
    fig, axes = plt.subplots(max(n, 1), len(cols), figsize=(2.2 * len(cols), 2.2 * max(n, 1)), squeeze=False)
    for i in range(n):
        img = images[i].squeeze(-1) if images[i].shape[-1] == 1 else images[i]
        panels = [img] + ([truth[i]] if truth is not None else []) + [pred["prob"][i], conf[i]]
        for j, (ax, p) in enumerate(zip(axes[i], panels)):
            ax.imshow(p, cmap=None if j == 0 and p.ndim == 3 else ("magma" if j == len(cols) - 1 else "gray"),
                      vmin=None if j == 0 else 0, vmax=None if j == 0 else (None if j == len(cols) - 1 else 1))
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda p: fig.savefig(p, dpi=80, format="png"))
    plt.close(fig)
    return path
