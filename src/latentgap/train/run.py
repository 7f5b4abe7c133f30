"""One classifier training as a run folder (DiT / nanoGPT run folders; timm's ``args.yaml`` + summary).

``run_training(cfg, run_dir)`` writes, all atomically:

    config.yaml               the resolved TrainConfig (+ its hash)
    metrics.jsonl             one JSON object per epoch (train loss/acc, val bACC/AUC/MCC, lr, seconds)
    checkpoint.safetensors    model (last), best model (``best.*``) and optimizer tensors, every epoch
    checkpoint.json           epoch, early-stopping counters, scheduler, RNG state, config hash
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
from pathlib import Path

import numpy as np
import torch
import yaml

from .. import __version__
from ..device import autocast_dtype, device_name, prefers_channels_last, resolve_device
from ..errors import UserError
from ..io import atomic_write, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from ..progress import progress_bar
from .config import TrainConfig
from .loop import Augment, Batches, EarlyStopping, NoiseSampling, evaluate, fit


# ----------------------------------------------------------------------------- inputs

def open_inputs(cfg: TrainConfig):
    """Dataset, splits, cache (or None) and the (train, val, test) SpaceDatasets of ``cfg``."""
    from ..data import load_or_make_splits, open_dataset
    from ..latents import ensure_cache, space_dataset
    from ..workspace import default_root, splits_path

    root = Path(cfg.root) if cfg.root else default_root()
    ds = open_dataset(cfg.dataset, resize=cfg.resize)
    sp_path = cfg.splits_path or splits_path(root, ds, cfg.protocol, cfg.k, cfg.split_seed)
    splits = load_or_make_splits(sp_path, ds, protocol=cfg.protocol, k=cfg.k, seed=cfg.split_seed,
                                 val_fraction=cfg.val_fraction)
    if cfg.fold >= len(splits.folds):
        raise UserError(f"fold {cfg.fold} does not exist ({cfg.protocol} splits have {len(splits.folds)})",
                        f"pass --fold between 0 and {len(splits.folds) - 1}")
    cache = None
    if cfg.autoencoder and (cfg.space != "image" or cfg.distill):
        cache = ensure_cache(ds, cfg.autoencoder, root, resize=cfg.resize, grey_to_rgb=cfg.grey_to_rgb,
                             dtype=cfg.dtype, batch_size=cfg.cache_batch_size, device=cfg.device,
                             cache=cfg.cache_dir)
    parts = [space_dataset(cfg.space, ds, cache, splits, cfg.fold, p) for p in ("train", "val", "test")]
    return ds, splits, cache, parts, root


def ae_identity(cache, name: str | None) -> dict:
    """Name and weights hash of the autoencoder behind ``cache`` (what a teacher must share)."""
    if cache is None:
        return {"autoencoder": name, "autoencoder_sha256": None}
    info = cache.manifest.get("autoencoder", {})
    return {"autoencoder": info.get("name", name), "autoencoder_sha256": info.get("weights_sha256")}


# ----------------------------------------------------------------------------- model and loss

def build_model(cfg: TrainConfig, in_chans: int, num_classes: int, input_size, multilabel: bool):
    from ..models import NoiseConditioned, create_classifier

    torch.manual_seed(cfg.seed)  # weight init is part of the seeded run
    model = create_classifier(cfg.model, in_chans, num_classes, input_size, pretrained=cfg.pretrained,
                              cosine_head=(cfg.loss == "ldam" and not multilabel), scale=cfg.ldam_s,
                              **cfg.model_kwargs)
    if cfg.noise_cond:
        model = NoiseConditioned(model, cfg.film_embed_dim)
    return model


def place_model(model, cfg: TrainConfig, device: torch.device):
    """``(model on device, channels_last)``: NHWC weights where :func:`prefers_channels_last` says so
    (the loops then feed NHWC inputs)."""
    model = model.to(device)
    channels_last = prefers_channels_last(device, cfg.model)
    return (model.to(memory_format=torch.channels_last) if channels_last else model), channels_last


def build_loss(cfg: TrainConfig, train_labels: np.ndarray, num_classes: int, multilabel: bool):
    from .losses import DistillationLoss, LDAMLoss, MultiLabelBCELoss

    if multilabel:
        bce = MultiLabelBCELoss(train_labels)
        return DistillationLoss(bce, cfg.distill_alpha, cfg.distill_temperature, multilabel=True) if cfg.distill else bce
    counts = np.bincount(train_labels, minlength=num_classes)
    if cfg.loss == "ldam":
        if (counts == 0).any():
            raise UserError(f"class {int(np.argmin(counts))} has no training sample in fold {cfg.fold}",
                            "use fewer folds or --loss ce")
        base = LDAMLoss(counts, cfg.ldam_max_margin, cfg.ldam_s, cfg.drw_switch_epoch, cfg.drw_beta)
    else:
        base = torch.nn.CrossEntropyLoss()
    return DistillationLoss(base, cfg.distill_alpha, cfg.distill_temperature) if cfg.distill else base


# ----------------------------------------------------------------------------- checkpoints

def _save_checkpoint(run_dir: Path, model, stopper: EarlyStopping, optimizer, scheduler, g: torch.Generator,
                     meta: dict) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.contiguous() for k, v in (stopper.best_state or {}).items()})
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for name, val in st.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(val).detach().cpu().contiguous().clone()
    tensors["rng.generator"] = g.get_state()
    atomic_write(run_dir / "checkpoint.safetensors", lambda p: save_file(tensors, str(p)))
    atomic_write_json(run_dir / "checkpoint.json", {**meta, "early_stopping": stopper.state_dict(),
                                                    "scheduler": scheduler.state_dict(),
                                                    "param_groups": opt["param_groups"]})


def _load_checkpoint(run_dir: Path, model, stopper: EarlyStopping, optimizer, scheduler, g: torch.Generator) -> dict:
    from safetensors.torch import load_file

    meta = read_json(run_dir / "checkpoint.json")
    t = load_file(str(run_dir / "checkpoint.safetensors"))
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    stopper.best_state = {k[5:]: v for k, v in t.items() if k.startswith("best.")} or None
    stopper.load_state_dict(meta["early_stopping"])
    state: dict = {}
    for key, val in t.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = val
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    scheduler.load_state_dict(meta["scheduler"])
    g.set_state(t["rng.generator"])
    return meta


def _check_run_dir(run_dir: Path, chash: str) -> dict | None:
    """The finished row if ``run_dir`` holds this configuration's result; UserError if another config wrote it."""
    for name in ("result.json", "checkpoint.json", "config.yaml"):
        p = run_dir / name
        if not p.exists():
            continue
        have = (read_json(p) if name.endswith(".json") else yaml.safe_load(p.read_text()) or {}).get("config_hash")
        if have != chash:
            raise UserError(f"{p} was written by another configuration (config hash {have}, this run {chash})",
                            "use a new --out folder for these settings, or repeat the original settings to resume")
    res = run_dir / "result.json"
    return read_json(res) if res.exists() else None


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- the run

def run_training(cfg: TrainConfig, run_dir: str | os.PathLike) -> dict:
    """Train, early-stop on validation bACC, test the best model and write the run folder (see module doc).

    Args:
        cfg: the training configuration (resolved here).
        run_dir: the run folder; created if missing, resumed if it holds a checkpoint of ``cfg``.

    Returns:
        The result row (also in ``run_dir/result.json``).
    """
    from ..latents import input_spec

    cfg = cfg.resolved()
    run_dir = Path(run_dir)
    chash = cfg.config_hash()
    done = _check_run_dir(run_dir, chash)
    if done is not None:
        return done
    device = resolve_device(cfg.device)
    ds, splits, cache, (train, val, test), root = open_inputs(cfg)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump({**cfg.model_dump(), "config_hash": chash}, sort_keys=True))

    multilabel = bool(ds.multilabel)
    k = int(ds.num_classes)
    c, h, w = (int(v) for v in input_spec(cfg.space, ds, cache))
    train_labels = train.targets.numpy().astype(np.int64)

    hpo_best = None
    if cfg.hpo:
        from .hpo import search_or_load
        hpo_best = search_or_load(cfg, train, splits.folds[cfg.fold], (c, h, w), k, multilabel, device,
                                  run_dir / "hpo.json", chash)
        cfg = cfg.model_copy(update=hpo_best["config_update"])
    teacher = None
    if cfg.distill:
        from .distill import teacher_logits
        teacher = teacher_logits(cfg, ds, splits, cache, train, root)

    model, channels_last = place_model(build_model(cfg, c, k, (h, w), multilabel), cfg, device)
    loss_fn = build_loss(cfg, train_labels, k, multilabel).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    g = torch.Generator().manual_seed(cfg.seed)
    stopper = EarlyStopping(cfg.patience)
    noise = None
    if cfg.noise_cond:
        from ..models import NoiseSchedule
        sched = NoiseSchedule(cfg.noise_timesteps, cfg.noise_schedule, cfg.noise_beta_start, cfg.noise_beta_end).to(device)
        noise = NoiseSampling(sched, cfg.noise_clean_fraction, cfg.noise_max_fraction)

    start, lines, seconds = 0, [], 0.0
    if (run_dir / "checkpoint.json").exists():
        meta = _load_checkpoint(run_dir, model, stopper, optimizer, scheduler, g)
        start, seconds = meta["epoch"] + 1, meta["train_seconds"]
        lines = [ln for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(ln)["epoch"] < start]

    amp = autocast_dtype(device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    info = getattr(model, "build_info", {})
    with progress_bar(cfg.epochs, f"train {cfg.space} {cfg.model} fold {cfg.fold}") as bar:
        bar.advance(start)

        def on_epoch(epoch: int, metrics: dict, st: EarlyStopping) -> None:
            nonlocal seconds
            seconds += metrics["seconds"]
            lines.append(json.dumps(metrics, sort_keys=True))
            atomic_write_text(run_dir / "metrics.jsonl", "\n".join(lines) + "\n")
            _save_checkpoint(run_dir, model, st, optimizer, scheduler, g,
                             {"epoch": epoch, "train_seconds": seconds, "config_hash": chash})
            bar.advance(1)

        stopper = fit(model, optimizer, scheduler, loss_fn,
                      Batches(train, cfg.batch_size, shuffle=True, generator=g, extra=teacher, drop_last_single=True),
                      Batches(val, 4 * cfg.batch_size), device, g, epochs=cfg.epochs, patience=cfg.patience,
                      augment=Augment.preset(cfg.augment), noise=noise, multilabel=multilabel, start_epoch=start,
                      stopper=stopper, on_epoch=on_epoch, channels_last=channels_last, scaler=scaler,
                      precise_bn_batches=cfg.precise_bn_batches)

    model.load_state_dict(stopper.best_state)
    res = evaluate(model, Batches(test, 4 * cfg.batch_size), device, multilabel=multilabel,
                   noise=noise.schedule if noise else None, seed=cfg.seed, channels_last=channels_last)
    _save_npy(run_dir / "test_probs.npy", res.pop("probs").astype(np.float32))
    n_epochs = len(lines)
    row = {
        "dataset": ds.name, "dataset_fingerprint": ds.fingerprint(), **ae_identity(cache, cfg.autoencoder),
        "space": cfg.space, "variant": cfg.variant, "model": cfg.model, "fold": cfg.fold, "seed": cfg.seed,
        "protocol": cfg.protocol, "k": len(splits.folds), "splits_digest": splits.digest(),
        **res, "multilabel": multilabel, "class_names": list(ds.class_names),
        "n_train": len(train), "n_val": len(val), "n_test": len(test),
        "epochs": n_epochs, "max_epochs": cfg.epochs, "best_epoch": stopper.best_epoch,
        "pretrained": bool(info.get("pretrained", False)), "pretrained_reason": info.get("pretrained_reason"),
        "stem_stride": info.get("stem_stride"), "image_size": list(ds.image_size), "input_shape": [c, h, w],
        "loss": cfg.loss, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size,
        "augment": cfg.augment, "noise_cond": cfg.noise_cond, "distill": cfg.distill,
        "hpo_best": hpo_best["params"] if hpo_best else None,
        "train_seconds": round(seconds, 3), "seconds_per_epoch": round(seconds / max(n_epochs, 1), 3),
        "device": str(device), "device_name": f"{device_name(device)} x{torch.get_num_threads()} threads",
        "channels_last": channels_last, "torch": torch.__version__,
        "latentgap": __version__, "config_hash": chash,
    }
    atomic_write_json(run_dir / "result.json", row)
    return row
