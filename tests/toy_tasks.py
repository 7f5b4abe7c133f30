"""Toy task kinds and a toy grid, registered from the tests (the package holds no test stand-ins).

The toy grid is the classification grid with its task kinds swapped for cheap, deterministic toys:
``toy-prepare`` writes a fidelity row from seeded noise images, ``toy-classifier`` fits a scikit-learn
logistic regression on seeded synthetic features. They exercise the runner, executors, claims, resume and
reports without data or autoencoders. Every call appends a line to ``run_dir/calls.log`` so that tests can
count how often a task ran. ``train.sleep`` (seconds) makes a task last long enough to kill a runner in it;
``train.fail_on`` (a space or dataset) makes those tasks fail.

This is also the worked example of adding a stage: one registered function per kind plus a grid builder.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from latentgap.storage import stable_hash
from latentgap.study import Inputs, StudySpec, Task, classification_grid, register_task
from latentgap.study.cells import save_examples

_SPACE_NOISE = {"image": 1.0, "recon": 1.1, "latent": 2.0}


def _log_call(run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "calls.log", "a") as f:
        f.write(f"{os.getpid()} {time.time()}\n")


@register_task("toy-classifier", row_kind="result")
def toy_classifier(cfg: dict, run_dir: Path, inputs: Inputs) -> dict:
    _log_call(run_dir)
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef, recall_score, roc_auc_score

    time.sleep(float(cfg["train"].get("sleep", 0.0)))
    if cfg["train"].get("fail_on") and cfg["train"]["fail_on"] in (cfg["space"], cfg["dataset"]):
        raise RuntimeError(f"toy failure requested for {cfg['train']['fail_on']}")
    if cfg["space"] != "image":  # a real input row: the cache folder the prepare task recorded
        assert inputs["pair"]["cache_dir"].startswith("caches/")
    n_classes = int(cfg["train"].get("classes", 3))
    data_seed = int(stable_hash(cfg["dataset"], 8), 16) % 2**31
    x, y = make_classification(n_samples=300, n_features=12, n_informative=6, n_classes=n_classes,
                               random_state=data_seed)
    rng = np.random.default_rng([data_seed, cfg["seed"],
                                 int(stable_hash([cfg["space"], cfg["autoencoder"], cfg["variant"]], 8), 16)])
    ae_shift = 0.0 if cfg["autoencoder"] in (None, "none") else (int(stable_hash(cfg["autoencoder"], 4), 16) % 7) / 10
    x = x + rng.normal(0, _SPACE_NOISE[cfg["space"]] + ae_shift * (cfg["space"] == "latent"), x.shape)
    test = (np.arange(len(y)) % cfg["k"]) == cfg["fold"]
    clf = LogisticRegression(max_iter=500).fit(x[~test], y[~test])
    prob = clf.predict_proba(x[test])
    pred = prob.argmax(1)
    return {"bacc": float(balanced_accuracy_score(y[test], pred)),
            "auc": float(roc_auc_score(y[test], prob, multi_class="ovr", average="macro")),
            "mcc": float(matthews_corrcoef(y[test], pred)),
            "recall_per_class": [float(r) for r in recall_score(y[test], pred, average=None)],
            "n_test": int(test.sum()), "n_train": int((~test).sum()), "epochs": 0, "pretrained": False,
            "config_hash": stable_hash(cfg)}


@register_task("toy-prepare", row_kind="fidelity")
def toy_prepare(cfg: dict, run_dir: Path, inputs: Inputs) -> dict:
    _log_call(run_dir)
    time.sleep(float(cfg.get("sleep", 0.0)))
    rng = np.random.default_rng(int(stable_hash([cfg["dataset"], cfg["autoencoder"]], 8), 16))
    orig = rng.integers(0, 256, size=(max(cfg["examples"], 1), 16, 16, 1), dtype=np.uint8)
    rec = np.clip(orig.astype(int) + rng.integers(-20, 21, orig.shape), 0, 255).astype(np.uint8)
    save_examples(run_dir / "examples.npz", orig, rec, np.arange(len(orig)) % 2, cfg)
    psnr = 20 + 10 * rng.random(50)
    ssim = 0.7 + 0.2 * rng.random(50)
    return {"split": "all", "n": 50, "psnr_mean": float(psnr.mean()), "psnr_std": float(psnr.std(ddof=1)),
            "ssim_mean": float(ssim.mean()), "ssim_std": float(ssim.std(ddof=1)),
            "cache_dir": f"caches/toy-{cfg['dataset']}-{cfg['autoencoder']}", "toy": True}


@register_task("toy-autoencoder", row_kind="autoencoder")
def toy_autoencoder(cfg: dict, run_dir: Path, inputs: Inputs) -> dict:
    _log_call(run_dir)
    return {"steps": 0, "weights_dir": str(run_dir.relative_to(inputs.root)), "toy": True}


_TOY = {"classifier": "toy-classifier", "prepare": "toy-prepare", "train-autoencoder": "toy-autoencoder"}


def toy_grid(spec: StudySpec) -> list[Task]:
    """The classification grid's tasks, hashes and needs, with toy kinds."""
    return [dataclasses.replace(t, kind=_TOY[t.kind]) for t in classification_grid(spec)]
