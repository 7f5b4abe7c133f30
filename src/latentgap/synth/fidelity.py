"""Fidelity of synthetic images: Fréchet distance, KID, precision / recall and density / coverage, in feature
spaces that work offline.

Feature spaces (each an ``nn.Module`` images (B, C, H, W) float in [0, 1] -> (B, d), with ``num_features``):

* :class:`ClassifierFeatures` — the penultimate layer of an image classifier trained on the fold's real
  training part (a study's image cell, ``load_run``): the features the task cares about;
* :class:`RandomConvFeatures` — a seeded random convolutional network (no training, no download): a generic,
  reproducible feature space (random features are known to rank generative models sensibly);
* :func:`timm_features` — any timm backbone with its pretrained weights (DINOv2 ``vit_small_patch14_dinov2``,
  Inception ``inception_v3``...) from the hub or a local weights file: what a user's machine with internet uses.

Metrics: FD and KID from torchmetrics (given the features, so each image is embedded once); precision / recall /
density / coverage (Naeem et al., ICML 2020) computed in chunks (``prdc`` builds full N x M distance matrices,
3 x 400 MB at 10k x 10k; the chunked version is checked against ``prdc`` in the tests). FD needs many more samples than feature dimensions;
below that it is flagged unreliable and KID (unbiased, with the standard deviation over subsets) leads.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError


class RandomConvFeatures(nn.Module):
    """A seeded random ConvNet: three stride-2 conv + ReLU stages, global average and max pooled -> 2 x 128 + 2 x 64.

    Args:
        in_chans: image channels (1 or 3).
        seed: the weights' seed (features are comparable only between equal seeds).
    """

    def __init__(self, in_chans: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        chans = [in_chans, 32, 64, 128]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans[:-1], chans[1:]))
        with torch.no_grad():
            for conv in self.convs:  # He-normal, from our own generator: no global RNG involved
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2.0 / conv.weight[0].numel()))
                conv.bias.zero_()
        self.num_features = 2 * (64 + 128)
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.25
        feats = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i >= 1:
                feats += [x.mean((2, 3)), x.amax((2, 3))]
        return torch.cat(feats, 1)


class ClassifierFeatures(nn.Module):
    """The penultimate (pooled, pre-head) features of an image-space classifier run (``latentgap.load_run``)."""

    def __init__(self, run):
        super().__init__()
        if run.inputs.get("space") not in ("image", "recon"):
            raise UserError("feature classifier must see images (an image- or reconstruction-space run), not "
                            f"{run.inputs.get('space')}", "pass the run folder of an image-space cell of the fold")
        self.model = run.model.eval()
        self.num_features = int(run.model.num_features)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class TimmFeatures(nn.Module):
    """A timm backbone (``num_classes=0``) behind its own input resolution and normalisation."""

    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = getattr(model, "pretrained_cfg", None) or {}
        self.model = model.eval().requires_grad_(False)
        self.size = tuple(cfg.get("input_size", (3, 224, 224))[1:])
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1))
        self.num_features = int(model.num_features)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        return self.model((x - self.mean) / self.std)


def timm_features(name: str, weights: str | None = None) -> TimmFeatures:
    """Features of the timm model ``name`` with pretrained weights from ``weights`` (a local file) or the hub.

    Raises:
        UserError when the weights cannot be had (offline without a file), naming the fix.
    """
    import timm

    try:
        if weights:
            model = timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": weights})
        else:
            model = timm.create_model(name, pretrained=True, num_classes=0)
    except Exception as e:  # hub unreachable, unknown model, bad file
        raise UserError(f"feature network '{name}' could not be loaded ({type(e).__name__}: {str(e)[:120]})",
                        "pass a local weights file (--features-weights), or use the offline feature spaces "
                        "(classifier, random)") from None
    return TimmFeatures(model)


@torch.no_grad()
def extract(module: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = 256,
            device: str | torch.device = "cpu") -> np.ndarray:
    """Features (N, d) float64 of uint8 (N, H, W[, C]) images or float (N, C, H, W) tensors in [0, 1]."""
    module = module.to(device).eval()
    out = []
    for lo in range(0, len(images), batch_size):
        x = images[lo:lo + batch_size]
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(np.ascontiguousarray(x))
            if x.dtype == torch.uint8:
                from ..data import to_float

                x = to_float((x[..., None] if x.ndim == 3 else x).numpy())
        out.append(module(x.float().to(device)).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, getattr(module, "num_features", 0)))


class _Given(nn.Module):
    """Identity 'feature extractor': lets torchmetrics' FID / KID consume features computed once."""

    def __init__(self, d: int):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return x


def _kth_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of every row to its k-th nearest other row."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, k]


def prdc_chunked(real: np.ndarray, fake: np.ndarray, nearest_k: int = 5, chunk: int = 1024) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) with memory O(chunk x N), not O(N x M)."""
    from sklearn.metrics import pairwise_distances

    real, fake = real.astype(np.float32), fake.astype(np.float32)
    r_real, r_fake = _kth_radii(real, nearest_k), _kth_radii(fake, nearest_k)
    in_real = np.zeros(len(fake), bool)  # fake inside some real's k-NN ball (precision)
    density_hits = 0.0
    for lo in range(0, len(fake), chunk):
        d = pairwise_distances(fake[lo:lo + chunk], real)  # (c, N)
        inside = d <= r_real[None]
        in_real[lo:lo + chunk] = inside.any(1)
        density_hits += inside.sum()
    in_fake = np.zeros(len(real), bool)  # real inside some fake's ball (recall)
    covered = np.zeros(len(real), bool)  # real whose nearest fake is inside its own ball (coverage)
    for lo in range(0, len(real), chunk):
        d = pairwise_distances(real[lo:lo + chunk], fake)  # (c, M)
        in_fake[lo:lo + chunk] = (d <= r_fake[None]).any(1)
        covered[lo:lo + chunk] = d.min(1) <= r_real[lo:lo + chunk]
    return {"precision": float(in_real.mean()), "recall": float(in_fake.mean()),
            "density": float(density_hits / (nearest_k * len(fake))), "coverage": float(covered.mean())}


def fidelity(real: np.ndarray, synthetic: np.ndarray, *, nearest_k: int = 5, kid_subsets: int = 100,
             kid_subset_size: int = 1000, seed: int = 0) -> dict[str, Any]:
    """FD, KID (mean and std over subsets), precision, recall, density and coverage of two feature sets.

    Args:
        real, synthetic: (N, d) features of real and synthetic images (same feature space).
        nearest_k: k of the k-NN radii of precision / recall / density / coverage.
        kid_subsets, kid_subset_size: KID's subsets (the size is capped at the smaller sample).

    Returns dict: fd, fd_reliable (both samples larger than 2 d), kid_mean, kid_std, kid_subset_size,
    precision, recall, density, coverage, n_real, n_synthetic, dim, lead ("fd" or "kid": the figure to read
    first), nearest_k.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    real, synthetic = np.asarray(real, dtype=np.float64), np.asarray(synthetic, dtype=np.float64)
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        raise UserError(f"feature sets of shapes {real.shape} and {synthetic.shape} cannot be compared",
                        "extract both with the same feature network")
    need = nearest_k + 2  # the k-th neighbour of a sample among the others, plus one
    if len(real) < need or len(synthetic) < need:
        raise UserError(f"fidelity needs at least {need} real and {need} synthetic samples (have {len(real)} and "
                        f"{len(synthetic)})", "sample more synthetic images or lower nearest_k")
    d = real.shape[1]
    fid = FrechetInceptionDistance(feature=_Given(d), normalize=True).double()
    fid.update(torch.from_numpy(real), real=True)
    fid.update(torch.from_numpy(synthetic), real=False)
    size = int(min(kid_subset_size, len(real), len(synthetic)))
    with warnings.catch_warnings():  # "KID will save all extracted features": they are features already
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=_Given(d), subsets=kid_subsets, subset_size=size, normalize=True)
    kid.update(torch.from_numpy(real), real=True)
    kid.update(torch.from_numpy(synthetic), real=False)
    with torch.random.fork_rng(devices=[]):  # KID draws its subsets from the global RNG
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    pr = prdc_chunked(real, synthetic, nearest_k)
    reliable = min(len(real), len(synthetic)) > 2 * d
    return {"fd": float(fid.compute()), "fd_reliable": bool(reliable), "kid_mean": float(kid_mean),
            "kid_std": float(kid_std), "kid_subset_size": size, **{k: float(v) for k, v in pr.items()},
            "n_real": int(len(real)), "n_synthetic": int(len(synthetic)), "dim": int(d),
            "lead": "fd" if reliable else "kid", "nearest_k": nearest_k}
