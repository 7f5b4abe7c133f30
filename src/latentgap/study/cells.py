"""What one study task does inside a worker (in-process, a local worker process, or a Slurm array task).

Three kinds of task: *autoencoder* (train the built-in autoencoder once, when the spec asks for it),
*prepare* (one per autoencoder x dataset: build the latent cache once, write a fidelity row and a small
file of example originals / reconstructions for the report) and *cell* (one classifier training:
dataset x autoencoder x space x variant x fold x seed -> one result row).

Cell kinds: ``train`` runs ``latentgap.train.run_training`` (the real study). ``synthetic`` fits a
scikit-learn logistic regression on seeded synthetic features: a real, deterministic, fast computation
that exercises executors, resume and reports without data or autoencoders (rows are marked
``cell_kind: synthetic`` and the report warns about them). It is a smoke test, never a result.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..storage import atomic_write, stable_hash
from .spec import resize_for


# --------------------------------------------------------------------------- real training

def autoencoder_spec(cfg: dict[str, Any], study_dir: Path) -> str:
    """What ``create_autoencoder`` should load: the study-trained run folder, or the spec's name / path."""
    return str(Path(study_dir) / cfg["ae_source"]) if cfg.get("ae_source") else cfg["autoencoder"]


def train_autoencoder_task(cfg: dict[str, Any], out_dir: Path, study_dir: Path) -> dict[str, Any]:
    """Train the built-in autoencoder on ``cfg["data"]`` into ``out_dir`` (resumes from its checkpoints)."""
    from ..autoencoders.train import train_autoencoder
    from ..data import open_dataset
    from ..storage import read_json

    if not (out_dir / "model").is_dir():  # a killed training resumes; a finished one is never redone
        ds = open_dataset(cfg["data"], resize=cfg["resize"])
        t = {k: v for k, v in cfg["train"].items() if k != "data"}
        train_autoencoder(ds, out_dir, device=cfg["device"], **t)
    rec = read_json(out_dir / "training.json")
    return {"steps": rec["settings"]["steps"], "ae_train_seconds": rec["train_seconds"],
            "train_sample_psnr_db": rec["train_sample_psnr_db"], "scaling_factor": rec.get("scaling_factor"),
            "n_train_images": rec.get("dataset", {}).get("n"), "final_loss": rec["history"][-1][1],
            "weights_dir": str(out_dir.relative_to(study_dir)),
            "settings": cfg["train"]}


def train_cell(cfg: dict[str, Any], run_dir: Path, study_dir: Path) -> dict[str, Any]:
    """Train one classifier with ``latentgap.train.run_training`` and return its result row."""
    from ..train import TrainConfig, run_training

    c = cfg["cache"]
    extra = {}
    if cfg.get("teacher_run"):  # the study's own recon cell of this fold and seed teaches the distilled cell
        extra["distill_teacher"] = str(Path(study_dir) / cfg["teacher_run"])
    values = {**cfg["train"], **extra, "dataset": cfg["dataset"], "space": cfg["space"], "variant": cfg["variant"],
              "autoencoder": None if cfg["space"] == "image" else autoencoder_spec(cfg, study_dir), "fold": cfg["fold"],
              "seed": cfg["seed"], "k": cfg["k"], "split_seed": cfg["split_seed"], "val_fraction": cfg["val_fraction"],
              "resize": resize_for(c, cfg["dataset"]), "grey_to_rgb": c["grey_to_rgb"], "dtype": c["dtype"],
              "cache_batch_size": c["batch_size"], "device": cfg["device"],
              # caches and splits.json live in the study folder, shared by every cell of a dataset
              "root": str(study_dir)}
    return dict(run_training(TrainConfig(**values), run_dir))


def prepare_pair(cfg: dict[str, Any], out_dir: Path, study_dir: Path) -> dict[str, Any]:
    """Build the latent cache of one dataset x autoencoder and return its fidelity row; save examples."""
    from ..data import open_dataset
    from ..latents import ensure_cache
    from ..latents.fidelity import summarize_fidelity

    c = cfg["cache"]
    side = resize_for(c, cfg["dataset"])
    ds = open_dataset(cfg["dataset"], resize=side)
    cache = ensure_cache(ds, autoencoder_spec(cfg, study_dir), study_dir, resize=side, grey_to_rgb=c["grey_to_rgb"],
                         dtype=c["dtype"], batch_size=c["batch_size"], device=cfg["device"], progress=False)
    row = summarize_fidelity(cache, ds, split="all")
    idx = example_indices(np.asarray(ds.labels), cfg["examples"])
    if len(idx):
        save_examples(out_dir / "examples.npz", ds.load_uint8(idx), np.asarray(cache.recon[idx]),
                      np.asarray(ds.labels)[idx], cfg)
    row["cache_dir"] = str(Path(cache.path).relative_to(study_dir))  # rows never hold absolute paths
    return row


def example_indices(labels: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` indices, cycling over classes (first unused sample of each class in turn)."""
    y = labels if labels.ndim == 1 else labels.argmax(1)
    per_class = [list(np.flatnonzero(y == c)) for c in np.unique(y)]
    out: list[int] = []
    while len(out) < n and any(per_class):
        for lst in per_class:
            if lst and len(out) < n:
                out.append(int(lst.pop(0)))
    return np.array(sorted(out), dtype=np.int64)


def save_examples(path: Path, original: np.ndarray, recon: np.ndarray, labels: np.ndarray, cfg: dict) -> None:
    """Examples for the report figure: uint8 (B, H, W, C) originals and reconstructions."""
    def write(p: Path) -> None:
        with open(p, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
            np.savez_compressed(f, original=original, recon=recon, labels=labels,
                                dataset=cfg["dataset"], autoencoder=cfg["autoencoder"])

    atomic_write(path, write)


# --------------------------------------------------------------------------- synthetic smoke test

_SPACE_NOISE = {"image": 1.0, "recon": 1.1, "latent": 2.0}


def synthetic_cell(cfg: dict[str, Any], run_dir: Path, study_dir: Path) -> dict[str, Any]:
    """Logistic regression on seeded synthetic features; the same cell always gives the same row.

    ``train.sleep`` (seconds) makes cells last long enough to kill a study mid-way in tests. Every call
    appends a line to ``run_dir/calls.log`` so tests can count how often a cell was trained.
    """
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef, roc_auc_score, recall_score

    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "calls.log", "a") as f:
        f.write(f"{os.getpid()} {time.time()}\n")
    time.sleep(float(cfg["train"].get("sleep", 0.0)))
    if cfg["train"].get("fail_on") and cfg["train"]["fail_on"] in (cfg["space"], cfg["dataset"]):
        raise RuntimeError(f"synthetic failure requested for {cfg['train']['fail_on']}")
    n_classes = int(cfg["train"].get("classes", 3))
    data_seed = int(stable_hash(cfg["dataset"], 8), 16) % 2**31
    x, y = make_classification(n_samples=300, n_features=12, n_informative=6, n_classes=n_classes,
                               random_state=data_seed)
    rng = np.random.default_rng([data_seed, cfg["seed"], int(stable_hash([cfg["space"], cfg["autoencoder"], cfg["variant"]], 8), 16)])
    ae_shift = 0.0 if cfg["autoencoder"] in (None, "none") else (int(stable_hash(cfg["autoencoder"], 4), 16) % 7) / 10
    x = x + rng.normal(0, _SPACE_NOISE[cfg["space"]] + ae_shift * (cfg["space"] == "latent"), x.shape)
    test = (np.arange(len(y)) % cfg["k"]) == cfg["fold"]
    clf = LogisticRegression(max_iter=500).fit(x[~test], y[~test])
    prob = clf.predict_proba(x[test])
    pred = prob.argmax(1)
    return {
        "bacc": float(balanced_accuracy_score(y[test], pred)),
        "auc": float(roc_auc_score(y[test], prob, multi_class="ovr", average="macro")),
        "mcc": float(matthews_corrcoef(y[test], pred)),
        "recall_per_class": [float(r) for r in recall_score(y[test], pred, average=None)],
        "n_test": int(test.sum()), "epochs": 0, "pretrained": False, "cell_kind": "synthetic",
    }


def synthetic_prepare(cfg: dict[str, Any], out_dir: Path, study_dir: Path) -> dict[str, Any]:
    """Fidelity row and examples from seeded noise images (smoke test of the report path)."""
    rng = np.random.default_rng(int(stable_hash([cfg["dataset"], cfg["autoencoder"]], 8), 16))
    orig = rng.integers(0, 256, size=(max(cfg["examples"], 1), 16, 16, 1), dtype=np.uint8)
    rec = np.clip(orig.astype(int) + rng.integers(-20, 21, orig.shape), 0, 255).astype(np.uint8)
    save_examples(out_dir / "examples.npz", orig, rec, np.arange(len(orig)) % 2, cfg)
    psnr = 20 + 10 * rng.random(50)
    ssim = 0.7 + 0.2 * rng.random(50)
    return {"kind": "fidelity", "split": "all", "n": 50, "psnr_mean": float(psnr.mean()),
            "psnr_std": float(psnr.std(ddof=1)), "ssim_mean": float(ssim.mean()), "ssim_std": float(ssim.std(ddof=1)),
            "cell_kind": "synthetic"}


def synthetic_autoencoder(cfg: dict[str, Any], out_dir: Path, study_dir: Path) -> dict[str, Any]:
    """Stand-in for autoencoder training in smoke tests: records the call, trains nothing."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "calls.log", "a") as f:
        f.write(f"{os.getpid()} {time.time()}\n")
    return {"steps": 0, "cell_kind": "synthetic"}


# kind -> (cell, prepare, autoencoder) task functions
CELL_KINDS = {"train": (train_cell, prepare_pair, train_autoencoder_task),
              "synthetic": (synthetic_cell, synthetic_prepare, synthetic_autoencoder)}
