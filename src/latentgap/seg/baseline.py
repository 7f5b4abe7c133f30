"""The deterministic baseline of the segmentation comparison: a U-Net from segmentation_models_pytorch trained with
Dice + cross-entropy on a fold's training part, early-stopped on the validation part's per-image Dice, tested on
the test part with the metrics of ``metrics.py``. Same folds and budget as the latent diffusion segmenter.

With ``latent_ae`` set (``--unet-latents`` on the command line) the U-Net also reads a frozen image autoencoder's
latents, upsampled bilinearly to the image size and concatenated to its input channels: the deterministic control of
the diffusion segmenter's ``latent`` condition (it sees the same pretrained features, without diffusion). Its rows
have method ``unet-latent``.

``train_unet(cfg, run_dir, ds, splits)`` writes ``config.yaml``, ``metrics.jsonl``, ``checkpoint.safetensors``
(model, best model, optimiser and RNG state; every epoch, atomically) and ``result.json``; a re-run resumes
bit-identically on CPU and a finished run is returned, not retrained.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import UserError
from ..storage import atomic_write_json
from .data import image_batch, mask_batch
from .fit import FoldRunConfig, begin_run, fit_epochs, run_row, write_run_config
from .metrics import calibration, overlap


class UNetConfig(FoldRunConfig):
    """One U-Net baseline training on one fold."""

    encoder: str = "resnet18"
    encoder_depth: int = Field(4, ge=3, le=5)
    decoder_channels: list[int] = Field(default_factory=lambda: [128, 64, 32, 16])
    epochs: int = Field(40, ge=1)
    patience: int = Field(8, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    foreground_weight: float = Field(5.0, gt=0)  # cross-entropy weight of lesion pixels (the paper's 5)
    dice_weight: float = Field(1.0, ge=0)
    latent_ae: str | None = Field(None, description="frozen image autoencoder whose latents join the input")
    _hashed_when_set = ("latent_ae",)  # the plain U-Net keeps the hash it had before the option existed

    @property
    def method(self) -> str:
        return "unet" if self.latent_ae is None else "unet-latent"


class LatentInputUNet(torch.nn.Module):
    """A U-Net on ``[image, upsampled latents]``: ``forward(x)`` encodes ``x`` with the frozen ``image_ae`` (kept
    out of the state dict); ``forward(x, z)`` takes latents encoded beforehand (training encodes every image once)."""

    def __init__(self, net: torch.nn.Module, image_ae):
        super().__init__()
        self.net = net
        self.__dict__["image_ae"] = image_ae  # not a submodule: not trained, not checkpointed

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        if z is None:
            from .views import encode_images

            with torch.no_grad():
                z = encode_images(self.image_ae, x)
        z = F.interpolate(z.to(x.device, x.dtype), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.net(torch.cat([x, z], 1))


def image_autoencoder(cfg: UNetConfig, image_size: tuple[int, int], device):
    """``(autoencoder, latent channels)`` of ``cfg.latent_ae`` for images of ``image_size`` (one line when its
    factor does not divide the size), or ``(None, 0)``."""
    if cfg.latent_ae is None:
        return None, 0
    from ..autoencoders import create_autoencoder
    from ..autoencoders.base import check_side

    ae = create_autoencoder(cfg.latent_ae, str(device))
    check_side(tuple(image_size), ae.info)  # one line when the factor does not divide the size
    return ae, int(ae.info.latent_channels)


def build_unet(cfg: UNetConfig, in_chans: int, image_ae=None, latent_channels: int = 0) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    torch.manual_seed(cfg.seed)
    net = smp.Unet(encoder_name=cfg.encoder, encoder_weights=None, encoder_depth=cfg.encoder_depth,
                   decoder_channels=tuple(cfg.decoder_channels[:cfg.encoder_depth]),
                   in_channels=in_chans + latent_channels, classes=1)
    return net if image_ae is None else LatentInputUNet(net, image_ae)


def _batch(ds, idx: np.ndarray, flip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and masks; horizontal flips (where ``flip``) are meaning-preserving for lesions and polyps."""
    return image_batch(ds, idx, flip), mask_batch(ds, idx, flip)


def seg_loss(logits: torch.Tensor, y: torch.Tensor, cfg: UNetConfig) -> torch.Tensor:
    """Weighted binary cross-entropy (foreground pixels x ``foreground_weight``) + ``dice_weight`` x soft Dice loss
    (MONAI's ``DiceLoss`` on the sigmoid, batch-pooled so empty masks do not divide by zero)."""
    w = 1.0 + (cfg.foreground_weight - 1.0) * y
    ce = F.binary_cross_entropy_with_logits(logits, y, weight=w)
    return ce + cfg.dice_weight * _dice_loss()(logits, y)


@functools.lru_cache(maxsize=1)
def _dice_loss():
    """MONAI's soft Dice on the sigmoid, pooled over the batch (built once, not per step)."""
    from monai.losses import DiceLoss

    return DiceLoss(sigmoid=True, batch=True)


@torch.no_grad()
def predict_probs(model, ds, idx: np.ndarray, device, batch_size: int = 32, views: torch.Tensor | None = None) -> np.ndarray:
    """Foreground probabilities of images ``idx``; ``views`` (2, N, c, h, w), the images' latents encoded beforehand,
    for a latent-fed U-Net."""
    model.eval()
    out = []
    for lo in range(0, len(idx), batch_size):
        b = idx[lo:lo + batch_size]
        x, _ = _batch(ds, b)
        args = (x.to(device),) if views is None else (x.to(device), views[0, b].to(device))
        out.append(torch.sigmoid(model(*args)).float().cpu()[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros((0, *ds.image_size))


def train_unet(cfg: UNetConfig, run_dir: str | os.PathLike, ds, splits, *, progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume, or return) the U-Net baseline of ``cfg`` on ``splits.folds[cfg.fold]`` of ``ds``."""
    from ..device import resolve_device

    run_dir = Path(run_dir)
    done, chash = begin_run(cfg, run_dir, ds, splits, "U-Net configuration")
    if done is not None:
        return done
    device = resolve_device(cfg.device)
    fold = splits.folds[cfg.fold]
    h, w = ds.image_size
    factor = 2 ** cfg.encoder_depth
    if h % factor or w % factor:
        raise UserError(f"a U-Net of depth {cfg.encoder_depth} needs sides divisible by {factor}, not {h}x{w}",
                        "resize the images or lower encoder_depth")
    image_ae, zc = image_autoencoder(cfg, ds.image_size, device)
    write_run_config(cfg, run_dir, chash)
    views = None
    if image_ae is not None:
        from .views import encode_image_views, pick_view

        views = encode_image_views(image_ae, ds)  # (2, N, c, h, w): every image and its flip, encoded once
    model = build_unet(cfg, ds.channels, image_ae, zc).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)
    tr, va = np.asarray(fold.train), np.asarray(fold.val)

    def loss_fn(idx, g):
        flip = torch.rand(len(idx), generator=g) < 0.5
        x, y = _batch(ds, idx, flip)
        args = (x.to(device),) if views is None else (x.to(device), pick_view(views, idx, flip).to(device))
        return seg_loss(model(*args), y.to(device), cfg)

    def validate():
        return overlap(predict_probs(model, ds, va, device, views=views) > 0.5, ds.masks[va])["dice_per_image"]

    fit = fit_epochs(run_dir, chash, model, opt, sched, tr, loss_fn, validate, epochs=cfg.epochs,
                     patience=cfg.patience, batch_size=cfg.batch_size, seed=cfg.seed,
                     desc=f"seg unet {ds.name} fold {cfg.fold}", progress=progress)
    model.load_state_dict(fit.best_state)
    te = np.asarray(fold.test)
    t0 = time.perf_counter()
    probs = predict_probs(model, ds, te, device)  # test time encodes its images itself, as on new data
    sec_per_image = (time.perf_counter() - t0) / max(len(te), 1)
    ov = overlap(probs > 0.5, ds.masks[te])
    ov.pop("dice_values")
    row = run_row(cfg, ds, splits, fit, model, device, chash, method=cfg.method, **ov, **calibration(probs, ds.masks[te]),
                  val_dice=fit.best, seconds_per_image=sec_per_image, encoder=cfg.encoder,
                  **({"autoencoder": cfg.latent_ae} if cfg.latent_ae else {}))
    atomic_write_json(run_dir / "result.json", row)
    return row
