"""The mask autoencoder of the latent diffusion segmenter (MedSegLatDiff): a small diffusers ``AutoencoderKL`` on
binary masks, trained on one fold's training part with weighted binary cross-entropy (foreground x ``foreground_weight``,
the paper's 5 for lesions and polyps) + soft Dice + a small KL term.

Its round-trip Dice on the fold's test part, ``decode(encode(mask)) > 0.5`` against the mask, is the **ceiling** of
any segmenter that predicts in its latent space, and is reported beside every latent result. Masks enter as
``2 m - 1`` (one channel); the decoder returns foreground logits. Latents are the posterior mode, standardised with
the training part's per-channel mean and standard deviation (stored in the result), so the diffusion model sees
roughly unit-variance coordinates.

``train_mask_ae(cfg, run_dir, ds, splits)`` writes ``config.yaml``, ``metrics.jsonl``, ``checkpoint.safetensors``
(per epoch, resumable), ``mask_ae.safetensors`` (best weights + the standardisation) and ``result.json``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import UserError
from ..runs import load_checkpoint, save_checkpoint
from ..storage import atomic_write_json
from .data import mask_batch
from .fit import FoldRunConfig, begin_run, fit_epochs, run_row, write_run_config
from .metrics import overlap


class MaskAEConfig(FoldRunConfig):
    """One mask autoencoder on one fold."""

    downsample: int = Field(8, description="spatial factor: 2, 4, 8 or 16")
    latent_channels: int = Field(4, ge=1)
    width: int = Field(16, ge=8)  # channels of the first block; deeper blocks use 2x
    epochs: int = Field(15, ge=1)
    patience: int = Field(4, ge=1)
    batch_size: int = Field(16, ge=2)
    lr: float = Field(1e-3, gt=0)
    kl_weight: float = Field(1e-4, ge=0)
    foreground_weight: float = Field(5.0, gt=0)
    dice_weight: float = Field(1.0, ge=0)


def build_mask_ae(cfg: MaskAEConfig):
    from diffusers import AutoencoderKL

    if cfg.downsample not in (2, 4, 8, 16):
        raise UserError(f"mask autoencoder downsample {cfg.downsample} is not 2, 4, 8 or 16", "pick one of them")
    n = int(np.log2(cfg.downsample)) + 1
    widths = tuple([cfg.width] + [2 * cfg.width] * (n - 1))
    torch.manual_seed(cfg.seed)
    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=widths, layers_per_block=1,
                         latent_channels=cfg.latent_channels, norm_num_groups=8, sample_size=128)


def mask_loss(logits: torch.Tensor, y: torch.Tensor, foreground_weight: float, dice_weight: float) -> torch.Tensor:
    """Weighted BCE on foreground logits (foreground pixels x ``foreground_weight``) + ``dice_weight`` x soft Dice."""
    from .baseline import _dice_loss

    w = 1.0 + (foreground_weight - 1.0) * y
    return F.binary_cross_entropy_with_logits(logits, y, weight=w) + dice_weight * _dice_loss()(logits, y)


class MaskCodec:
    """A trained mask autoencoder with its latent standardisation: ``encode(masks) -> z``, ``decode(z) -> logits``."""

    def __init__(self, ae, mean: torch.Tensor, std: torch.Tensor, record: dict):
        self.ae, self.mean, self.std, self.record = ae.eval(), mean, std, record

    @property
    def downsample(self) -> int:
        return int(self.record["downsample"])

    @property
    def latent_channels(self) -> int:
        return int(self.record["latent_channels"])

    def to(self, device) -> "MaskCodec":
        self.ae.to(device)
        return self

    @torch.no_grad()
    def encode(self, y: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) binary float -> standardised posterior mode (B, c, H/f, W/f)."""
        dev = next(self.ae.parameters()).device
        z = self.ae.encode(2 * y.to(dev) - 1).latent_dist.mode()
        return (z - self.mean.to(dev)) / self.std.to(dev)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised latents -> foreground logits (B, 1, H, W)."""
        dev = next(self.ae.parameters()).device
        return self.ae.decode(z.to(dev) * self.std.to(dev) + self.mean.to(dev)).sample


def train_mask_ae(cfg: MaskAEConfig, run_dir: str | os.PathLike, ds, splits, *, progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume, or return) the mask autoencoder of ``cfg`` on ``splits.folds[cfg.fold]`` of ``ds``; the row
    holds the round-trip Dice / IoU on the fold's test part (the latent segmenter's ceiling)."""
    from ..device import resolve_device

    run_dir = Path(run_dir)
    done, chash = begin_run(cfg, run_dir, ds, splits, "mask autoencoder configuration")
    if done is not None:
        return done
    h, w = ds.image_size
    if h % cfg.downsample or w % cfg.downsample:
        raise UserError(f"a mask autoencoder of factor {cfg.downsample} needs sides divisible by {cfg.downsample}, "
                        f"not {h}x{w}", "resize the images (--resize) or pick a smaller --mask-downsample")
    device = resolve_device(cfg.device)
    fold = splits.folds[cfg.fold]
    write_run_config(cfg, run_dir, chash)
    ae = build_mask_ae(cfg).to(device)
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    tr, va, te = (np.asarray(a) for a in (fold.train, fold.val, fold.test))

    def loss_fn(idx, g):
        y = mask_batch(ds, idx, torch.rand(len(idx), generator=g) < 0.5).to(device)
        post = ae.encode(2 * y - 1).latent_dist
        eps = torch.randn(post.mean.shape, generator=g).to(device)
        z = post.mean + post.std * eps  # a posterior sample drawn from the run's generator (resumable)
        logits = ae.decode(z).sample
        return mask_loss(logits, y, cfg.foreground_weight, cfg.dice_weight) + cfg.kl_weight * post.kl().mean() / y[0].numel()

    def roundtrip(idx):
        out = []
        for lo in range(0, len(idx), 32):
            y = mask_batch(ds, idx[lo:lo + 32]).to(device)
            out.append((ae.decode(ae.encode(2 * y - 1).latent_dist.mode()).sample > 0).cpu()[:, 0].numpy())
        return np.concatenate(out) if out else np.zeros((0, h, w), bool)

    fit = fit_epochs(run_dir, chash, ae, opt, sched, tr, loss_fn,
                     lambda: overlap(roundtrip(va), ds.masks[va])["dice_per_image"], epochs=cfg.epochs,
                     patience=cfg.patience, batch_size=cfg.batch_size, seed=cfg.seed,
                     desc=f"seg mask-ae {ds.name} fold {cfg.fold}", progress=progress)
    ae.load_state_dict(fit.best_state)
    ae.eval()
    with torch.no_grad():
        zs = torch.cat([ae.encode(2 * mask_batch(ds, tr[lo:lo + 64]).to(device) - 1).latent_dist.mode().cpu()
                        for lo in range(0, len(tr), 64)])
        mean, std = zs.mean(dim=(0, 2, 3), keepdim=True), zs.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-4)
        ov = overlap(roundtrip(te), ds.masks[te])
    ov.pop("dice_values")
    record = {"downsample": cfg.downsample, "latent_channels": cfg.latent_channels, "config": cfg.model_dump(),
              "config_hash": chash}
    save_checkpoint(run_dir / "mask_ae.safetensors",
                    {**{f"ae.{k}": v for k, v in ae.state_dict().items()}, "latent_mean": mean, "latent_std": std}, record)
    row = run_row(cfg, ds, splits, fit, ae, device, chash, method="mask-ae",
                  **{f"roundtrip_{k}" if k.startswith(("dice", "iou", "hd95")) else k: v for k, v in ov.items()},
                  latent_shape=[cfg.latent_channels, h // cfg.downsample, w // cfg.downsample],
                  val_roundtrip_dice=fit.best)
    atomic_write_json(run_dir / "result.json", row)
    return row


def load_mask_codec(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> MaskCodec:
    """The trained mask autoencoder of a finished :func:`train_mask_ae` run."""
    p = Path(run_dir) / "mask_ae.safetensors"
    if not p.is_file():
        raise UserError(f"{run_dir} holds no trained mask autoencoder (no mask_ae.safetensors)",
                        "train it first (latentgap seg train trains one per fold)")
    t, record = load_checkpoint(p)
    ae = build_mask_ae(MaskAEConfig(**record["config"]))
    ae.load_state_dict({k[3:]: v for k, v in t.items() if k.startswith("ae.")})
    return MaskCodec(ae, t["latent_mean"], t["latent_std"], record).to(device)
