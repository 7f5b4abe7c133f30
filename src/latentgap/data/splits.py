"""Folds shared by every stage: stratified K-fold over the pooled data, or the dataset's official split.

* single-label: scikit-learn ``StratifiedKFold``; with patient ids ``StratifiedGroupKFold``;
* multi-label: iterative stratification (Sechidis et al., ECML 2011) via ``iterstrat``'s
  ``MultilabelStratifiedKFold``; with patient ids the same is run on *patients*, each patient labelled by
  the union (logical OR) of its images' labels, so no patient is ever split across parts;
* inside each fold's training part a ``val_fraction`` goes to ``val`` (early stopping), stratified the same
  way (grouped: ``round(1 / val_fraction)``-fold grouped stratification, first fold taken).

``splits.json`` records protocol, k, seed, val_fraction and the dataset fingerprint, so a later stage
cannot pair folds made for other data (:func:`load_or_make_splits` refuses the mismatch).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..storage import atomic_write_json, read_json

SPLITS_VERSION = 1
PROTOCOLS = ("kfold", "official")


@dataclass(frozen=True)
class Fold:
    """Index arrays (int64, sorted, disjoint) into the dataset."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class Splits:
    """The folds of one dataset under one protocol.

    Attributes:
        protocol: ``"kfold"`` or ``"official"``. k: number of folds (1 for official). seed: shuffling seed.
        val_fraction: share of each training part used for validation. fingerprint: ``ds.fingerprint()``.
        dataset: ``ds.name``. n: ``len(ds)``. folds: list of :class:`Fold`.
    """

    protocol: str
    k: int
    seed: int
    val_fraction: float
    fingerprint: str
    dataset: str
    n: int
    folds: list[Fold] = field(default_factory=list)

    def params(self) -> dict:
        return {"protocol": self.protocol, "k": self.k, "seed": self.seed, "val_fraction": self.val_fraction}

    def digest(self) -> str:
        """Stable 16-hex hash of the fold contents (names per-fold statistics in latent caches)."""
        h = hashlib.sha256()
        for f in self.folds:
            for part in (f.train, f.val, f.test):
                h.update(np.ascontiguousarray(part, dtype="<i8").tobytes())
                h.update(b"|")
        return h.hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"version": SPLITS_VERSION, **self.params(), "fingerprint": self.fingerprint, "dataset": self.dataset,
                "n": self.n, "digest": self.digest(),
                "folds": [{p: getattr(f, p).tolist() for p in ("train", "val", "test")} for f in self.folds]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically; an existing file is kept if identical and refused otherwise (never overwritten)."""
        path = Path(path)
        if path.exists():
            if Splits.load(path).to_dict() == self.to_dict():
                return path
            raise UserError(f"{path} already holds different splits", "pass another --out path or delete the old file")
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Splits":
        path = Path(path)
        try:
            d = read_json(path)
            folds = [Fold(*(np.asarray(f[p], dtype=np.int64) for p in ("train", "val", "test"))) for f in d["folds"]]
            return cls(d["protocol"], int(d["k"]), int(d["seed"]), float(d["val_fraction"]), d["fingerprint"],
                       d["dataset"], int(d["n"]), folds)
        except FileNotFoundError:
            raise UserError(f"splits file {path} not found", "make it with: latentgap data splits SPEC --out PATH") from None
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path} is not a latentgap splits file ({type(e).__name__}: {e})",
                            "make a new one with: latentgap data splits SPEC --out PATH") from None


# --------------------------------------------------------------------------- making folds

def _check_counts(ds, k: int) -> None:
    counts = np.asarray(ds.class_counts())
    small = np.flatnonzero(counts < k)
    if small.size:
        c = int(small[0])
        what = "positive samples" if ds.multilabel else "samples"
        fix = (f"use --folds {int(counts.min())} or fewer, or merge/drop that class" if counts.min() >= 2
               else "merge or drop that class (no fold count can stratify it)")
        raise UserError(f"class '{ds.class_names[c]}' has {counts[c]} {what}, fewer than the {k} folds requested", fix)
    if ds.patient_ids is not None and len(np.unique(ds.patient_ids)) < k:
        raise UserError(f"{len(np.unique(ds.patient_ids))} patients cannot fill {k} patient-grouped folds",
                        "use fewer --folds")


def _split(y: np.ndarray, groups: np.ndarray | None, n_splits: int, seed: int, multilabel: bool):
    """Yield (train, test) positions into ``y`` for one of the four stratification cases."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if multilabel:
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        mskf = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        if groups is None:
            yield from mskf.split(np.zeros(len(y)), y)
            return
        # stratify patients (label = union over their images), then map back to images
        uniq, inv = np.unique(groups, return_inverse=True)
        yp = np.zeros((len(uniq), y.shape[1]), np.int64)
        np.maximum.at(yp, inv, y)
        for tr, te in mskf.split(np.zeros(len(uniq)), yp):
            yield np.flatnonzero(np.isin(inv, tr)), np.flatnonzero(np.isin(inv, te))
        return
    if groups is None:
        yield from StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y)
    else:
        yield from StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, groups)


def _val_positions(y: np.ndarray, groups: np.ndarray | None, frac: float, seed: int, multilabel: bool) -> np.ndarray:
    """Positions (into ``y``) of a stratified ``frac`` validation part."""
    if frac <= 0:
        return np.empty(0, np.int64)
    if groups is not None:
        m = max(2, int(round(1 / frac)))
        if len(np.unique(groups)) < m:
            raise UserError(f"too few patients ({len(np.unique(groups))}) for a grouped validation part of {frac}",
                            "use a larger --val-fraction or more patients")
        return np.sort(next(_split(y, groups, m, seed, multilabel))[1])
    if multilabel:
        from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

        sss = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=frac, random_state=seed)
        return np.sort(next(sss.split(np.zeros(len(y)), y))[1])
    # Per-class allocation instead of sklearn's train_test_split: that one refuses classes with < 2 members,
    # which tail classes of long-tailed data hit inside a fold. Every class with >= 2 samples gets >= 1.
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        pos = np.flatnonzero(y == c)
        m = int(round(frac * len(pos)))
        m = max(m, 1) if len(pos) >= 2 else 0
        out.append(rng.permutation(pos)[:m])
    return np.sort(np.concatenate(out)).astype(np.int64)


def _train_val(train: np.ndarray, ds, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    g = ds.patient_ids[train] if ds.patient_ids is not None else None
    v = _val_positions(ds.labels[train], g, frac, seed, ds.multilabel)
    keep = np.ones(len(train), bool)
    keep[v] = False
    return np.sort(train[keep]), np.sort(train[v])


def make_splits(ds, protocol: str = "kfold", k: int = 5, seed: int = 0, val_fraction: float = 0.1) -> Splits:
    """Folds for ``ds`` (an :class:`~latentgap.data.ImageDataset`).

    Args:
        protocol: ``"kfold"`` (stratified K-fold over all samples pooled) or ``"official"`` (one fold: the
            dataset's own train/val/test; val is carved from train with ``val_fraction`` if the source has none).
        k: number of folds (>= 2) for ``kfold``.
        seed: shuffling seed (folds and validation parts).
        val_fraction: share of each training part held out for early stopping, in [0, 0.5].
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown split protocol '{protocol}'", f"use one of {', '.join(PROTOCOLS)}")
    if getattr(ds, "synthetic", False):
        raise UserError(f"'{ds.name}' is a synthetic dataset: it cannot be split into folds or be the test part of "
                        "anything", "test on real data; use synthetic images only as training data")
    if not 0 <= val_fraction <= 0.5:
        raise UserError(f"val fraction {val_fraction} is outside [0, 0.5]", "pass e.g. --val-fraction 0.1")
    meta = dict(seed=int(seed), val_fraction=float(val_fraction), fingerprint=ds.fingerprint(), dataset=ds.name, n=len(ds))
    if protocol == "official":
        sp = ds.official_split
        if sp is None or not (sp == "train").any() or not (sp == "test").any():
            raise UserError(f"dataset {ds.name} has no official train/test split", "use --protocol kfold")
        train, test = np.flatnonzero(sp == "train"), np.flatnonzero(sp == "test")
        if (sp == "val").any():
            val = np.flatnonzero(sp == "val")
        else:
            train, val = _train_val(train, ds, val_fraction, seed)
        return Splits("official", 1, folds=[Fold(train, val, test)], **meta)
    if int(k) != k or k < 2:
        raise UserError(f"{k} folds requested", "pass --folds 2 or more (default 5)")
    _check_counts(ds, k)
    groups = ds.patient_ids
    folds = []
    for tr, te in _split(ds.labels, groups, k, seed, ds.multilabel):
        train, val = _train_val(np.sort(tr).astype(np.int64), ds, val_fraction, seed)
        folds.append(Fold(train, val, np.sort(te).astype(np.int64)))
    return Splits("kfold", int(k), folds=folds, **meta)


def load_or_make_splits(path: str | os.PathLike, ds, protocol: str = "kfold", k: int = 5, seed: int = 0,
                        val_fraction: float = 0.1) -> Splits:
    """Reuse ``path`` if it was made for this dataset and these parameters; otherwise make and save it.

    Raises:
        UserError: the file exists but was made for another dataset fingerprint or other parameters.
    """
    path = Path(path)
    want = {"protocol": protocol, "k": 1 if protocol == "official" else int(k), "seed": int(seed),
            "val_fraction": float(val_fraction)}
    if path.exists():
        s = Splits.load(path)
        if s.fingerprint != ds.fingerprint():
            raise UserError(f"{path} was made for dataset {s.dataset} (fingerprint {s.fingerprint[:12]}), not for "
                            f"{ds.name} (fingerprint {ds.fingerprint()[:12]})",
                            "pass a new splits path for this dataset (folds must match the data they index)")
        if s.params() != want:
            diff = ", ".join(f"{key} {s.params()[key]} (file) vs {want[key]}" for key in want if s.params()[key] != want[key])
            raise UserError(f"{path} was made with other parameters: {diff}",
                            "pass the file's parameters or a new splits path")
        return s
    s = make_splits(ds, protocol=protocol, k=k, seed=seed, val_fraction=val_fraction)
    s.save(path)
    return s
