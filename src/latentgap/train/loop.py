"""Training and evaluation loops that return metric dicts and do no I/O.

The shape follows timm's ``train_one_epoch`` / ``validate`` and guided-diffusion's classifier training
(noisy inputs from ``q_sample``, accuracy logged per timestep quartile). Everything random comes from one
CPU ``torch.Generator`` passed in by the caller, so that a run is reproducible on CPU (same seed, same data,
same metrics) and the draws do not depend on the device.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import autocast_dtype
from ..diffusion import NoiseSchedule
from ..models.film import NoiseConditioned
from .metrics import classification_metrics

# ----------------------------------------------------------------------------- augmentation


@dataclass
class Augment:
    """Batch augmentations, drawn per sample from the caller's generator.

    Args:
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        shift: largest translation as a fraction of the side (reflect-padded crop, a "small affine/crop");
            0 disables it. Images get flips + shift by default, cached latents nothing: a flipped or
            shifted latent is not the latent of a flipped or shifted image (docs/classifiers.md).
    """

    hflip: float = 0.5
    vflip: float = 0.0
    shift: float = 0.0

    @classmethod
    def preset(cls, name: str) -> "Augment | None":
        return {"none": None, "shift": cls(0.0, 0.0, 0.1), "flip": cls(0.5, 0.0, 0.0), "flip2": cls(0.5, 0.5, 0.0),
                "flip+shift": cls(0.5, 0.0, 0.1), "flip2+shift": cls(0.5, 0.5, 0.1)}[name]

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:  # (B, C, H, W) -> same
        b, _, h, w = x.shape
        flip_h = (torch.rand(b, generator=g) < self.hflip).to(x.device)[:, None, None, None]
        flip_v = (torch.rand(b, generator=g) < self.vflip).to(x.device)[:, None, None, None]
        x = torch.where(flip_h, x.flip(3), x)
        x = torch.where(flip_v, x.flip(2), x)
        p = int(round(self.shift * min(h, w)))
        if p > 0:
            xp = F.pad(x, (p, p, p, p), mode="reflect")
            dy, dx = torch.randint(0, 2 * p + 1, (2, b), generator=g).tolist()
            x = torch.stack([xp[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
        return x


@dataclass
class NoiseSampling:
    """How noise levels are drawn in training (see :meth:`NoiseSchedule.sample_timesteps`)."""

    schedule: NoiseSchedule
    clean_fraction: float = 0.1
    max_fraction: float = 1.0


# ----------------------------------------------------------------------------- loops

def _unpack(batch, device):
    x, y, *rest = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True), [r.to(device) for r in rest]


def _autocast(device: torch.device):
    """Mixed precision where :func:`autocast_dtype` chooses it (CUDA), a no-op context elsewhere."""
    amp = autocast_dtype(device)
    return torch.autocast(device.type, dtype=amp) if amp else nullcontext()


def _forward(model: nn.Module, x: torch.Tensor, sigma: torch.Tensor | None) -> torch.Tensor:
    return model(x, sigma) if isinstance(model, NoiseConditioned) else model(x)


def train_one_epoch(model: nn.Module, loader, optimizer: torch.optim.Optimizer, loss_fn: Callable,
                    device: torch.device, generator: torch.Generator, *, augment: Augment | None = None,
                    noise: NoiseSampling | None = None, channels_last: bool = False,
                    scaler: "torch.amp.GradScaler | None" = None, batch_scheduler=None) -> dict:
    """One pass over ``loader``; returns {"loss": mean loss, "acc": training accuracy}.

    Args:
        model: classifier, or a :class:`NoiseConditioned` one (then ``noise`` draws per-sample levels).
        loader: yields (x (B,C,H,W) float, y) or (x, y, teacher_logits (B,K)) for distillation.
        loss_fn: ``loss_fn(logits, y)`` or ``loss_fn(logits, y, teacher_logits)``.
        generator: CPU generator for augmentation and noise draws.
        channels_last: NHWC memory format (faster convolutions on recent GPUs).
        scaler: GradScaler for float16 autocast (bfloat16 needs none).
    """
    model.train()
    tot_loss, correct, seen = 0.0, 0, 0
    for batch in loader:
        x, y, extra = _unpack(batch, device)
        if augment is not None:
            x = augment(x, generator)
        sigma = None
        if noise is not None:
            t = noise.schedule.sample_timesteps(len(x), generator, clean_fraction=noise.clean_fraction,
                                                max_fraction=noise.max_fraction)
            eps = torch.randn(x.shape, generator=generator).to(device)
            t = t.to(device)
            x, sigma = noise.schedule.q_sample(x, t, eps), noise.schedule.noise_level(t)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = _forward(model, x, sigma)
            loss = loss_fn(logits.float(), y, *extra)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if batch_scheduler is not None:  # a per-step schedule (one-cycle)
            batch_scheduler.step()
        tot_loss += loss.item() * len(x)
        seen += len(x)
        if y.ndim == 1:
            correct += (logits.argmax(1) == y).sum().item()
        else:
            correct += ((logits > 0).long() == y).float().mean(1).sum().item()
    return {"loss": tot_loss / max(seen, 1), "acc": correct / max(seen, 1)}


@torch.no_grad()
def predict(model: nn.Module, loader, device: torch.device, *, multilabel: bool = False,
            noise: NoiseSchedule | None = None, generator: torch.Generator | None = None,
            channels_last: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(probs (N, K), labels, timesteps or None) over ``loader``; noisy inputs when ``noise`` is given."""
    model.eval()
    probs, labels, ts = [], [], []
    for batch in loader:
        x, y, _ = _unpack(batch, device)
        sigma = None
        if noise is not None:  # uniform timesteps for the per-quartile accuracy (guided-diffusion)
            t = torch.randint(0, noise.num_train_timesteps, (len(x),), generator=generator)
            eps = torch.randn(x.shape, generator=generator).to(device)
            x, sigma = noise.q_sample(x, t.to(device), eps), noise.noise_level(t.to(device))
            ts.append(t.numpy())
        elif isinstance(model, NoiseConditioned):
            sigma = torch.zeros(len(x), device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = _forward(model, x, sigma).float()
        probs.append((torch.sigmoid(logits) if multilabel else logits.softmax(1)).cpu().numpy())
        labels.append(y.cpu().numpy())
    return np.concatenate(probs), np.concatenate(labels), (np.concatenate(ts) if ts else None)


def evaluate(model: nn.Module, loader, device: torch.device, *, multilabel: bool = False,
             noise: NoiseSchedule | None = None, seed: int = 0, channels_last: bool = False) -> dict:
    """Metrics on clean inputs (bacc, auc, mcc, acc, per-class lists, ``probs``) and, for a noise-conditioned
    model, accuracy per noise-level quartile ``acc_q0..acc_q3`` with timesteps drawn from ``seed``."""
    probs, y, _ = predict(model, loader, device, multilabel=multilabel, channels_last=channels_last)
    out = classification_metrics(y, probs, multilabel)
    out["probs"] = probs
    if noise is not None and isinstance(model, NoiseConditioned):
        g = torch.Generator().manual_seed(seed)
        p_n, y_n, t = predict(model, loader, device, multilabel=multilabel, noise=noise, generator=g,
                              channels_last=channels_last)
        hit = (p_n.argmax(1) == y_n) if not multilabel else ((p_n >= 0.5) == y_n).mean(1)
        q = noise.quartile(torch.as_tensor(t)).numpy()
        for i in range(4):
            out[f"acc_q{i}"] = float(hit[q == i].mean()) if (q == i).any() else float("nan")
    return out


# ----------------------------------------------------------------------------- BatchNorm statistics

@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches, device: torch.device, *, max_batches: int = 8,
                          channels_last: bool = False) -> int:
    """Recompute BatchNorm running statistics from the current weights ("precise BN").

    Early in a short run from random initialisation, the running mean/var (momentum 0.1) lag weights that
    change fast, so an eval-mode network can predict one class for everything although its train-mode
    outputs are good (seen on PneumoniaMNIST with ResNet-18: 0.32 vs 0.93 accuracy on training images after
    two epochs). Resetting the statistics and averaging them over ``max_batches`` clean training batches
    (cumulative average, ``momentum=None``, no gradient) removes the lag. Noise-conditioned models see
    clean inputs (sigma = 0), as in evaluation. Returns the number of BatchNorm layers updated (0: no-op).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or max_batches <= 0:
        return 0
    was_training, momenta = model.training, [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    try:
        for i, batch in enumerate(batches):
            if i >= max_batches:
                break
            x, _, _ = _unpack(batch, device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            sigma = torch.zeros(len(x), device=device) if isinstance(model, NoiseConditioned) else None
            with _autocast(device):
                _forward(model, x, sigma)
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.train(was_training)
    return len(bns)


# ----------------------------------------------------------------------------- early stopping

class EarlyStopping:
    """Stop when the monitored value (validation bACC) has not improved for ``patience`` epochs.

    Keeps a CPU copy of the best weights. ``state_dict`` / ``load_state_dict`` carry the counters
    (the best weights are saved separately by the caller). ``min_epochs``: training never stops before this many
    epochs (LDAM-DRW: the re-weighted phase must get its ``patience`` epochs before a plateau can end the run).
    """

    def __init__(self, patience: int = 15, min_delta: float = 0.0, min_epochs: int = 0):
        self.patience, self.min_delta, self.min_epochs = patience, min_delta, min_epochs
        self.best, self.best_epoch, self.bad_epochs = -math.inf, -1, 0
        self.best_state: dict | None = None

    def step(self, value: float, epoch: int, model: nn.Module) -> bool:
        """Record ``value`` of ``epoch``; returns True when training should stop."""
        if value > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.stopped(epoch)

    def stopped(self, epoch: int) -> bool:
        """Whether training should end after ``epoch`` (0-based)."""
        return self.bad_epochs >= self.patience and epoch + 1 >= self.min_epochs

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, d: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = d["best"], d["best_epoch"], d["bad_epochs"]


def convergence(val_curve: list[float], best_epoch: int, max_epochs: int, patience: int,
                tol: float = 0.005) -> dict:
    """Whether a run converged, from its validation curve (a cell that did not is budget-limited).

    * ``early-stopped``: training stopped because validation had not improved for ``patience`` epochs;
    * ``plateau``: training reached ``max_epochs``, but the last ``w = max(3, n // 4)`` epochs did not beat
      the best value before them by more than ``tol`` (validation bACC has flattened);
    * ``budget-limited``: neither — validation was still improving when the epochs ran out.

    Returns ``{"converged": bool, "convergence": reason}``.
    """
    n = len(val_curve)
    if n < max_epochs and n - 1 - best_epoch >= patience:
        return {"converged": True, "convergence": "early-stopped"}
    w = max(3, n // 4)
    if n > w and max(val_curve[-w:]) <= max(val_curve[:-w]) + tol:
        return {"converged": True, "convergence": "plateau"}
    return {"converged": False, "convergence": "budget-limited"}


# ----------------------------------------------------------------------------- batches and fit

class Batches:
    """Mini-batches over a fold part without per-item Python overhead (uses ``get_batch`` when the
    dataset has it, as :class:`latentgap.latents.SpaceDataset` does).

    Args:
        ds: dataset of (x, y).
        batch_size: B.
        shuffle: a new permutation from ``generator`` every pass.
        generator: CPU generator (shuffling is part of the run's reproducible random stream).
        extra: optional (n, ...) tensor aligned with the dataset (teacher logits); yielded third.
        drop_last_single: skip a final batch of one sample (BatchNorm cannot normalise it).

    A shuffled pass over a dataset with several encode-time views (``num_views > 1``) draws a view per sample
    from ``generator``; an unshuffled pass (validation, test) reads the identity view.
    """

    def __init__(self, ds, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                 extra: torch.Tensor | None = None, drop_last_single: bool = False):
        self.ds, self.batch_size, self.shuffle, self.g = ds, batch_size, shuffle, generator
        self.extra, self.drop_last_single = extra, drop_last_single

    def __len__(self) -> int:
        return math.ceil(len(self.ds) / self.batch_size)

    def _get(self, pos: torch.Tensor):
        if getattr(self.ds, "num_views", 1) > 1 and self.shuffle:
            # encode-time views: each training sample draws its view from the run's stream (uniformly)
            views = torch.randint(0, self.ds.num_views, (len(pos),), generator=self.g)
            return self.ds.get_batch(pos, views)
        if hasattr(self.ds, "get_batch"):
            return self.ds.get_batch(pos)
        items = [self.ds[int(i)] for i in pos]
        return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])

    def __iter__(self):
        n = len(self.ds)
        order = torch.randperm(n, generator=self.g) if self.shuffle else torch.arange(n)
        for s in range(0, n, self.batch_size):
            pos = order[s:s + self.batch_size]
            if self.drop_last_single and len(pos) == 1 and n > 1:
                break
            x, y = self._get(pos)
            yield (x, y) if self.extra is None else (x, y, self.extra[pos])


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, loss_fn: Callable, train_batches: Batches,
        val_batches: Batches, device: torch.device, generator: torch.Generator, *, epochs: int = 60,
        patience: int = 15, augment: Augment | None = None, noise: NoiseSampling | None = None,
        multilabel: bool = False, start_epoch: int = 0, stopper: EarlyStopping | None = None,
        on_epoch: Callable | None = None, channels_last: bool = False, scaler=None,
        precise_bn_batches: int = 8, monitor: str = "bacc") -> EarlyStopping:
    """Epochs of :func:`train_one_epoch` + validation with early stopping on ``val[monitor]`` (bACC or AUC); no I/O
    of its own.

    Before each validation, BatchNorm statistics are recomputed over ``precise_bn_batches`` training
    batches (:func:`recalibrate_batchnorm`; 0 keeps the running averages). The batches are drawn in an order
    seeded by the epoch, so the run's own random stream (and thus resuming) is unaffected.

    ``on_epoch(epoch, metrics, stopper)`` is called after every epoch (the caller logs and checkpoints).
    Returns the :class:`EarlyStopping` holding the best weights (``best_state``) and epoch.
    """
    stopper = stopper or EarlyStopping(patience)
    if start_epoch > 0 and stopper.stopped(start_epoch - 1):
        return stopper  # a resumed run that had already stopped
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        if hasattr(loss_fn, "set_epoch"):
            loss_fn.set_epoch(epoch)  # DRW switch
        per_step = isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
        tr = train_one_epoch(model, train_batches, optimizer, loss_fn, device, generator, augment=augment,
                             noise=noise, channels_last=channels_last, scaler=scaler,
                             batch_scheduler=scheduler if per_step else None)
        if scheduler is not None and not per_step and not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step()
        if precise_bn_batches > 0:
            order = torch.Generator().manual_seed(10_007 + epoch)
            recalibrate_batchnorm(model, Batches(train_batches.ds, train_batches.batch_size, shuffle=True,
                                                 generator=order, drop_last_single=True),
                                  device, max_batches=precise_bn_batches, channels_last=channels_last)
        val = evaluate(model, val_batches, device, multilabel=multilabel, channels_last=channels_last)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val[monitor])  # decays when the monitored metric flattens (train.until: converged)
        stop = stopper.step(val[monitor], epoch, model)
        metrics = {"epoch": epoch, "train_loss": tr["loss"], "train_acc": tr["acc"], "val_bacc": val["bacc"],
                   "val_auc": val["auc"], "val_mcc": val["mcc"], "lr": optimizer.param_groups[0]["lr"],
                   "seconds": time.perf_counter() - t0}
        if on_epoch is not None:
            on_epoch(epoch, metrics, stopper)
        if stop:
            break
    return stopper
