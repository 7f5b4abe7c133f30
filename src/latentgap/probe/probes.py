"""Linear-probe and k-NN balanced accuracy in the three spaces, on the study's folds (scikit-learn).

A probe is a fixed, cheap classifier on frozen features: PCA (fitted on the fold's training part) then a
class-weighted logistic regression, or a k-nearest-neighbour vote. Its balanced accuracy on the fold's test part
says how *linearly* (or locally) accessible the class information is in latents, reconstructions and images —
a candidate proxy for what a trained classifier reaches, at a tiny fraction of its cost. Validation parts are
not used (nothing is early-stopped). Features: latents in the fold's channel normalisation, images and
reconstructions as [0, 1] pixels; every space is flattened.
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ..errors import UserError

SPACES = ("image", "recon", "latent")
PROBES = ("linear", "knn")


def space_features(space: str, ds, cache, splits, fold: int, part: str,
                   positions: np.ndarray | None = None) -> np.ndarray:
    """(n, d) float32 features of ``part`` of ``fold`` in ``space`` (identity view), flattened from exactly the inputs
    a classifier of that space gets (``latents.space_dataset``: [0, 1] pixels, latents in the fold's channel
    normalisation); ``positions``: a subset of the part (positions in it), default all."""
    from ..latents import space_dataset

    sd = space_dataset(space, ds, cache, splits, fold, part)
    x, _ = sd.get_batch(np.arange(len(sd)) if positions is None else positions)
    return x.flatten(1).numpy()


def _model(probe: str, n_train: int, dim: int, seed: int, components: int, neighbours: int):
    pca = PCA(n_components=min(components, n_train - 1, dim), svd_solver="randomized", random_state=seed)
    if probe == "linear":
        head = LogisticRegression(class_weight="balanced", max_iter=2000, C=1.0)
    elif probe == "knn":
        head = KNeighborsClassifier(n_neighbors=min(neighbours, n_train))
    else:
        raise UserError(f"unknown probe '{probe}'", f"use one of: {', '.join(PROBES)}")
    # standardising after PCA puts every component on one scale (whitening); the k-NN then votes in that space
    return make_pipeline(StandardScaler(), pca, StandardScaler(), head)


def _subsample(idx: np.ndarray, y: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """At most ``cap`` of ``idx``, stratified by class (each class keeps its share, at least one image), sorted.
    ``y`` is indexed by ``idx`` (a part's labels for positions in that part)."""
    if len(idx) <= cap:
        return idx
    rng = np.random.default_rng(seed)
    keep = [rng.choice(idx[y[idx] == c], size=max(1, round(cap * np.mean(y[idx] == c))), replace=False)
            for c in np.unique(y[idx])]
    return np.sort(np.concatenate(keep))


def probe_bacc(space: str, probe: str, ds, cache, splits, folds: list[int] | None = None, *, seed: int = 0,
               components: int = 128, neighbours: int = 10, max_images: int = 5000) -> dict:
    """Balanced accuracy of ``probe`` on ``space`` features, per fold and its mean, with the seconds it took.
    ``max_images``: larger training and test parts are subsampled to this many images (stratified, seeded), so
    that a probe stays a matter of minutes on a large dataset.

    Raises:
        UserError: a multi-label dataset (probes are single-label here) or an unknown space / probe.
    """
    if ds.multilabel:
        raise UserError(f"dataset '{ds.name}' is multi-label", "probes need single-label classes")
    folds = list(range(len(splits.folds))) if folds is None else folds
    y = np.asarray(ds.labels)
    t0, per_fold = time.perf_counter(), []
    for f in folds:
        ytr, yte = y[splits.folds[f].train], y[splits.folds[f].test]
        tr = _subsample(np.arange(len(ytr)), ytr, max_images, seed)  # positions in the part
        te = _subsample(np.arange(len(yte)), yte, max_images, seed)
        xtr = space_features(space, ds, cache, splits, f, "train", tr)
        xte = space_features(space, ds, cache, splits, f, "test", te)
        model = _model(probe, len(tr), xtr.shape[1], seed, components, neighbours).fit(xtr, ytr[tr])
        per_fold.append(float(balanced_accuracy_score(yte[te], model.predict(xte))))
    return {"space": space, "probe": probe, "bacc": float(np.mean(per_fold)), "bacc_folds": per_fold,
            "seconds": time.perf_counter() - t0}
