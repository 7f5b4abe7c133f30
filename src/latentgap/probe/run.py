"""``run_probe``: every cheap score for one autoencoder x dataset pair, each with its compute time."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .measures import equivariance_error, high_frequency_energy, latent_sensitivity, unrelated_distance
from .probes import PROBES, SPACES, probe_bacc

# the score families `skip` can leave out
FAMILIES = PROBES + ("equivariance", "spectral", "sensitivity")

# score -> what it means (printed by `latentgap probe` and written to docs/probe.md)
MEANING: dict[str, str] = {
    "linear_{s}": "balanced accuracy of a linear probe (PCA + class-weighted logistic regression) on {s}",
    "knn_{s}": "balanced accuracy of a 10-nearest-neighbour vote (PCA, whitened) on {s}",
    "linear_gap": "linear_recon - linear_latent: what a linear probe loses between reconstructions and latents",
    "knn_gap": "knn_recon - knn_latent",
    "equiv_hflip": "|encode(flip x) - flip encode(x)| / |encode x| (normalised latents; ~1.41 = unrelated)",
    "equiv_vflip": "the same for vertical flips",
    "equiv_shift": "the same for a shift by one latent cell (borders excluded)",
    "unrelated": "|encode(x_j) - encode(x_i)| / |encode(x_i)|: the scale of the three equivariance errors",
    "hf_energy": "share of latent spatial power above half the Nyquist frequency",
    "sensitivity": "relative latent change per relative image change under small noise (identity = 1)",
}


def meaning(score: str) -> str:
    for s in SPACES:
        for p in PROBES:
            if score == f"{p}_{s}":
                return MEANING[f"{p}_{{s}}"].format(s={"image": "images", "recon": "reconstructions",
                                                       "latent": "normalised latents"}[s])
    return MEANING.get(score, "")


def _encoder(ae, grey_to_rgb: bool, batch_size: int, device):
    from ..autoencoders.base import adapt_images

    def encode(x: torch.Tensor) -> torch.Tensor:
        out = [ae.encode(adapt_images(x[i:i + batch_size], ae.info, grey_to_rgb).to(device)).float().cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out)
    return encode


def run_probe(dataset, autoencoder, root, *, k: int = 3, seed: int = 0, val_fraction: float = 0.1, images: int = 64,
              resize: int | None = None, grey_to_rgb: bool = True, dtype: str = "float16", cache=None,
              batch_size: int = 32, device: str = "auto", progress: bool | None = None,
              skip: tuple[str, ...] = ()) -> dict:
    """The probe's scores for ``autoencoder`` on ``dataset`` (builds or reuses the latent cache and the splits).

    Args:
        dataset, autoencoder: objects or specs (as for :func:`latentgap.latents.ensure_cache`).
        root: working folder (latent cache and splits are shared with studies run under the same root).
        k, seed, val_fraction: the stratified k-fold splits (a study's folds for its ``k``, ``split_seed`` and
            ``val_fraction``; the splits file under ``root`` is shared with studies run there).
        dtype, cache: the latent cache's dtype, or an existing cache folder to read (e.g. a study's).
        images: how many images (from fold 0's test part) the geometric measures encode.
        skip: score families to leave out: ``linear``, ``knn``, ``equivariance``, ``spectral``, ``sensitivity``.

    Returns:
        a row: dataset, autoencoder, settings, ``scores`` {name: value}, ``seconds`` {family: s}, ``encode_seconds``.
    """
    from ..autoencoders import create_autoencoder
    from ..data import load_or_make_splits, open_dataset
    from ..device import resolve_device
    from ..latents import ensure_cache
    from ..workspace import splits_path

    dev = resolve_device(device)
    ds = open_dataset(dataset, resize=resize) if isinstance(dataset, str) else dataset
    ae = create_autoencoder(autoencoder, device=dev) if isinstance(autoencoder, str) else autoencoder
    t0 = time.perf_counter()
    cache = ensure_cache(ds, ae, root, grey_to_rgb=grey_to_rgb, dtype=dtype, batch_size=batch_size, device=dev,
                         progress=progress, cache=cache)
    splits = load_or_make_splits(splits_path(Path(root), ds, "kfold", k, seed), ds, protocol="kfold", k=k, seed=seed,
                                 val_fraction=val_fraction)
    encode_s = time.perf_counter() - t0
    row = probe_scores(ds, ae, cache, splits, images=images, seed=seed, grey_to_rgb=grey_to_rgb,
                       batch_size=batch_size, device=dev, skip=skip)
    return {**row, "k": k, "encode_seconds": encode_s}


def probe_scores(ds, ae, cache, splits, *, folds: list[int] | None = None, images: int = 64, seed: int = 0,
                 grey_to_rgb: bool = True, batch_size: int = 32, device="cpu", skip: tuple[str, ...] = ()) -> dict:
    """Every score family not in ``skip`` for an opened dataset, autoencoder, its cache and the splits (the study's
    task calls this with the study's own cache and folds); see :func:`run_probe` for the row. ``folds``: the folds
    the probes use (None: all); the geometric measures encode test images of the first of them."""
    from ..data import to_float

    scores: dict[str, float] = {}
    seconds: dict[str, float] = {}
    fold_bacc: dict[str, list[float]] = {}
    notes = []
    if ds.multilabel and not all(p in skip for p in PROBES):
        skip = tuple(skip) + PROBES  # the geometric measures need no labels
        notes.append("multi-label dataset: the linear and k-NN probes (single-label) were skipped")
    for p in PROBES:
        if p in skip:
            continue
        t = time.perf_counter()
        for s in SPACES:
            r = probe_bacc(s, p, ds, cache, splits, folds, seed=seed)
            scores[f"{p}_{s}"], fold_bacc[f"{p}_{s}"] = r["bacc"], r["bacc_folds"]
        scores[f"{p}_gap"] = scores[f"{p}_recon"] - scores[f"{p}_latent"]
        seconds[p] = time.perf_counter() - t
    test = np.asarray(splits.folds[(folds or [0])[0]].test)
    pick = np.sort(np.random.default_rng(seed).choice(test, size=min(images, len(test)), replace=False))
    x = to_float(ds.load_uint8(pick))
    encode = _encoder(ae, grey_to_rgb, batch_size, device)
    if "equivariance" not in skip:
        t = time.perf_counter()
        for tr in ("hflip", "vflip", "shift"):
            scores[f"equiv_{tr}"] = float(np.mean(equivariance_error(encode, x, tr, ae.info.downsample)))
        scores["unrelated"] = float(np.mean(unrelated_distance(encode, x, seed)))
        seconds["equivariance"] = time.perf_counter() - t
    if "spectral" not in skip:
        t = time.perf_counter()
        scores["hf_energy"] = high_frequency_energy(torch.as_tensor(np.asarray(cache.latents[pick], np.float32)))
        seconds["spectral"] = time.perf_counter() - t
    if "sensitivity" not in skip:
        t = time.perf_counter()
        scores["sensitivity"] = float(np.mean(latent_sensitivity(encode, x, seed=seed)))
        seconds["sensitivity"] = time.perf_counter() - t
    return {"dataset": ds.name, "autoencoder": ae.info.name, "seed": seed, "images": int(len(pick)),
            "image_size": list(ds.image_size), "latent_shape": list(cache.latent_shape), "scores": scores,
            "bacc_folds": fold_bacc, "seconds": seconds, "device": str(device), "notes": notes}
