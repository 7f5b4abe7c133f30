"""Train the built-in KL autoencoder, or fine-tune any trainable backend, on an ImageDataset.

Losses follow the Stable Diffusion autoencoder (Rombach et al., CVPR 2022, app. G; ``LPIPSWithDiscriminator``
without the GAN term): L1 (or MSE) reconstruction + ``kl_weight`` x KL(q(z|x) || N(0, I)), the KL summed
over latent elements relative to the reconstruction summed over pixels (so ``kl_weight=1e-6`` is SD's value),
plus an LPIPS-VGG perceptual term when the ``lpips`` package and VGG16 weights are already on disk.
Adam, per-step seeded batches and posterior noise, atomic checkpoints (safetensors weights + optimizer +
step + RNG state); a resumed run ends with exactly the weights of an uninterrupted one.

Run folder::

    <out>/checkpoints/step-0000500.safetensors   weights, optimiser, RNG + JSON header (last two kept)
    <out>/model/                       final model, loadable with create_autoencoder(<out>)
    <out>/training.json                the record: settings, loss curve, warnings, scaling factor, PSNR
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..device import resolve_device
from ..errors import UserError
from ..latents.fidelity import psnr as image_psnr
from ..runs import environment, load_checkpoint, load_optimizer, optimizer_tensors, prefixed, save_checkpoint
from ..storage import atomic_write_json, stable_hash
from ..progress import console, progress_bar
from .base import Autoencoder, adapt_images
from ..defaults import AE_FINETUNE_DEFAULTS, AE_TRAIN_DEFAULTS
from .builtin import build_builtin
from .factory import RUN_MODEL_DIR, create_autoencoder

KEEP_CHECKPOINTS = 2

# defaults shared with the CLI and study specs (latentgap/defaults.py)
TRAIN_DEFAULTS, FINETUNE_DEFAULTS = AE_TRAIN_DEFAULTS, AE_FINETUNE_DEFAULTS
_VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16 weights, which lpips.LPIPS(net="vgg") loads

# ---------------------------------------------------------------- perceptual loss (only if weights are local)


def perceptual_loss_fn(weight: float, device: torch.device) -> tuple[Callable | None, dict[str, Any]]:
    """LPIPS-VGG (Zhang et al., CVPR 2018) if available offline; otherwise ``None`` and the reason.

    Never downloads: training must behave the same on an offline cluster node.
    """
    status: dict[str, Any] = {"weight": weight, "used": False}
    if weight <= 0:
        status["reason"] = "perceptual_weight is 0"
        return None, status
    vgg = Path(torch.hub.get_dir()) / "checkpoints" / _VGG16_FILE
    try:
        import lpips  # noqa: F401
    except ImportError:
        status["reason"] = "package 'lpips' is not installed (pip install lpips)"
        return None, status
    if not vgg.is_file():
        status["reason"] = f"VGG16 weights not found at {vgg}"
        return None, status
    net = lpips.LPIPS(net="vgg", verbose=False).to(device).eval().requires_grad_(False)
    status.update(used=True, reason=f"lpips {getattr(lpips, '__version__', '?')} with {vgg}")

    def fn(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [0,1] inputs, grey -> RGB for VGG
        rgb = (lambda t: t.expand(-1, 3, -1, -1) if t.shape[1] == 1 else t)
        return net(rgb(x_hat) * 2 - 1, rgb(x) * 2 - 1).mean()

    return fn, status


# ---------------------------------------------------------------- deterministic batches and schedule


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Indices of ``step``'s batch: consecutive slices of per-epoch permutations seeded by (seed, epoch),
    a pure function of ``step`` so a resumed run sees the same batches."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, pos = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[pos: pos + batch_size - len(out)].tolist())
    return np.asarray(out, dtype=np.int64)


def lr_at(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over the first 2 % of steps, then cosine decay to 10 % of ``lr``."""
    warm = max(1, steps // 50)
    if step < warm:
        return lr * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


# ---------------------------------------------------------------- checkpoints


def _checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("step-*.safetensors") if p.is_file())


def _save_checkpoint(root: Path, module: torch.nn.Module, opt, step: int, extra: dict) -> None:
    """One file per checkpoint (``latentgap.runs`` format): weights, optimiser and RNG tensors, with step,
    history and the CPU generators' states in its JSON header."""
    final = root / f"step-{step:07d}.safetensors"
    if final.exists():
        return
    tensors = {f"model.{k}": v for k, v in module.state_dict().items()}
    opt_tensors, groups = optimizer_tensors(opt)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors.update({f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    np_state = np.random.get_state()
    meta = {**extra, "step": step, "param_groups": groups,
            "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]], "rng_python": random.getstate()}
    root.mkdir(parents=True, exist_ok=True)
    save_checkpoint(final, tensors, meta)
    for old in _checkpoints(root)[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)


def _load_checkpoint(path: Path, module: torch.nn.Module, opt, settings_hash: str) -> dict:
    tensors, state = load_checkpoint(path)
    if state.get("settings_hash") != settings_hash:
        raise UserError(f"checkpoint {path} was made with other settings, data or starting weights",
                        "re-run with the same options, or choose a new --out folder")
    dev = next(module.parameters()).device
    module.load_state_dict({k: v.to(dev) for k, v in prefixed(tensors, "model").items()})
    load_optimizer(opt, tensors, state["param_groups"])
    torch.set_rng_state(tensors["rng.torch"])
    kind, keys, *rest = state["rng_numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["rng_python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    return state


# ---------------------------------------------------------------- the loop


def _fit(ae: Autoencoder, dataset, out: Path, *, settings: dict, steps: int, batch_size: int, lr: float,
         loss: str, kl_weight: float, perceptual_weight: float, checkpoint_every: int, seed: int,
         device: torch.device, grey_to_rgb: bool, indices, rescale: bool, callback, crop: int | None = None) -> Path:
    if loss not in ("l1", "mse"):
        raise UserError(f"unknown reconstruction loss '{loss}'", "use --loss l1 or --loss mse")
    if steps < 1 or batch_size < 1 or checkpoint_every < 1:
        raise UserError("--steps, --batch-size and --checkpoint-every must be >= 1", "pass positive values")
    out = Path(out)
    if (out / RUN_MODEL_DIR).exists():
        raise UserError(f"{out / RUN_MODEL_DIR} already holds a finished model (never overwritten)",
                        "choose a new --out folder")
    pool = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    if pool.size == 0:
        raise UserError("no images to train on", "pass a dataset (or indices) with at least one image")
    first = adapt_images(dataset.load(pool[:1]), ae.info, grey_to_rgb)  # side / channel errors before any work
    if crop is not None:
        f, side = ae.info.downsample, min(first.shape[-2:])
        if crop < f or crop % f or crop > side:
            raise UserError(f"--crop {crop} must be a multiple of the downsampling factor {f} and at most the image "
                            f"side {side}", f"use e.g. --crop {max(f, (side // 2) // f * f)}, or leave it out")

    ae.to(device)
    module = ae.trainable_module()
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    perceptual, p_status = perceptual_loss_fn(perceptual_weight, device)
    warn = []
    if perceptual_weight > 0 and perceptual is None:
        warn.append(f"perceptual loss requested (weight {perceptual_weight}) but not used: {p_status['reason']}")
        console.print(f"[yellow]warning:[/yellow] {warn[-1]}")
    settings = {**settings, "steps": steps, "batch_size": batch_size, "lr": lr, "loss": loss,
                "kl_weight": kl_weight, "perceptual_weight": perceptual_weight, "seed": seed,
                "grey_to_rgb": grey_to_rgb, "pool": stable_hash(pool.tolist()),
                **({"crop": crop} if crop else {})}  # absent when unset: earlier checkpoints still resume
    shash = stable_hash(settings)
    root = out / "checkpoints"
    step, history, elapsed = 0, [], 0.0
    if ckpts := _checkpoints(root):
        state = _load_checkpoint(ckpts[-1], module, opt, shash)
        step, history, elapsed = state["step"], state["history"], state["elapsed"]
        console.print(f"resuming from {ckpts[-1]} (step {step})")

    module.train()
    t0 = time.perf_counter() - elapsed
    with progress_bar(steps, f"train {ae.info.name}") as bar:
        bar.advance(step)
        while step < steps:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, steps, lr)
            x = adapt_images(dataset.load(pool[batch_indices(len(pool), batch_size, step, seed)]),
                             ae.info, grey_to_rgb).to(device)
            g = torch.Generator().manual_seed(seed * 1_000_003 + step)  # crops and posterior noise of this step
            if crop is not None:
                x = _random_crops(x, crop, g)
            x_hat, kl = ae.training_outputs(x, generator=g)
            rec = (x_hat - x).abs().mean() if loss == "l1" else (x_hat - x).pow(2).mean()
            total = rec
            if kl is not None:
                total = total + kl_weight * kl.mean() / x[0].numel()
            if perceptual is not None:
                total = total + perceptual_weight * perceptual(x_hat, x)
            if not torch.isfinite(total):
                raise UserError(f"training loss became {total.item()} at step {step}", "lower --lr")
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            step += 1
            history.append([step, total.detach().item(), rec.detach().item()])
            bar.advance(1)
            if callback is not None:
                callback(step, history[-1][1])
            if step % checkpoint_every == 0 or step == steps:
                _save_checkpoint(root, module, opt, step, {"settings_hash": shash, "history": history,
                                                           "elapsed": time.perf_counter() - t0})
    module.eval()
    record = _finish(ae, dataset, pool, out, grey_to_rgb, rescale)
    record.update(settings=settings, settings_hash=shash, history=history, warnings=warn, perceptual=p_status,
                  train_seconds=round(time.perf_counter() - t0, 2), device=str(device),
                  environment=environment(device))
    if hasattr(dataset, "describe"):
        record["dataset"] = dataset.describe()
    atomic_write_json(out / "training.json", record)
    return out


def _random_crops(x: torch.Tensor, side: int, g: torch.Generator) -> torch.Tensor:
    """One random ``side`` x ``side`` window per image (training on crops, as for the SD autoencoder: the
    network is convolutional, so it encodes full images afterwards at a fraction of the training cost)."""
    h, w = x.shape[-2:]
    ys = torch.randint(0, h - side + 1, (len(x),), generator=g).tolist()
    xs = torch.randint(0, w - side + 1, (len(x),), generator=g).tolist()
    return torch.stack([img[:, y:y + side, c:c + side] for img, y, c in zip(x, ys, xs)])


@torch.no_grad()
def _finish(ae: Autoencoder, dataset, pool: np.ndarray, out: Path, grey_to_rgb: bool, rescale: bool) -> dict:
    """Set the SD scaling factor (1 / std of training latents), measure PSNR, save the model atomically."""
    sample = pool[np.random.default_rng(0).permutation(len(pool))[:512]]
    dev = next(ae.parameters()).device
    zs, psnr = [], []
    for i in range(0, len(sample), 64):
        x = adapt_images(dataset.load(sample[i: i + 64]), ae.info, grey_to_rgb).to(dev)
        zs.append(ae.encode(x).flatten().cpu())
    record: dict[str, Any] = {}
    if rescale and hasattr(ae, "set_scaling_factor"):
        std = float(torch.cat(zs).std())
        ae.set_scaling_factor(ae.scale / std)  # encode() returned mode * old scale
        record["scaling_factor"] = ae.scale
    for i in range(0, len(sample), 64):
        x = adapt_images(dataset.load(sample[i: i + 64]), ae.info, grey_to_rgb).to(dev)
        psnr += image_psnr(ae.decode(ae.encode(x)), x).cpu().tolist()
    record["train_sample_psnr_db"] = float(np.mean(psnr))
    record["train_sample_n"] = int(len(sample))
    record["info"] = ae.info.to_dict()
    tmp = out / f".{RUN_MODEL_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    ae.save_pretrained(tmp)
    os.replace(tmp, out / RUN_MODEL_DIR)
    return record


def _open(dataset, resize):
    if isinstance(dataset, (str, os.PathLike)):
        from ..data import open_dataset

        return open_dataset(dataset, resize=resize)
    return dataset


# ---------------------------------------------------------------- public entry points


def train_autoencoder(dataset, out: str | os.PathLike, *, steps: int = TRAIN_DEFAULTS["steps"],
                      batch_size: int = TRAIN_DEFAULTS["batch_size"], lr: float = TRAIN_DEFAULTS["lr"],
                      width: int = TRAIN_DEFAULTS["width"], depth: int = TRAIN_DEFAULTS["depth"],
                      latent_channels: int = TRAIN_DEFAULTS["latent_channels"],
                      downsample: int = TRAIN_DEFAULTS["downsample"], attention: bool = TRAIN_DEFAULTS["attention"],
                      kl_weight: float = TRAIN_DEFAULTS["kl_weight"], loss: str = TRAIN_DEFAULTS["loss"],
                      perceptual_weight: float = TRAIN_DEFAULTS["perceptual_weight"],
                      checkpoint_every: int = TRAIN_DEFAULTS["checkpoint_every"], device: str = "auto",
                      seed: int = TRAIN_DEFAULTS["seed"], resize: int | None = None,
                      indices=None, callback: Callable[[int, float], None] | None = None,
                      crop: int | None = None) -> Path:
    """Train the built-in KL autoencoder (``kl-builtin``) on ``dataset`` and save it under ``out``.

    Args:
        dataset: an ImageDataset (``__len__``, ``load(idx) -> (B, C, H, W)`` in [0, 1], ``channels``) or a spec.
        out: run folder; an interrupted run in it is resumed, a finished one is refused.
        steps / batch_size / lr: Adam optimisation budget (lr: peak of warm-up + cosine schedule).
        width / depth / latent_channels / downsample / attention: see :func:`builtin_kl_config`.
        kl_weight: SD-style KL weight (KL summed over latents vs reconstruction summed over pixels).
        loss: ``"l1"`` or ``"mse"`` reconstruction loss on [0, 1] images.
        perceptual_weight: LPIPS-VGG weight, used only if its weights are on disk (else a recorded warning).
        checkpoint_every: steps between checkpoints.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
        seed: seeds the initial weights, the batch order and the posterior noise.
        resize: square side for a dataset spec (``open_dataset(spec, resize)``).
        indices: train on these dataset indices only (default: all).
        callback: ``callback(step, loss)`` after every step (logging, or interrupting in tests).
        crop: train on one random ``crop`` x ``crop`` window per image (a multiple of ``downsample``); the
            cost of a step falls with the crop's area, the model still encodes whole images. None: whole images.

    Returns:
        ``out``; ``create_autoencoder(out)`` loads the trained model (scaling factor = 1 / latent std).
    """
    ds = _open(dataset, resize)
    knobs = dict(width=width, depth=depth, latent_channels=latent_channels, downsample=downsample,
                 in_channels=int(ds.channels), attention=attention)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # repeatable initial weights without touching the caller's RNG
        ae = build_builtin(name=f"kl-builtin:{Path(out).name}", **knobs)
    settings = {"kind": "train", "backend": "kl-builtin", "knobs": knobs, "dataset": _fingerprint(ds)}
    return _fit(ae, ds, Path(out), settings=settings, steps=steps, batch_size=batch_size, lr=lr, loss=loss,
                kl_weight=kl_weight, perceptual_weight=perceptual_weight, checkpoint_every=checkpoint_every,
                seed=seed, device=resolve_device(device), grey_to_rgb=True, indices=indices, rescale=True,
                callback=callback, crop=crop)


def finetune_autoencoder(spec: str | Autoencoder, dataset, out: str | os.PathLike, *,
                         steps: int = FINETUNE_DEFAULTS["steps"], batch_size: int = FINETUNE_DEFAULTS["batch_size"],
                         lr: float = FINETUNE_DEFAULTS["lr"], kl_weight: float = FINETUNE_DEFAULTS["kl_weight"],
                         loss: str = FINETUNE_DEFAULTS["loss"],
                         perceptual_weight: float = FINETUNE_DEFAULTS["perceptual_weight"],
                         checkpoint_every: int = FINETUNE_DEFAULTS["checkpoint_every"], device: str = "auto",
                         seed: int = FINETUNE_DEFAULTS["seed"], grey_to_rgb: bool = True, resize: int | None = None, indices=None,
                         callback: Callable[[int, float], None] | None = None, crop: int | None = None) -> Path:
    """Fine-tune a trainable autoencoder (diffusers KL / FLUX.2 / tiny / MedVAE) on ``dataset`` (the paper's
    "MedVAE-FT" arm) with the same losses and checkpoints as :func:`train_autoencoder`.

    The backend's latent convention is kept (scaling factor, FLUX.2 BatchNorm statistics), so the latents
    stay in the coordinates the parent's diffusion model expects. Arguments as in :func:`train_autoencoder`;
    ``grey_to_rgb`` replicates grey images for RGB autoencoders.

    Returns:
        ``out``; ``create_autoencoder(out)`` loads the fine-tuned model.
    """
    ds = _open(dataset, resize)
    ae = create_autoencoder(spec, device="cpu")
    if not ae.trainable:
        raise UserError(f"autoencoder '{ae.info.name}' ({ae.info.backend}) cannot be fine-tuned",
                        "fine-tune a diffusers AutoencoderKL / AutoencoderKLFlux2, a tiny autoencoder or MedVAE")
    settings = {"kind": "finetune", "parent": ae.info.to_dict(), "dataset": _fingerprint(ds)}
    return _fit(ae, ds, Path(out), settings=settings, steps=steps, batch_size=batch_size, lr=lr, loss=loss,
                kl_weight=kl_weight, perceptual_weight=perceptual_weight, checkpoint_every=checkpoint_every,
                seed=seed, device=resolve_device(device), grey_to_rgb=grey_to_rgb, indices=indices, rescale=False,
                callback=callback, crop=crop)


def _fingerprint(ds) -> str:
    fp = getattr(ds, "fingerprint", None)
    return fp() if callable(fp) else f"{type(ds).__name__}:{len(ds)}"
