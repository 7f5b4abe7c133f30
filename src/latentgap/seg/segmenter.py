"""The latent diffusion segmenter (MedSegLatDiff): diffuse mask latents conditioned on the image.

* **Target.** ``space="latent"``: the standardised latent of the fold's mask autoencoder (``mask_ae.py``), a
  ``c x H/f x W/f`` grid; ``space="pixel"``: the mask itself as ``2 m - 1`` at full size (the pixel-space
  counterpart of the speed comparison, same denoiser width).
* **Condition**, concatenated to the noisy target as channels, on the target's grid: ``latent`` — the image's
  latents from any registered autoencoder (TAEF2 by default; bilinearly resized to the grid when its factor
  differs), encoded once per view before training; ``encoder`` — features of a small trainable conv encoder on the
  image, trained with the denoiser (the paper's image encoder); ``image`` — the image itself, area-resized.
  Horizontal flips are encode-time views: a flipped sample reads the latents of the flipped image, never a
  flipped latent.
* **Denoiser**: diffusers ``UNet2DModel``; objectives and samplers are the generator's (``latentgap.diffusion``):
  v-prediction with min-SNR weights on the shared schedule (DDIM / DPM-Solver++), or flow matching (Euler).
* **Prediction**: N samples per image, each S sampler steps (``steps=1`` is the single-step mode), decoded by the
  mask autoencoder to foreground probabilities; their mean is the probability map, ``mean > 0.5`` the mask, the
  pixel-wise standard deviation across samples (and the entropy of the mean) the confidence map. Cost is
  recorded as steps x samples and seconds per image.

``train_segmenter(cfg, run_dir, ds, splits)`` trains the fold's mask autoencoder (``run_dir/mask_ae``) unless the
target is in pixels, then the denoiser with early stopping on the validation part's per-image Dice of a cheap
prediction (``val_samples`` x ``val_steps``), and tests the best weights on the fold's test part. Resumable like
every run folder: ``checkpoint.safetensors`` per epoch, ``segmenter.safetensors`` + ``result.json`` at the end.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import UserError
from ..runs import load_checkpoint, save_checkpoint
from ..storage import atomic_write_json
from .data import image_batch, mask_batch
from .views import encode_image_views, encode_images, pick_view, two_views
from .fit import FoldRunConfig, begin_run, fit_epochs, run_row, write_run_config
from .mask_ae import MaskAEConfig, MaskCodec, load_mask_codec, train_mask_ae
from .metrics import calibration, overlap, uncertainty_auroc

CONDITIONS = ("latent", "encoder", "image")


class SegmenterConfig(FoldRunConfig):
    """One diffusion segmenter on one fold."""

    space: Literal["latent", "pixel"] = "latent"
    condition: list[Literal["latent", "encoder", "image"]] = Field(default_factory=lambda: ["latent", "encoder"])
    autoencoder: str | None = "taef2"  # the image autoencoder of the "latent" condition
    mask_ae: dict = Field(default_factory=dict)  # MaskAEConfig fields (downsample, latent_channels, epochs, ...)
    objective: Literal["vpred", "flow"] = "vpred"
    width: int = Field(64, ge=8)  # denoiser channels of the first level (then 2x, 2x)
    levels: int = Field(3, ge=2, le=4)
    encoder_channels: int = Field(32, ge=4)
    epochs: int = Field(60, ge=1)
    patience: int = Field(10, ge=1)
    batch_size: int = Field(16, ge=2)
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    # exponential moving average of the weights (diffusers EMAModel, warm-up 1 - (1 + step)^(-2/3) up to this
    # decay); validation, selection and sampling use the average; 0 = none
    ema_decay: float = Field(0.999, ge=0, lt=1)
    val_samples: int = Field(1, ge=1)
    val_steps: int = Field(1, ge=1)
    samples: int = Field(5, ge=1)
    steps: int = Field(10, ge=1)
    sampler: str = "auto"
    _not_hashed = ("device", "samples", "steps", "sampler")  # prediction settings: the same trained model

    def mask_ae_config(self) -> MaskAEConfig:
        return MaskAEConfig(**{"dataset": self.dataset, "fold": self.fold, "k": self.k, "split_seed": self.split_seed,
                               "image_size": self.image_size, "seed": self.seed, "device": self.device, **self.mask_ae})


class ConditionEncoder(nn.Module):
    """A small trainable image encoder: (B, C, H, W) -> (B, channels, H/f, W/f) with log2(f) stride-2 stages."""

    def __init__(self, in_chans: int, channels: int, factor: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_chans, channels, 3, padding=1), nn.GELU()]
        for _ in range(int(np.log2(factor))):
            layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.GroupNorm(8, channels), nn.GELU()]
        layers += [nn.Conv2d(channels, channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SegDenoiser(nn.Module):
    """``forward(z_t, model_time, cond) -> prediction``; ``condition(images, image_latents)`` builds ``cond``."""

    def __init__(self, cfg: SegmenterConfig, target_channels: int, grid: tuple[int, int], image_channels: int,
                 latent_channels: int, factor: int):
        from diffusers import UNet2DModel

        super().__init__()
        self.kinds, self.grid = list(cfg.condition), grid
        cond = 0
        if "latent" in self.kinds:
            cond += latent_channels
        if "image" in self.kinds:
            cond += image_channels
        self.encoder = None
        if "encoder" in self.kinds:
            self.encoder = ConditionEncoder(image_channels, cfg.encoder_channels, factor)
            cond += cfg.encoder_channels
        widths = tuple([cfg.width] + [2 * cfg.width] * (cfg.levels - 1))
        torch.manual_seed(cfg.seed)
        self.unet = UNet2DModel(sample_size=grid[0], in_channels=target_channels + cond, out_channels=target_channels,
                                block_out_channels=widths, layers_per_block=1, down_block_types=("DownBlock2D",) * cfg.levels,
                                up_block_types=("UpBlock2D",) * cfg.levels, norm_num_groups=8)

    def condition(self, images: torch.Tensor, image_latents: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if "latent" in self.kinds:
            z = image_latents
            parts.append(z if tuple(z.shape[-2:]) == self.grid else F.interpolate(z, size=self.grid, mode="bilinear",
                                                                                 align_corners=False))
        if "image" in self.kinds:
            parts.append(images if tuple(images.shape[-2:]) == self.grid else F.interpolate(images, size=self.grid, mode="area"))
        if self.encoder is not None:
            parts.append(self.encoder(images * 2 - 1))
        return torch.cat(parts, 1)

    def forward(self, z_t: torch.Tensor, model_time: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([z_t, cond], 1), model_time).sample


# --------------------------------------------------------------------------- the loaded model

class Segmenter:
    """A trained segmenter: model, mask codec (None in pixel space), image autoencoder (None without the latent
    condition), objective and its record (training size, grid, config)."""

    def __init__(self, model: SegDenoiser, codec: MaskCodec | None, image_ae, record: dict):
        from ..diffusion.objectives import build_objective

        self.model, self.codec, self.image_ae, self.record = model.eval(), codec, image_ae, record
        self.config = SegmenterConfig(**record["config"])
        self.objective = build_objective(self.config.objective)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.record["image_size"])  # type: ignore[return-value]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor | None:
        """Image-autoencoder latents of (B, C, H, W) [0, 1] images (None without the latent condition)."""
        return None if self.image_ae is None else encode_images(self.image_ae, images)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, *, samples: int | None = None, steps: int | None = None,
                sampler: str | None = None, generator: torch.Generator | None = None,
                image_latents: torch.Tensor | None = None, batch_size: int = 16) -> dict[str, np.ndarray]:
        """Foreground probabilities of ``samples`` draws for (B, C, H, W) images in [0, 1] at the training size.

        Returns ``{"samples": (N, B, H, W) float32, "prob": mean, "mask": mean > 0.5, "std": pixel std across
        samples, "entropy": binary entropy of the mean (bits)}``.
        """
        from ..diffusion.samplers import denoise

        cfg = self.config
        n, s = samples or cfg.samples, steps or cfg.steps
        g = generator or torch.Generator().manual_seed(cfg.seed)
        if tuple(images.shape[-2:]) != self.image_size:
            raise UserError(f"images are {images.shape[-2]}x{images.shape[-1]}, the segmenter was trained on "
                            f"{self.image_size[0]}x{self.image_size[1]}", "resize them first (seg predict does)")
        dev = self.device
        c, gh, gw = self.record["target_shape"]
        out = []
        for lo in range(0, len(images), batch_size):
            x = images[lo:lo + batch_size].to(dev)
            zl = image_latents[lo:lo + batch_size] if image_latents is not None else self.encode_images(x)
            cond = self.model.condition(x, None if zl is None else zl.to(dev)).repeat(n, 1, 1, 1)
            z = torch.randn((n * len(x), c, gh, gw), generator=g).to(dev)
            z = denoise(cfg.objective, z, lambda zt, t: self.model(zt, t, cond), steps=s, sampler=sampler or cfg.sampler)
            # latent target: the mask decoder's logits; pixel target: 2 m - 1, read back as a probability
            prob = torch.sigmoid(self.codec.decode(z).float()) if self.codec is not None else ((z.float() + 1) / 2).clamp(0, 1)
            out.append(prob.cpu()[:, 0].reshape(n, len(x), *prob.shape[-2:]))
        return prediction_maps(torch.cat(out, 1).numpy() if out else np.zeros((n, 0, *self.image_size), np.float32))


def load_segmenter(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> Segmenter:
    """The trained segmenter of a finished :func:`train_segmenter` run."""
    from ..autoencoders import create_autoencoder

    run_dir = Path(run_dir)
    p = run_dir / "segmenter.safetensors"
    if not p.is_file():
        raise UserError(f"{run_dir} holds no trained segmenter (no segmenter.safetensors)",
                        "train one with latentgap seg train, or point --model at its run folder")
    t, record = load_checkpoint(p)
    cfg = SegmenterConfig(**record["config"])
    model = SegDenoiser(cfg, record["target_shape"][0], tuple(record["target_shape"][1:]), record["image_channels"],
                        record["image_latent_channels"], record["factor"])
    model.load_state_dict(t)
    codec = load_mask_codec(run_dir / "mask_ae", device) if cfg.space == "latent" else None
    image_ae = create_autoencoder(cfg.autoencoder, str(device)) if "latent" in cfg.condition else None
    return Segmenter(model.to(device), codec, image_ae, record)


# --------------------------------------------------------------------------- training

def _encode_mask_views(codec: MaskCodec, ds, batch_size: int = 64) -> torch.Tensor:
    """(2, N, c, h, w) mask latents of the identity and flipped mask of every image."""
    from ..latents.views import apply_view

    return two_views(len(ds), lambda idx, v: codec.encode(apply_view(v, mask_batch(ds, idx))).float(), batch_size)


def prediction_maps(probs: np.ndarray) -> dict[str, np.ndarray]:
    """From foreground probabilities of N samples (N, B, H, W): the samples, their mean, the mask (mean > 0.5), the
    pixel-wise std across samples and the binary entropy of the mean (bits) — the confidence maps."""
    mean = probs.mean(0)
    p = np.clip(mean, 1e-7, 1 - 1e-7)
    return {"samples": probs, "prob": mean, "mask": mean > 0.5, "std": probs.std(0),
            "entropy": -(p * np.log2(p) + (1 - p) * np.log2(1 - p))}


def evaluate_predictions(pred: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, Any]:
    """Overlap (per image and global), calibration of the mean probability, and the AUROC of the confidence maps
    (std across samples; entropy of the mean) for per-pixel error."""
    ov = overlap(pred["mask"], truth)
    ov.pop("dice_values")
    row = {**ov, **calibration(pred["prob"], truth)}
    for name in ("std", "entropy"):
        u = uncertainty_auroc(pred[name], pred["mask"], truth)
        row.update({f"uncertainty_auroc_{name}": u["auroc"], f"uncertainty_auroc_{name}_ci": [u["ci_low"], u["ci_high"]]})
    return row


def train_segmenter(cfg: SegmenterConfig, run_dir: str | os.PathLike, ds, splits, *,
                    progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume, or return) the diffusion segmenter of ``cfg`` on ``splits.folds[cfg.fold]`` of ``ds``."""
    from ..autoencoders import create_autoencoder
    from ..autoencoders.base import check_side
    from ..device import resolve_device
    from ..diffusion.objectives import build_objective, weighted_mse

    run_dir = Path(run_dir)
    done, chash = begin_run(cfg, run_dir, ds, splits, "segmenter configuration")
    if done is not None:
        return done
    if not cfg.condition:
        raise UserError("a segmenter needs a condition", f"pass --condition from: {', '.join(CONDITIONS)}")
    device = resolve_device(cfg.device)
    h, w = ds.image_size
    image_ae = None
    if "latent" in cfg.condition:
        if not cfg.autoencoder:
            raise UserError("the latent condition needs an image autoencoder", "pass --ae NAME (e.g. --ae taef2)")
        image_ae = create_autoencoder(cfg.autoencoder, str(device))
        check_side((h, w), image_ae.info)  # one line when the autoencoder's factor does not divide the size
    # the target grid is known before anything trains: refuse a denoiser that cannot halve it before the mask AE runs
    factor = cfg.mask_ae_config().downsample if cfg.space == "latent" else 1
    step = 2 ** (cfg.levels - 1)
    if not (h % factor or w % factor) and ((h // factor) % step or (w // factor) % step):  # (mask AE names the other)
        raise UserError(f"the denoiser's {cfg.levels} levels need a target grid divisible by {step}, this one is "
                        f"{h // factor}x{w // factor}", "resize the images (--resize) so that the grid divides, "
                        "or use a smaller --mask-downsample")
    write_run_config(cfg, run_dir, chash)
    fold = splits.folds[cfg.fold]
    tr, va, te = (np.asarray(a) for a in (fold.train, fold.val, fold.test))
    codec, mask_row = None, None
    if cfg.space == "latent":
        mask_row = train_mask_ae(cfg.mask_ae_config(), run_dir / "mask_ae", ds, splits, progress=progress)
        codec = load_mask_codec(run_dir / "mask_ae", device)
        target_shape = [codec.latent_channels, h // factor, w // factor]
    else:
        target_shape = [1, h, w]
    views = encode_image_views(image_ae, ds) if image_ae is not None else None
    zc = 0 if views is None else views.shape[2]
    model = SegDenoiser(cfg, target_shape[0], tuple(target_shape[1:]), ds.channels, zc, factor).to(device)
    record = {"config": cfg.model_dump(), "config_hash": chash, "target_shape": target_shape, "factor": factor,
              "image_size": [h, w], "image_channels": ds.channels, "image_latent_channels": zc,
              "image_autoencoder": None if image_ae is None else image_ae.info.to_dict()}
    objective = build_objective(cfg.objective)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs)

    mask_views = _encode_mask_views(codec, ds) if codec is not None else None  # encoded once, not per epoch

    def target(idx, flip):
        if mask_views is not None:
            return pick_view(mask_views, idx, flip)
        return 2 * mask_batch(ds, idx, flip) - 1

    def loss_fn(idx, g):
        flip = torch.rand(len(idx), generator=g) < 0.5
        x = image_batch(ds, idx, flip).to(device)
        zl = None if views is None else pick_view(views, idx, flip).to(device)
        batch = objective.draw(target(idx, flip), g)
        pred = model(batch.z_t.to(device), batch.model_time.to(device), model.condition(x, zl))
        batch.target, batch.weight = batch.target.to(device), batch.weight.to(device)
        return weighted_mse(pred, batch)

    seg = Segmenter(model, codec, image_ae, record)

    def run_predict(idx, samples, steps, g):
        lat = None if views is None else views[0, idx]
        return seg.predict(image_batch(ds, idx), samples=samples, steps=steps, generator=g, image_latents=lat)

    def validate():
        model.eval()
        pred = run_predict(va, cfg.val_samples, cfg.val_steps, torch.Generator().manual_seed(cfg.seed))
        return overlap(pred["mask"], ds.masks[va])["dice_per_image"]

    ema = None
    if cfg.ema_decay:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(model.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
    fit = fit_epochs(run_dir, chash, model, opt, sched, tr, loss_fn, validate, epochs=cfg.epochs,
                     patience=cfg.patience, batch_size=cfg.batch_size, seed=cfg.seed, grad_clip=cfg.grad_clip,
                     desc=f"seg {cfg.space}-diffusion {ds.name} fold {cfg.fold}", progress=progress, ema=ema)
    model.load_state_dict(fit.best_state)
    model.eval()
    save_checkpoint(run_dir / "segmenter.safetensors", {k: v for k, v in model.state_dict().items()}, record)
    t0 = time.perf_counter()
    pred = run_predict(te, cfg.samples, cfg.steps, torch.Generator().manual_seed(cfg.seed + 1))
    sec = (time.perf_counter() - t0) / max(len(te), 1)
    row = run_row(cfg, ds, splits, fit, model, device, chash, method=f"{cfg.space}-diffusion",
                  **evaluate_predictions(pred, ds.masks[te]), samples=cfg.samples, steps=cfg.steps,
                  cost_steps_x_samples=cfg.samples * cfg.steps, sampler=cfg.sampler, seconds_per_image=sec,
                  condition=list(cfg.condition), autoencoder=cfg.autoencoder if image_ae is not None else None,
                  target_shape=target_shape,
                  mask_ae_ceiling_dice_per_image=None if mask_row is None else mask_row["roundtrip_dice_per_image"],
                  mask_ae_ceiling_dice_global=None if mask_row is None else mask_row["roundtrip_dice_global"],
                  mask_ae_convergence=None if mask_row is None else mask_row.get("convergence"),
                  val_dice=fit.best)
    atomic_write_json(run_dir / "result.json", row)
    return row
