"""Segmentation metrics from MONAI, with the aggregation named, and calibration of confidence maps.

* Dice and IoU **per image** (``monai.metrics.DiceMetric`` / ``MeanIoU``, ``reduction="none"``), then the mean over
  images (the polyp-benchmark convention) — an image whose ground truth and prediction are both empty scores 1
  (``ignore_empty=False``: a correct "no lesion" is a perfect answer), one with an empty ground truth and a
  non-empty prediction 0;
* Dice and IoU **global**: one Dice / IoU over all pixels of all images pooled;
* HD95 per image (``monai.metrics.HausdorffDistanceMetric``, percentile 95, in pixels), over the images where both
  masks are non-empty (undefined otherwise), with the number of images it covers;
* calibration of the foreground probability map: pixel ECE (equal-width bins), Brier score;
* the confidence map's information: ROC AUC of per-pixel uncertainty for predicting per-pixel error, with a
  bootstrap CI over images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UserError


def _onehot(masks: np.ndarray) -> torch.Tensor:
    """(N, H, W) binary -> (N, 1, H, W) float (MONAI's foreground channel)."""
    return torch.as_tensor(np.asarray(masks) > 0, dtype=torch.float32)[:, None]


def overlap(pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Dice and IoU per image (mean over images) and global, and HD95 (binary masks (N, H, W))."""
    from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU

    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise UserError(f"predictions {pred.shape} and ground truth {truth.shape} differ in shape",
                        "predict at the ground truth's size")
    p, t = _onehot(pred), _onehot(truth)
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(p, t).flatten().numpy()
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(p, t).flatten().numpy()
    inter, psum, tsum = float((p * t).sum()), float(p.sum()), float(t.sum())
    both = (p.flatten(1).sum(1) > 0) & (t.flatten(1).sum(1) > 0)
    hd = np.full(len(p), np.nan)
    if both.any():
        h = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")(p[both], t[both])
        hd[both.numpy()] = h.flatten().numpy()
    return {"dice_per_image": float(np.mean(dice)), "iou_per_image": float(np.mean(iou)),
            "dice_global": 2 * inter / (psum + tsum) if psum + tsum > 0 else 1.0,
            "iou_global": inter / (psum + tsum - inter) if psum + tsum - inter > 0 else 1.0,
            "hd95_per_image": float(np.nanmean(hd)) if both.any() else float("nan"), "hd95_images": int(both.sum()),
            "n_images": int(len(p)), "empty_truth": int((t.flatten(1).sum(1) == 0).sum()),
            "dice_values": dice, "aggregation": "per image: mean over images; global: all pixels pooled"}


def calibration(prob: np.ndarray, truth: np.ndarray, bins: int = 15) -> dict[str, float]:
    """Pixel ECE (equal-width bins on the foreground probability) and Brier score."""
    p = np.asarray(prob, dtype=np.float64).ravel()
    y = (np.asarray(truth) > 0).astype(np.float64).ravel()
    if p.shape != y.shape:
        raise UserError("probability map and ground truth differ in size", "predict at the ground truth's size")
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    conf = np.bincount(idx, weights=p, minlength=bins)
    acc = np.bincount(idx, weights=y, minlength=bins)
    ece = float(np.sum(np.abs(acc - conf)) / len(p))
    return {"ece": ece, "brier": float(np.mean((p - y) ** 2)), "bins": bins}


def uncertainty_auroc(uncertainty: np.ndarray, pred: np.ndarray, truth: np.ndarray, *, n_boot: int = 200,
                      seed: int = 0, bins: int = 1024) -> dict[str, float]:
    """ROC AUC of per-pixel uncertainty for predicting per-pixel error (scikit-learn, all pixels), and a 95 %
    bootstrap CI over images.

    The bootstrap reuses per-image histograms of the uncertainty (``bins`` global quantile bins, errors and
    non-errors counted separately), so each resample costs O(bins) instead of a sort of every pixel; values within
    one bin count as ties there (the point estimate is exact).
    """
    from sklearn.metrics import roc_auc_score

    u = np.asarray(uncertainty, dtype=np.float64)
    err = (np.asarray(pred) > 0) != (np.asarray(truth) > 0)
    if err.all() or not err.any():
        return {"auroc": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"),
                "note": "no errors (or only errors): AUROC undefined"}
    auc = float(roc_auc_score(err.ravel(), u.ravel()))
    n = len(u)
    edges = np.unique(np.quantile(u, np.linspace(0, 1, bins + 1)[1:-1]))
    idx = np.searchsorted(edges, u.reshape(n, -1), side="right")  # bin of every pixel, per image
    nb = len(edges) + 1
    e = err.reshape(n, -1)
    pos = np.stack([np.bincount(idx[i][e[i]], minlength=nb) for i in range(n)]).astype(np.float64)
    neg = np.stack([np.bincount(idx[i][~e[i]], minlength=nb) for i in range(n)]).astype(np.float64)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        p, q = pos[i].sum(0), neg[i].sum(0)
        if p.sum() and q.sum():  # P(u_err > u_ok) + 0.5 P(tie), from the histograms
            boots.append(float((p * (np.cumsum(q) - q)).sum() + 0.5 * (p * q).sum()) / (p.sum() * q.sum()))
    lo, hi = (np.quantile(boots, [0.025, 0.975]) if boots else (np.nan, np.nan))
    return {"auroc": auc, "ci_low": float(lo), "ci_high": float(hi), "note": "bootstrap over images"}
