"""Train a class-conditional latent diffusion generator on one fold's training part of a latent cache.

The generator never sees the fold's validation or test latents. It works in the fold's normalised latent
coordinates (channel mean / std of the fold's training part, the coordinates of the study's latent
classifiers), so that a latent classifier of the same fold can guide it without conversion, and its samples
are mapped back with the inverse before decoding. With encode-time views in the cache, each training sample
draws a view as the classifiers do.

``train_generator(cfg, run_dir)`` writes, all atomically::

    config.yaml               the SynthConfig (+ its hash)
    inputs.json               dataset, fold, splits digest, autoencoder identity, latent shape, classes, the
                              fold's normalisation (mean / std) -- what sampling and guidance must match
    metrics.jsonl             loss, samples/s and learning rate every ``log_every`` steps
    checkpoint.safetensors    model, EMA weights, optimiser and RNG state, step (every ``checkpoint_every``
                              steps; one file, one atomic rename)
    result.json               the generator row, when training is finished

A re-run resumes from the checkpoint and ends with weights bit-identical to an uninterrupted run (CPU); a
finished run is never retrained; a folder of another configuration is refused.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from ..progress import progress_bar
from ..runs import (check_run_dir, ema_tensors, environment, load_checkpoint, load_ema, load_optimizer,
                    optimizer_tensors, prefixed, save_checkpoint)
from ..storage import atomic_write_json, atomic_write_text, stable_hash
from .models import build_denoiser
from ..diffusion.objectives import build_objective, weighted_mse

_NOT_HASHED = ("device", "root", "cache_dir", "splits_path", "checkpoint_every", "log_every", "cache_batch_size")


class SynthConfig(BaseModel):
    """One generator training: dataset x autoencoder x fold, backbone, objective and optimisation."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    dataset: str
    autoencoder: str
    resize: int | None = None
    fold: int = Field(0, ge=0)
    protocol: str = "kfold"
    k: int = Field(5, ge=2)
    split_seed: int = 0
    val_fraction: float = 0.1
    views: list[str] = Field(default_factory=lambda: ["identity"])
    backbone: Literal["dit", "unet"] = "dit"
    size: str = "tiny"
    patch_size: int | None = None
    objective: Literal["flow", "vpred"] = "flow"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    min_snr_gamma: float | None = 5.0
    label_dropout: float = Field(0.1, ge=0, lt=1)  # share of labels replaced by "no class" (CFG needs > 0)
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float | None = 1.0
    ema_decay: float = Field(0.999, gt=0, lt=1)
    ema_warmup: bool = True  # diffusers' EMA warm-up: decay grows as 1 - (1 + step)^(-2/3) up to ema_decay
    seed: int = 0
    checkpoint_every: int = Field(200, ge=1)
    log_every: int = Field(50, ge=1)
    device: str = "auto"
    root: str | None = None
    cache_dir: str | None = None
    splits_path: str | None = None
    dtype: str = "float16"
    grey_to_rgb: bool = True
    cache_batch_size: int = 64

    def config_hash(self) -> str:
        """Hash of what changes the weights; an autoencoder folder inside ``root`` (a study's own) enters
        relative to it, so the same generator in two study folders has one hash."""
        from ..train.config import _relative_to_root

        d = {k: v for k, v in self.model_dump().items() if k not in _NOT_HASHED}
        d["autoencoder"] = _relative_to_root(d["autoencoder"], self.root)
        return stable_hash(d)


def open_synth_inputs(cfg: SynthConfig):
    """(TrainInputs, the fold's normalised latent training part) for ``cfg``: builds the cache if missing."""
    from ..train import TrainConfig
    from ..train.run import open_inputs

    tcfg = TrainConfig(dataset=cfg.dataset, autoencoder=cfg.autoencoder, space="latent", fold=cfg.fold,
                       protocol=cfg.protocol, k=cfg.k, split_seed=cfg.split_seed, val_fraction=cfg.val_fraction,
                       resize=cfg.resize, views=cfg.views, device=cfg.device, root=cfg.root, cache_dir=cfg.cache_dir,
                       dtype=cfg.dtype, grey_to_rgb=cfg.grey_to_rgb, cache_batch_size=cfg.cache_batch_size)
    return open_inputs(tcfg)


def _lr_lambda(warmup: int):
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def _ema(model, cfg: SynthConfig):
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=cfg.ema_warmup, inv_gamma=1.0,
                    power=2 / 3)


def train_generator(cfg: SynthConfig, run_dir: str | os.PathLike, inputs=None, *,
                    progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume, or return the finished row of) the generator of ``cfg`` in ``run_dir``.

    Args:
        cfg: the generator configuration.
        run_dir: the run folder (see the module docstring).
        inputs: ready ``TrainInputs`` (a study task passes them); None opens them from ``cfg``.

    Returns:
        The generator row (also ``run_dir/result.json``).
    """
    from contextlib import nullcontext

    from ..device import autocast_dtype, resolve_device
    from ..train.distill import ae_identity

    run_dir = Path(run_dir)
    chash = cfg.config_hash()
    done = check_run_dir(run_dir, chash, "generator configuration")
    if done is not None:
        return done
    device = resolve_device(cfg.device)
    inputs = inputs or open_synth_inputs(cfg)
    ds, splits, cache = inputs.dataset, inputs.splits, inputs.cache
    if ds.multilabel:
        raise UserError(f"dataset '{ds.name}' is multi-label; the generator is conditioned on one class per image",
                        "use a single-label dataset")
    if cache is None:
        raise UserError("the generator needs a latent cache", "pass --ae NAME")
    train = inputs.parts("latent", cfg.fold, cfg.views)[0]  # the fold's training part only
    mean, std = train.normalisation
    c, h, w = cache.latent_shape
    if h != w:
        raise UserError(f"latent grid {h}x{w} is not square", "resize the images to a square")
    k = int(ds.num_classes)
    labels = train.targets.numpy().astype(np.int64)
    counts = np.bincount(labels, minlength=k)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump({**cfg.model_dump(), "config_hash": chash}, sort_keys=True))
    record = {"dataset": ds.name, "dataset_fingerprint": ds.fingerprint(), "fold": cfg.fold,
              "splits_digest": splits.digest(), **ae_identity(cache, cfg.autoencoder), "latent_shape": [c, h, w],
              "num_classes": k, "class_names": list(ds.class_names), "class_counts": counts.tolist(),
              "views": list(cfg.views), "objective": cfg.objective, "label_dropout": cfg.label_dropout,
              "normalisation": {"kind": "channel", "mean": [float(v) for v in mean], "std": [float(v) for v in std],
                                "fit_on": f"fold {cfg.fold} training part"}, "n_train": len(train)}
    atomic_write_json(run_dir / "inputs.json", record)

    torch.manual_seed(cfg.seed)  # weight init is part of the seeded run
    model = build_denoiser(cfg.backbone, cfg.size, c, h, k, patch_size=cfg.patch_size).to(device)
    objective = build_objective(cfg.objective, logit_mean=cfg.logit_mean, logit_std=cfg.logit_std,
                                min_snr_gamma=cfg.min_snr_gamma)
    if hasattr(objective, "schedule"):
        objective.schedule.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.warmup_steps))
    ema = _ema(model, cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    amp = autocast_dtype(device)  # bf16 / fp16 autocast on CUDA, full precision on CPU and MPS
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    ckpt = run_dir / "checkpoint.safetensors"
    step, seconds, lines = 0, 0.0, []
    if ckpt.exists():
        t, meta = load_checkpoint(ckpt)
        model.load_state_dict(prefixed(t, "model"))
        load_optimizer(opt, t, meta["param_groups"])
        sched.load_state_dict(meta["scheduler"])
        load_ema(ema, t, meta)
        g.set_state(t["rng.generator"])
        if scaler is not None and "grad_scaler" in meta:  # float16: resume at the loss scale reached
            scaler.load_state_dict(meta["grad_scaler"])
        step, seconds = meta["step"], meta["train_seconds"]
        if (run_dir / "metrics.jsonl").exists():
            lines = [ln for ln in (run_dir / "metrics.jsonl").read_text().splitlines() if json.loads(ln)["step"] <= step]

    def save(at: int) -> None:
        tensors = {f"model.{kk}": v for kk, v in model.state_dict().items()}
        et, ema_meta = ema_tensors(ema)
        tensors.update(et)
        ot, groups = optimizer_tensors(opt)
        tensors.update(ot)
        tensors["rng.generator"] = g.get_state()
        save_checkpoint(ckpt, tensors, {"step": at, "train_seconds": seconds, "config_hash": chash,
                                        "param_groups": groups, "scheduler": sched.state_dict(),
                                        **ema_meta,
                                        **({"grad_scaler": scaler.state_dict()} if scaler is not None else {})})
        atomic_write_text(run_dir / "metrics.jsonl", "\n".join(lines) + ("\n" if lines else ""))

    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else nullcontext
    n = len(train)
    model.train()
    window_loss, window_n, t_window = 0.0, 0, time.perf_counter()
    with progress_bar(cfg.steps, f"synth train {ds.name} {cfg.backbone}-{cfg.size} fold {cfg.fold}",
                      disable=None if progress is None else not progress) as bar:
        bar.advance(step)
        while step < cfg.steps:
            t0 = time.perf_counter()
            pos = torch.randint(0, n, (cfg.batch_size,), generator=g)
            views = torch.randint(0, train.num_views, (cfg.batch_size,), generator=g) if train.num_views > 1 else None
            x, y = train.get_batch(pos, views)
            drop = torch.rand(cfg.batch_size, generator=g) < cfg.label_dropout
            y = torch.where(drop, torch.full_like(y, k), y)  # label k: "no class" (classifier-free guidance)
            nb = objective.draw(x, g)
            with autocast():
                pred = model(nb.z_t.to(device), nb.model_time.to(device), y.to(device))
            nb.target, nb.weight = nb.target.to(device), nb.weight.to(device)
            loss = weighted_mse(pred, nb)  # in float32
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            ema.step(model.parameters())
            step += 1
            seconds += time.perf_counter() - t0
            window_loss, window_n = window_loss + loss.item(), window_n + 1
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = window_n * cfg.batch_size / max(time.perf_counter() - t_window, 1e-9)
                lines.append(json.dumps({"step": step, "loss": window_loss / window_n, "samples_per_s": rate,
                                         "lr": opt.param_groups[0]["lr"]}, sort_keys=True))
                bar.update(description=f"synth train fold {cfg.fold}: loss {window_loss / window_n:.4f}, "
                                       f"{rate:.0f} samples/s")
                window_loss, window_n, t_window = 0.0, 0, time.perf_counter()
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save(step)
            bar.advance(1)
    history = [json.loads(ln) for ln in lines]
    env = environment(device)
    row = {**{kk: record[kk] for kk in ("dataset", "dataset_fingerprint", "fold", "splits_digest", "autoencoder",
                                        "autoencoder_sha256", "latent_shape", "num_classes", "class_counts", "views",
                                        "n_train")},
           "backbone": cfg.backbone, "size": cfg.size, "objective": cfg.objective, "parameters": model.build["parameters"],
           "patch_size": model.build.get("patch_size"), "steps": cfg.steps, "batch_size": cfg.batch_size,
           "label_dropout": cfg.label_dropout, "ema_decay": cfg.ema_decay, "final_loss": history[-1]["loss"] if history else None,
           "loss_curve": {"step": [m["step"] for m in history], "loss": [m["loss"] for m in history]},
           "train_seconds": round(seconds, 3), "samples_per_s": round(cfg.steps * cfg.batch_size / max(seconds, 1e-9), 1),
           "device": str(device), "torch": env["torch"], "latentgap": env["latentgap"],
           "code_version": env["code_version"], "config_hash": chash, "source": "generator"}
    atomic_write_json(run_dir / "result.json", row)
    return row
