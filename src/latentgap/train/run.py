"""One classifier training as a run folder (DiT / nanoGPT run folders; timm's ``args.yaml`` + summary).

``run_training(cfg, run_dir)`` writes, all atomically:

    config.yaml               the resolved TrainConfig (+ its hash)
    inputs.json               what the model reads: space, input shape, classes, and for latents the fold's
                              channel normalisation (mean/std) -- :func:`latentgap.train.load_run` needs it
    metrics.jsonl             one JSON object per epoch (train loss/acc, val bACC/AUC/MCC, lr, seconds)
    checkpoint.safetensors    model (last), best model (``best.*``), optimizer and RNG tensors, every epoch;
                              its header holds epoch, early-stopping counters, scheduler and config hash
                              (one file, one atomic rename: ``latentgap.runs.save_checkpoint``)
    hpo.json                  best Optuna parameters (``--hpo`` only; reused on resume)
    test_probs.npy            (n_test, K) probabilities of the best model, rows in ``splits.folds[k].test`` order
    result.json               the result row

A re-run resumes from the last checkpoint (bit-identical to an uninterrupted run on CPU); a finished run
returns its row without retraining; a folder written by another configuration is refused.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from ..device import autocast_dtype, resolve_device
from ..errors import UserError
from ..latents.spaces import CombinedParts
from ..progress import progress_bar
from ..runs import (check_run_dir, environment, load_checkpoint, load_optimizer, optimizer_tensors, prefixed,
                    save_checkpoint)
from ..storage import atomic_write_bytes, atomic_write_json, atomic_write_text
from .build import build_loss, build_model, build_noise, build_optimizer, min_epochs, place_model
from .config import TrainConfig
from .distill import ae_identity, teacher_config, teacher_logits
from .hpo import search_or_load
from .loop import Augment, Batches, EarlyStopping, convergence, evaluate, fit


# ----------------------------------------------------------------------------- inputs

@dataclass
class TrainInputs:
    """What a training reads, ready-made: the dataset, its folds, the latent cache (None in image space
    without distillation) and the working root (splits, auto-trained teachers). A study cell builds these
    from its prepare task's row and never loads the autoencoder; :func:`open_inputs` builds them from a config.
    """

    dataset: object
    splits: object
    cache: object | None
    root: Path

    def parts(self, space: str, fold: int, views=None) -> list:
        """The (train, val, test) SpaceDatasets of ``fold`` in ``space``; the training part draws ``views``
        (validation and test read the identity view)."""
        from ..latents import space_dataset

        return [space_dataset(space, self.dataset, self.cache, self.splits, fold, p, views=views if p == "train" else None)
                for p in ("train", "val", "test")]


def open_splits(cfg: TrainConfig, ds, root: Path):
    """The folds of ``cfg`` (made once per dataset content and protocol, shared by every space and AE)."""
    from ..data import load_or_make_splits
    from ..workspace import splits_path

    sp_path = cfg.splits_path or splits_path(root, ds, cfg.protocol, cfg.k, cfg.split_seed)
    splits = load_or_make_splits(sp_path, ds, protocol=cfg.protocol, k=cfg.k, seed=cfg.split_seed,
                                 val_fraction=cfg.val_fraction)
    if cfg.fold >= len(splits.folds):
        raise UserError(f"fold {cfg.fold} does not exist ({cfg.protocol} splits have {len(splits.folds)})",
                        f"pass --fold between 0 and {len(splits.folds) - 1}")
    return splits


def open_inputs(cfg: TrainConfig) -> TrainInputs:
    """Dataset, splits and cache of ``cfg``; builds the cache (running the autoencoder) when it is missing
    and checks an existing one against the autoencoder."""
    from ..data import open_dataset
    from ..latents import ensure_cache
    from ..workspace import default_root

    root = Path(cfg.root) if cfg.root else default_root()
    ds = open_dataset(cfg.dataset, resize=cfg.resize)
    splits = open_splits(cfg, ds, root)
    cache = None
    if cfg.autoencoder and (cfg.space != "image" or cfg.distill):
        cache = ensure_cache(ds, cfg.autoencoder, root, resize=cfg.resize, grey_to_rgb=cfg.grey_to_rgb,
                             dtype=cfg.dtype, batch_size=cfg.cache_batch_size, device=cfg.device,
                             cache=cfg.cache_dir, views=cfg.views)
    return TrainInputs(ds, splits, cache, root)


# ----------------------------------------------------------------------------- checkpoints

def _save_checkpoint(path: Path, model, stopper: EarlyStopping, optimizer, scheduler, g: torch.Generator,
                     meta: dict, scaler: "torch.amp.GradScaler | None" = None) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in (stopper.best_state or {}).items()})
    opt_tensors, groups = optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.generator"] = g.get_state()
    save_checkpoint(path, tensors, {**meta, "early_stopping": stopper.state_dict(),
                                    "scheduler": scheduler.state_dict(), "param_groups": groups,
                                    **({"grad_scaler": scaler.state_dict()} if scaler is not None else {})})


def _load_checkpoint(path: Path, model, stopper: EarlyStopping, optimizer, scheduler, g: torch.Generator,
                     scaler: "torch.amp.GradScaler | None" = None) -> dict:
    """Restore a run's state; a float16 run's loss scale too (a fresh scaler would restart at 2**16 and skip
    steps until it backed off again, so the resumed run would not match the uninterrupted one)."""
    t, meta = load_checkpoint(path)
    model.load_state_dict(prefixed(t, "model"))
    stopper.best_state = prefixed(t, "best") or None
    stopper.load_state_dict(meta["early_stopping"])
    load_optimizer(optimizer, t, meta["param_groups"])
    scheduler.load_state_dict(meta["scheduler"])
    g.set_state(t["rng.generator"])
    if scaler is not None and "grad_scaler" in meta:
        scaler.load_state_dict(meta["grad_scaler"])
    return meta


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- the run

def run_training(cfg: TrainConfig, run_dir: str | os.PathLike, inputs: TrainInputs | None = None) -> dict:
    """Train, early-stop on validation bACC, test the best model and write the run folder (see module doc).

    Args:
        cfg: the training configuration (resolved here).
        run_dir: the run folder; created if missing, resumed if it holds a checkpoint of ``cfg``.
        inputs: ready-made dataset, folds and cache (a study cell passes them); None opens them from ``cfg``.

    Returns:
        The result row (also in ``run_dir/result.json``).
    """
    from ..latents import input_spec

    cfg = cfg.resolved()
    run_dir = Path(run_dir)
    chash = cfg.config_hash()
    done = check_run_dir(run_dir, chash)
    if done is not None:
        return done
    device = resolve_device(cfg.device)
    inputs = inputs or open_inputs(cfg)
    ds, splits, cache = inputs.dataset, inputs.splits, inputs.cache
    train, val, test = inputs.parts(cfg.space, cfg.fold, cfg.views)
    n_synthetic = 0
    if cfg.train_data != "real":  # synthetic images of this fold replace or join the real training part
        syn = synthetic_training_part(cfg, ds, splits, cache, train)
        n_synthetic = len(syn)
        train = syn if cfg.train_data == "synthetic" else CombinedParts(train, syn)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump({**cfg.model_dump(), "config_hash": chash}, sort_keys=True))

    multilabel = bool(ds.multilabel)
    k = int(ds.num_classes)
    c, h, w = (int(v) for v in input_spec(cfg.space, ds, cache))
    _write_inputs_record(run_dir, cfg, ds, splits, cache, train, (c, h, w))
    train_labels = train.targets.numpy().astype(np.int64)

    teacher = None
    if cfg.distill:
        teacher_dir = Path(cfg.distill_teacher) if cfg.distill_teacher else None
        if teacher_dir is None:  # no teacher given: train the fold's reconstruction-space run first
            tcfg = teacher_config(cfg)
            want = ae_identity(cache, cfg.autoencoder)
            tag = f"{ds.name}-{want['autoencoder']}-{splits.digest()[:10]}-fold{cfg.fold}-{tcfg.config_hash()}"
            teacher_dir = inputs.root / "teachers" / tag
            run_training(tcfg, teacher_dir, inputs)
        teacher = teacher_logits(cfg, ds, splits, cache, train, teacher_dir)
    # after the teacher: an auto-trained teacher keeps the default recipe, not the student's tuned one
    hpo_best = None
    if cfg.hpo:
        hpo_best = search_or_load(cfg, train, splits.folds[cfg.fold], (c, h, w), k, multilabel, device,
                                  run_dir / "hpo.json", chash, teacher)
        cfg = cfg.model_copy(update=hpo_best["config_update"])

    model, channels_last = place_model(build_model(cfg, c, k, (h, w), multilabel), cfg, device)
    loss_fn = build_loss(cfg, train_labels, k, multilabel).to(device)
    optimizer, scheduler = build_optimizer(cfg, model, steps_per_epoch=-(-len(train) // cfg.batch_size))
    g = torch.Generator().manual_seed(cfg.seed)
    stopper = EarlyStopping(cfg.patience, min_epochs=min_epochs(cfg, multilabel))
    noise = build_noise(cfg, device)

    amp = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    ckpt = run_dir / "checkpoint.safetensors"
    start, lines, seconds = 0, [], 0.0
    if ckpt.exists():
        meta = _load_checkpoint(ckpt, model, stopper, optimizer, scheduler, g, scaler)
        start, seconds = meta["epoch"] + 1, meta["train_seconds"]
        lines = [ln for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(ln)["epoch"] < start]

    info = getattr(model, "build_info", {})
    with progress_bar(cfg.epochs, f"train {cfg.space} {cfg.model} fold {cfg.fold}") as bar:
        bar.advance(start)

        def on_epoch(epoch: int, metrics: dict, st: EarlyStopping) -> None:
            nonlocal seconds
            seconds += metrics["seconds"]
            lines.append(json.dumps(metrics, sort_keys=True))
            atomic_write_text(run_dir / "metrics.jsonl", "\n".join(lines) + "\n")
            _save_checkpoint(ckpt, model, st, optimizer, scheduler, g,
                             {"epoch": epoch, "train_seconds": seconds, "config_hash": chash}, scaler)
            bar.advance(1)

        stopper = fit(model, optimizer, scheduler, loss_fn,
                      Batches(train, cfg.batch_size, shuffle=True, generator=g, extra=teacher, drop_last_single=True),
                      Batches(val, 4 * cfg.batch_size), device, g, epochs=cfg.epochs, patience=cfg.patience,
                      augment=Augment.preset(cfg.augment), noise=noise, multilabel=multilabel, start_epoch=start,
                      stopper=stopper, on_epoch=on_epoch, channels_last=channels_last, scaler=scaler,
                      precise_bn_batches=cfg.precise_bn_batches, monitor=cfg.monitor)

    model.load_state_dict(stopper.best_state)
    res = evaluate(model, Batches(test, 4 * cfg.batch_size), device, multilabel=multilabel,
                   noise=noise.schedule if noise else None, seed=cfg.seed, channels_last=channels_last)
    _save_npy(run_dir / "test_probs.npy", res.pop("probs").astype(np.float32))
    history = [json.loads(ln) for ln in lines]
    curve = {key: [m[key] for m in history] for key in ("epoch", "train_loss", "train_acc", "val_bacc", "val_auc")}
    n_epochs = len(lines)
    env = environment(device)
    row = {
        "dataset": ds.name, "dataset_fingerprint": ds.fingerprint(), **ae_identity(cache, cfg.autoencoder),
        "space": cfg.space, "variant": cfg.variant, "model": cfg.model, "fold": cfg.fold, "seed": cfg.seed,
        "protocol": cfg.protocol, "k": len(splits.folds), "split_seed": cfg.split_seed, "splits_digest": splits.digest(),
        **res, "multilabel": multilabel, "class_names": list(ds.class_names),
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "epochs": n_epochs, "max_epochs": cfg.epochs, "until": cfg.until, "best_epoch": stopper.best_epoch,
        **convergence(curve[f"val_{cfg.monitor}"], stopper.best_epoch, cfg.epochs, cfg.patience), "curve": curve,
        "monitor": cfg.monitor,
        "pretrained": bool(info.get("pretrained", False)), "pretrained_reason": info.get("pretrained_reason"),
        "stem_stride": info.get("stem_stride"), "stem_patch": cfg.stem_patch, "image_size": list(ds.image_size), "input_shape": [c, h, w],
        # multi-label runs train with weighted BCE whatever cfg.loss says
        "loss": "bce" if multilabel else cfg.loss, "lr": cfg.lr, "weight_decay": cfg.weight_decay,
        "batch_size": cfg.batch_size, "augment": cfg.augment, "views": list(cfg.views),
        "train_data": cfg.train_data, "n_synthetic": n_synthetic, "noise_cond": cfg.noise_cond, "distill": cfg.distill,
        "hpo_best": hpo_best["params"] if hpo_best else None,
        "train_seconds": round(seconds, 3), "seconds_per_epoch": round(seconds / max(n_epochs, 1), 3),
        "device": str(device), "device_name": f"{env['device_name']} x{env['threads']} threads",
        "channels_last": channels_last, "torch": env["torch"], "latentgap": env["latentgap"],
        "code_version": env["code_version"], "config_hash": chash,
    }
    atomic_write_json(run_dir / "result.json", row)
    return row


def synthetic_training_part(cfg: TrainConfig, ds, splits, cache, real_train):
    """The synthetic dataset ``cfg.synthetic`` as a training part of ``cfg.space``, after checking that it was
    made from this dataset's fold ``cfg.fold`` (the same fold assignment) and, for latents, by this autoencoder."""
    from ..data import open_dataset
    from ..data.synthetic import check_image_shape
    from ..latents.spaces import synthetic_part

    syn = open_dataset(cfg.synthetic)
    if not getattr(syn, "synthetic", False):
        raise UserError(f"'{cfg.synthetic}' is not a synthetic dataset", "pass a folder written by `latentgap synth sample`")
    man = syn.synthetic_manifest
    checks = [("dataset_fingerprint", ds.fingerprint(), "dataset"), ("fold", cfg.fold, "fold"),
              ("splits_digest", splits.digest(), "fold assignment")]
    if cfg.space == "latent" and cache is not None:
        checks.append(("autoencoder_sha256", cache.manifest.get("autoencoder", {}).get("weights_sha256"), "autoencoder"))
    for key, want, what in checks:
        if man.get(key) != want:
            raise UserError(f"synthetic dataset '{cfg.synthetic}' was made for another {what} ({man.get(key)!r}, this "
                            f"run {want!r})", "sample it from the generator of this dataset, autoencoder and fold")
    check_image_shape(syn, ds)
    if syn.num_classes != ds.num_classes:
        raise UserError(f"synthetic dataset has {syn.num_classes} classes, the real one {ds.num_classes}",
                        "sample from the generator of this dataset")
    norm = real_train.normalisation
    return synthetic_part(cfg.space, syn, cfg.views, *(norm if norm else (None, None)))


def _write_inputs_record(run_dir: Path, cfg: TrainConfig, ds, splits, cache, train, shape) -> None:
    """``inputs.json``: what the model reads, so that :func:`load_run` can rebuild it and its input transform."""
    rec = {"space": cfg.space, "input_shape": list(shape), "num_classes": int(ds.num_classes),
           "multilabel": bool(ds.multilabel), "class_names": list(ds.class_names), "dataset": ds.name,
           "dataset_fingerprint": ds.fingerprint(), "fold": cfg.fold, "splits_digest": splits.digest(),
           **ae_identity(cache, cfg.autoencoder), "normalisation": None}
    if cfg.space == "latent":
        mean, std = train.normalisation
        rec["normalisation"] = {"kind": "channel", "mean": [float(v) for v in mean], "std": [float(v) for v in std],
                                "fit_on": f"fold {cfg.fold} training part"}
    atomic_write_json(run_dir / "inputs.json", rec)
