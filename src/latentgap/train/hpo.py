"""Hyper-parameter search for the latent classifier with Optuna (the paper's "+ HP opt." arm, Table 4).

Every trial trains on an inner split of the fold's *training* part and is scored by balanced accuracy on
the inner validation part; the fold's val and test parts are never seen (asserted). The best parameters
then train the final model on the whole training part like any other run. Searched: learning rate,
weight decay, ConvNeXt depth and width, augmentation and, with FiLM, the noise-level distribution.
TPE sampling is seeded, so a search is reproducible on CPU.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..storage import atomic_write_json, read_json
from .build import build_loss, build_model, build_noise, build_optimizer, min_epochs, place_model
from .config import TrainConfig
from .loop import Augment, Batches, EarlyStopping, fit

# timm's (depths, dims) of the ConvNeXt variants; the search scales these
_CONVNEXT = {"convnext_atto": ((2, 2, 6, 2), (40, 80, 160, 320)), "convnext_nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
             "convnext_tiny": ((3, 3, 9, 3), (96, 192, 384, 768))}


class _Part:
    """Positions ``pos`` of a SpaceDataset, with the same ``get_batch`` interface."""

    def __init__(self, ds, pos: np.ndarray):
        self.ds, self.pos = ds, torch.as_tensor(pos, dtype=torch.long)
        self.targets = ds.targets[self.pos]
        self.num_views = getattr(ds, "num_views", 1)  # trials draw encode-time views as the final run does

    def __len__(self) -> int:
        return len(self.pos)

    def get_batch(self, p, views=None):
        return self.ds.get_batch(self.pos[torch.as_tensor(p, dtype=torch.long)], views)


def inner_split(train_ds, fold, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (inner-train, inner-val) positions inside the fold's training part only."""
    from sklearn.model_selection import train_test_split

    assert not np.intersect1d(train_ds.indices, fold.test).size, "HPO must never see the test fold"
    assert not np.intersect1d(train_ds.indices, fold.val).size, "HPO must never see the fold's val part"
    y = train_ds.targets.numpy()
    strat = y if y.ndim == 1 and np.bincount(y).min() >= 2 else None
    tr, va = train_test_split(np.arange(len(train_ds)), test_size=fraction, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(va)


def suggest(trial, cfg: TrainConfig) -> dict:
    """Config updates for one trial."""
    upd = {"lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
           "weight_decay": trial.suggest_float("weight_decay", 1e-4, 0.1, log=True)}
    # a flipped or shifted latent is not the latent of a flipped image: none there; with encode-time views the
    # views are every space's augmentation, so images do not get more than latents
    if cfg.space != "latent" and len(cfg.views) == 1:
        upd["augment"] = trial.suggest_categorical("augment", ["flip", "flip+shift", "flip2+shift"])
    if cfg.model in _CONVNEXT:
        depths, dims = cfg.model_kwargs.get("depths"), cfg.model_kwargs.get("dims")
        base_depths, base_dims = _CONVNEXT[cfg.model]
        depths, dims = tuple(depths or base_depths), tuple(dims or base_dims)
        width = trial.suggest_categorical("width", [0.5, 1.0])
        depth = trial.suggest_categorical("depth", [0.5, 1.0])
        upd["model_kwargs"] = {**cfg.model_kwargs, "dims": [max(8, int(8 * round(d * width / 8))) for d in dims],
                               "depths": [max(1, math.ceil(d * depth)) for d in depths]}
    if cfg.noise_cond:
        upd["noise_clean_fraction"] = trial.suggest_categorical("noise_clean_fraction", [0.0, 0.1, 0.3, 0.5])
        upd["noise_max_fraction"] = trial.suggest_categorical("noise_max_fraction", [0.25, 0.5, 1.0])
    return upd


def trial_config(cfg: TrainConfig, update: dict) -> TrainConfig:
    """A trial's config: the final run's objective on a shorter budget. The DRW switch keeps its place in the
    schedule (same fraction of the epochs), so short trials re-weight as the final run does."""
    upd = {**update, "epochs": cfg.hpo_epochs}
    if cfg.drw_switch_epoch is not None:
        upd["drw_switch_epoch"] = min(cfg.hpo_epochs - 1, round(cfg.drw_switch_epoch * cfg.hpo_epochs / cfg.epochs))
    return cfg.model_copy(update=upd)


def search(cfg: TrainConfig, train_ds, fold, in_shape, num_classes: int, multilabel: bool,
           device: torch.device, teacher: torch.Tensor | None = None) -> dict:
    """Run ``cfg.hpo_trials`` Optuna trials; returns {params, config_update, best_value, values, inner sizes}.

    ``teacher``: (n_train, K) distillation logits aligned with ``train_ds``; trials of a distilled run train
    with the same distillation loss as the final run.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tr_pos, va_pos = inner_split(train_ds, fold, cfg.hpo_inner_fraction, cfg.seed)
    inner_tr, inner_va = _Part(train_ds, tr_pos), _Part(train_ds, va_pos)
    labels = inner_tr.targets.numpy().astype(np.int64)
    c, h, w = in_shape
    updates: dict[int, dict] = {}

    def objective(trial) -> float:
        upd = suggest(trial, cfg)
        updates[trial.number] = upd
        tcfg = trial_config(cfg, upd)
        model, channels_last = place_model(build_model(tcfg, c, num_classes, (h, w), multilabel), tcfg, device)
        loss_fn = build_loss(tcfg, labels, num_classes, multilabel).to(device)
        opt, sched = build_optimizer(tcfg, model, steps_per_epoch=-(-len(inner_tr) // tcfg.batch_size))
        g = torch.Generator().manual_seed(cfg.seed + trial.number)
        noise = build_noise(tcfg, device)
        stopper = fit(model, opt, sched, loss_fn,
                      Batches(inner_tr, tcfg.batch_size, shuffle=True, generator=g, drop_last_single=True,
                              extra=None if teacher is None else teacher[torch.as_tensor(tr_pos)]),
                      Batches(inner_va, 4 * tcfg.batch_size), device, g, epochs=tcfg.epochs,
                      patience=min(cfg.patience, tcfg.epochs), augment=Augment.preset(tcfg.augment), noise=noise,
                      multilabel=multilabel, stopper=EarlyStopping(min(cfg.patience, tcfg.epochs),
                                                                   min_epochs=min_epochs(tcfg, multilabel)),
                      precise_bn_batches=tcfg.precise_bn_batches, channels_last=channels_last, monitor=tcfg.monitor)
        return float(stopper.best)

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    study.optimize(objective, n_trials=cfg.hpo_trials)
    best = study.best_trial
    return {"params": best.params, "config_update": updates[best.number], "best_value": best.value,
            "values": [t.value for t in study.trials], "n_inner_train": len(tr_pos), "n_inner_val": len(va_pos)}


def search_or_load(cfg: TrainConfig, train_ds, fold, in_shape, num_classes: int, multilabel: bool,
                   device: torch.device, path: Path, config_hash: str, teacher: torch.Tensor | None = None) -> dict:
    """:func:`search`, saved to ``path`` so that a resumed run does not search again."""
    if path.exists():
        d = read_json(path)
        if d.get("config_hash") == config_hash:
            return d
    d = {**search(cfg, train_ds, fold, in_shape, num_classes, multilabel, device, teacher),
         "config_hash": config_hash}
    atomic_write_json(path, d)
    return d
