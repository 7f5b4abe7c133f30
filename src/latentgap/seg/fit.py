"""The epoch loop every segmentation model shares (U-Net baseline, mask autoencoder, diffusion segmenter).

One place owns what must be identical across them: shuffling from the run's own generator, early stopping on a
validation score, the best weights kept, ``metrics.jsonl`` rewritten each epoch, and one checkpoint file per epoch
(model, best model, optimiser, scheduler, RNG and counters, written atomically) so that a killed run resumes to
bit-identical weights on CPU.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from ..progress import progress_bar
from ..runs import (check_run_dir, ema_tensors, environment, load_checkpoint, load_ema, load_optimizer,
                    optimizer_tensors, prefixed, save_checkpoint)
from ..storage import atomic_write_text, stable_hash


class FoldRunConfig(BaseModel):
    """What every segmentation run on one fold shares: the data, the fold, the training size, seed and device.
    ``config_hash`` leaves out the device and the fields in ``_not_hashed`` (settings of prediction only), and the
    fields in ``_hashed_when_set`` while they are None (options added after runs were recorded: a run that does not
    use one keeps the hash it had before the option existed)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    _not_hashed: tuple[str, ...] = ("device",)
    _hashed_when_set: tuple[str, ...] = ()

    dataset: str
    fold: int = Field(0, ge=0)
    k: int = Field(5, ge=2)
    split_seed: int = 0
    image_size: list[int] | None = None  # the training size (in the hash: a resized dataset is another run)
    seed: int = 0
    device: str = "auto"

    def config_hash(self) -> str:
        return stable_hash({k: v for k, v in self.model_dump().items()
                            if k not in self._not_hashed and not (k in self._hashed_when_set and v is None)})


def begin_run(cfg: FoldRunConfig, run_dir: Path, ds, splits, what: str) -> tuple[dict | None, str]:
    """``(finished row or None, config hash)``: the row when ``run_dir`` holds this configuration's result;
    otherwise the fold and the training size are checked (one-line errors) and training may start."""
    from .data import check_training_size

    chash = cfg.config_hash()
    done = check_run_dir(run_dir, chash, what)
    if done is None:
        if cfg.fold >= len(splits.folds):
            raise UserError(f"fold {cfg.fold} does not exist ({len(splits.folds)} folds)", "pass a valid --fold")
        check_training_size(cfg.image_size, ds)
        if ds.num_classes != 2:
            raise UserError(f"{ds.name}: {ds.num_classes}-class masks load and split, but the segmentation models train "
                            "binary masks only", "binarise the masks (foreground = label > 0) or train one model per class")
    return done, chash


def write_run_config(cfg: FoldRunConfig, run_dir: Path, chash: str) -> None:
    """Create ``run_dir`` and write ``config.yaml`` (with the hash a resumed run is checked against)."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump({**cfg.model_dump(), "config_hash": chash}, sort_keys=True))


def run_row(cfg: FoldRunConfig, ds, splits, fit: "FitResult", model: torch.nn.Module, device, chash: str,
            **fields) -> dict:
    """The fields every segmentation row shares (data, fold, training, size, environment), then ``fields``."""
    env = environment(device)
    fold = splits.folds[cfg.fold]
    return {"dataset": ds.name, "fold": cfg.fold, "k": len(splits.folds), "splits_digest": splits.digest(), **fields,
            "epochs": fit.epochs, "best_epoch": fit.best_epoch, "max_epochs": fit.max_epochs,
            "convergence": fit.convergence, "train_seconds": round(fit.seconds, 2),
            "n_train": len(fold.train), "n_test": len(fold.test), "image_size": list(ds.image_size),
            "image_channels": ds.channels, "parameters": sum(p.numel() for p in model.parameters()),
            "device": str(device), "torch": env["torch"], "code_version": env["code_version"], "config_hash": chash}


@dataclass
class FitResult:
    best_state: dict
    best: float
    best_epoch: int
    epochs: int
    seconds: float
    max_epochs: int
    convergence: str  # early-stopped / budget-limited (training_end)


def fit_epochs(run_dir: Path, config_hash: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler, train_idx: np.ndarray, loss_fn: Callable[[np.ndarray, torch.Generator], torch.Tensor],
               validate: Callable[[], float], *, epochs: int, patience: int, batch_size: int, seed: int,
               desc: str, grad_clip: float | None = None, progress: bool | None = None, ema=None) -> FitResult:
    """Train ``model`` for up to ``epochs`` epochs, stopping after ``patience`` epochs without a better
    ``validate()`` score (higher is better); resume from ``run_dir/checkpoint.safetensors`` when present.

    ``loss_fn(batch_indices, generator)`` returns the batch loss; it draws any randomness (flips, noise, time
    steps) from ``generator``, which is checkpointed with the weights. Batches of one sample are skipped
    (BatchNorm cannot normalise them). With ``ema`` (a diffusers ``EMAModel`` over ``model.parameters()``), the
    average is updated after every step, validation runs on the averaged weights, the best state is the averaged
    one, and the average is checkpointed with the rest.
    """
    g = torch.Generator().manual_seed(seed)
    ckpt = run_dir / "checkpoint.safetensors"
    start, best, best_epoch, bad, best_state, lines, seconds = 0, -float("inf"), -1, 0, None, [], 0.0
    if ckpt.exists():
        t, meta = load_checkpoint(ckpt)
        model.load_state_dict(prefixed(t, "model"))
        best_state = prefixed(t, "best") or None
        load_optimizer(optimizer, t, meta["param_groups"])
        scheduler.load_state_dict(meta["scheduler"])
        g.set_state(t["rng.generator"])
        if ema is not None:
            load_ema(ema, t, meta)
        start, best, best_epoch, bad, seconds = meta["epoch"] + 1, meta["best"], meta["best_epoch"], meta["bad"], meta["seconds"]
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()[:start]
    train_idx = np.asarray(train_idx)
    with progress_bar(epochs, desc, disable=None if progress is None else not progress) as bar:
        bar.advance(start)
        for epoch in range(start, epochs):
            if bad >= patience:
                break
            t0 = time.perf_counter()
            model.train()
            order = torch.randperm(len(train_idx), generator=g).numpy()
            tot, n = 0.0, 0
            for lo in range(0, len(order), batch_size):
                idx = train_idx[order[lo:lo + batch_size]]
                if len(idx) < 2:
                    continue
                loss = loss_fn(idx, g)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                if ema is not None:
                    ema.step(model.parameters())
                tot, n = tot + loss.item() * len(idx), n + len(idx)
            scheduler.step()
            model.eval()
            if ema is not None:  # validate (and keep) the averaged weights; training goes on from the raw ones
                ema.store(model.parameters())
                ema.copy_to(model.parameters())
            with torch.no_grad():
                val = float(validate())
            if val > best:
                best, best_epoch, bad = val, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
            if ema is not None:
                ema.restore(model.parameters())
            seconds += time.perf_counter() - t0
            lines.append(json.dumps({"epoch": epoch, "train_loss": tot / max(n, 1), "val": val,
                                     "seconds": time.perf_counter() - t0}, sort_keys=True))
            atomic_write_text(run_dir / "metrics.jsonl", "\n".join(lines) + "\n")
            tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
            tensors.update({f"best.{k}": v for k, v in (best_state or {}).items()})
            ot, groups = optimizer_tensors(optimizer)
            tensors.update(ot)
            tensors["rng.generator"] = g.get_state()
            extra = {}
            if ema is not None:
                et, extra = ema_tensors(ema)
                tensors.update(et)
            save_checkpoint(ckpt, tensors, {"epoch": epoch, "best": best, "best_epoch": best_epoch, "bad": bad,
                                            "seconds": seconds, "param_groups": groups,
                                            "scheduler": scheduler.state_dict(), "config_hash": config_hash, **extra})
            bar.advance(1)
    if best_state is None:  # nothing trained (epochs exhausted before the first epoch): keep the current weights
        best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return FitResult(best_state, best, best_epoch, len(lines), seconds, epochs,
                     training_end(len(lines), best_epoch, epochs, patience))


def training_end(epochs_run: int, best_epoch: int, max_epochs: int, patience: int) -> str:
    """How a segmentation training ended: ``early-stopped`` when validation had not improved for ``patience`` epochs
    (also when that happens exactly at the ceiling), else ``budget-limited``.

    Every segmentation model here anneals its learning rate to zero at the ceiling (cosine, ``T_max = epochs``), so
    its validation curve flattens at the end whatever the budget: a plateau at the ceiling is not evidence of
    convergence (a kvasir U-Net that looked flat at 30 epochs gained 2.5 test Dice points with a ceiling of 60), and only
    early stopping counts."""
    return "early-stopped" if epochs_run - 1 - best_epoch >= patience else "budget-limited"
