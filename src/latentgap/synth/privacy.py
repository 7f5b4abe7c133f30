"""Privacy and memorisation of a generator: nearest-neighbour copies and membership inference.

* **Copies.** For every synthetic sample, the distance to its nearest *training* sample, beside the distance of
  every held-out real sample (the fold's test part) to its nearest training sample — the reference for how close
  an independent draw from the data distribution comes. A synthetic sample is counted as a copy when it is
  closer to a training sample than the ``quantile`` (default 1 %) of the held-out distances: a generator of new
  images copies at about that rate, one that reproduces training images at ~100 %. Distances in any
  representation: latent L2, feature cosine, pixel L2. The search is chunked (scikit-learn brute force over
  blocks of queries), so memory grows with the chunk, not with N x M.
* **Membership inference** against the generator (Carlini et al. 2023; Hu & Pang 2023's loss attack): the
  per-sample denoising loss at fixed noise levels and fixed noise draws; members (the fold's training part)
  should not be told apart from non-members (its test part). ROC AUC (0.5 = no leak) and TPR at 1 % FPR.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UserError

METRICS = ("l2", "cosine")


def nearest(query: np.ndarray, reference: np.ndarray, metric: str = "l2", chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Distance to and index of the nearest ``reference`` row for every ``query`` row (both (N, d), flattened).

    Chunked over queries: peak memory is O(chunk x len(reference)), not O(N x M).
    """
    from sklearn.metrics import pairwise_distances_argmin_min

    if metric not in METRICS:
        raise UserError(f"unknown distance '{metric}'", f"use one of: {', '.join(METRICS)}")
    q = np.asarray(query, dtype=np.float32).reshape(len(query), -1)
    r = np.asarray(reference, dtype=np.float32).reshape(len(reference), -1)
    if q.shape[1] != r.shape[1]:
        raise UserError(f"cannot compare samples of {q.shape[1]} and {r.shape[1]} values",
                        "use synthetic and real data of the same size and channels")
    if len(r) == 0:
        raise UserError("no reference samples to compare with", "pass the fold's training part")
    dist, idx = np.empty(len(q), np.float64), np.empty(len(q), np.int64)
    for lo in range(0, len(q), chunk):
        i, d = pairwise_distances_argmin_min(q[lo:lo + chunk], r, metric="euclidean" if metric == "l2" else "cosine",
                                             metric_kwargs=None, axis=1)
        idx[lo:lo + chunk], dist[lo:lo + chunk] = i, d
    return dist, idx


def copies(synthetic: np.ndarray, train: np.ndarray, heldout: np.ndarray, *, metric: str = "l2",
           quantile: float = 0.01, chunk: int = 2048) -> dict[str, Any]:
    """Nearest-training-sample distances of synthetic and held-out samples and the copy rate.

    Returns dict: metric, threshold (the ``quantile`` of held-out distances), copy_rate (share of synthetic
    samples at or below it), heldout_rate (the same share of held-out samples, ~quantile by construction),
    median_synthetic, median_heldout, ratio (median synthetic / median held-out), d_synthetic, d_heldout,
    nearest_train (index of each synthetic sample's nearest training sample).
    """
    if not 0 < quantile < 0.5:
        raise UserError(f"copy quantile {quantile} is outside (0, 0.5)", "use e.g. 0.01")
    if len(heldout) < 10:
        raise UserError(f"the copy threshold needs at least 10 held-out samples (have {len(heldout)})",
                        "use the fold's whole test part")
    d_syn, nn_idx = nearest(synthetic, train, metric, chunk)
    d_hold, _ = nearest(heldout, train, metric, chunk)
    thr = float(np.quantile(d_hold, quantile))
    return {"metric": metric, "quantile": quantile, "threshold": thr, "copy_rate": float(np.mean(d_syn <= thr)),
            "heldout_rate": float(np.mean(d_hold <= thr)), "median_synthetic": float(np.median(d_syn)),
            "median_heldout": float(np.median(d_hold)),
            "ratio": float(np.median(d_syn) / max(np.median(d_hold), 1e-12)),
            "d_synthetic": d_syn, "d_heldout": d_hold, "nearest_train": nn_idx}


def membership_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict[str, float]:
    """ROC AUC and TPR at 1 % FPR of "member" decisions from scores (higher = more likely a member)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    m, n = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    if len(m) < 2 or len(n) < 2:
        raise UserError("membership inference needs at least 2 members and 2 non-members", "use whole fold parts")
    y = np.r_[np.ones(len(m)), np.zeros(len(n))]
    s = np.r_[m, n]
    fpr, tpr, _ = roc_curve(y, s)
    return {"auc": float(roc_auc_score(y, s)), "tpr_at_1pct_fpr": float(np.max(tpr[fpr <= 0.01], initial=0.0)),
            "n_members": int(len(m)), "n_nonmembers": int(len(n))}


@torch.no_grad()
def denoising_losses(gen, latents: torch.Tensor, labels: torch.Tensor, *, levels=(0.1, 0.3, 0.5), seed: int = 0,
                     batch_size: int = 256) -> np.ndarray:
    """Per-sample denoising loss of ``gen`` (a :class:`~latentgap.synth.sample.Generator`) averaged over fixed
    noise ``levels`` (fractions of the forward process: flow time t, or t / T for v-prediction) with fixed noise
    drawn from ``seed`` — the same draws for members and non-members. latents: (N, c, h, w) in the generator's
    normalised coordinates; labels: (N,) the true classes (the conditional model is attacked)."""
    from ..diffusion.objectives import FlowMatching

    dev = next(gen.model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    eps_all = [torch.randn(latents.shape, generator=g) for _ in levels]
    out = np.zeros(len(latents))
    for j, lev in enumerate(levels):
        for lo in range(0, len(latents), batch_size):
            x = latents[lo:lo + batch_size].float()
            eps = eps_all[j][lo:lo + batch_size]
            if isinstance(gen.objective, FlowMatching):
                t = torch.full((len(x),), float(lev))
            else:
                t = torch.full((len(x),), int(round(lev * (gen.objective.schedule.num_train_timesteps - 1))))
            nb = gen.objective.noisy(x, t, eps)
            pred = gen.model(nb.z_t.to(dev), nb.model_time.to(dev), labels[lo:lo + batch_size].to(dev))
            out[lo:lo + batch_size] += ((pred.float().cpu() - nb.target) ** 2).mean((1, 2, 3)).numpy()
    return out / len(levels)
