"""Building blocks of a classifier training, in one place: model, placement, loss, optimiser + schedule,
noise sampling. ``run_training``, the Optuna search (``hpo.py``), distillation and later TSTR runs all build
from here, so none of them imports another's module (no import cycles) and a tuned trial is built exactly
like the final run.
"""

from __future__ import annotations

import numpy as np
import torch

from ..device import prefers_channels_last
from ..errors import UserError
from .config import TrainConfig
from .loop import NoiseSampling


def build_model(cfg: TrainConfig, in_chans: int, num_classes: int, input_size, multilabel: bool):
    """The classifier of ``cfg`` (seeded init), wrapped with FiLM noise conditioning when ``cfg.noise_cond``."""
    from ..models import NoiseConditioned, create_classifier

    torch.manual_seed(cfg.seed)  # weight init is part of the seeded run
    model = create_classifier(cfg.model, in_chans, num_classes, input_size, pretrained=cfg.pretrained,
                              cosine_head=(cfg.loss == "ldam" and not multilabel), scale=cfg.ldam_s,
                              image_input=cfg.space != "latent",
                              **({"stem_patch": cfg.stem_patch} if cfg.stem_patch else {}), **cfg.model_kwargs)
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
    """LDAM-DRW or cross-entropy (weighted BCE for multi-label), inside the distillation loss when
    ``cfg.distill``."""
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
    elif cfg.loss == "wce":  # inverse class frequency, mean weight 1 (an empty class gets none)
        w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
        base = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(w / w[counts > 0].mean(), dtype=torch.float32))
    else:
        base = torch.nn.CrossEntropyLoss()
    return DistillationLoss(base, cfg.distill_alpha, cfg.distill_temperature) if cfg.distill else base


def build_optimizer(cfg: TrainConfig, model, steps_per_epoch: int = 1
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW with ``cfg.lr`` / ``cfg.weight_decay``; a cosine schedule over ``cfg.epochs`` (stepped per epoch);
    with ``cfg.schedule == "onecycle"`` a one-cycle schedule peaking at ``cfg.lr`` over every optimiser step
    (stepped per batch, so ``steps_per_epoch`` is needed); with ``cfg.until == "converged"`` halving on a
    validation plateau (stepped with validation bACC)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.schedule == "onecycle":
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr,
                                                              total_steps=cfg.epochs * max(1, steps_per_epoch))
    if cfg.until == "converged":
        return optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                                     patience=max(1, cfg.patience // 3))
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)


def build_noise(cfg: TrainConfig, device: torch.device) -> NoiseSampling | None:
    """The forward process and noise-level draws of a noise-conditioned run (None otherwise)."""
    if not cfg.noise_cond:
        return None
    from ..diffusion import NoiseSchedule

    sched = NoiseSchedule(cfg.noise_timesteps, cfg.noise_schedule, cfg.noise_beta_start, cfg.noise_beta_end)
    return NoiseSampling(sched.to(device), cfg.noise_clean_fraction, cfg.noise_max_fraction)


def min_epochs(cfg: TrainConfig, multilabel: bool) -> int:
    """Epochs before early stopping may end a run: with a one-cycle schedule, all of them (the schedule is a fixed
    budget that only ends annealed at its last epoch: stopping during warm-up or at the peak learning rate leaves
    the baseline under-fitted; the best validation epoch is still the one kept); with LDAM-DRW, the DRW switch plus
    ``patience`` (a run must not stop on the plateau of the un-weighted phase, before the recipe's second phase was
    tried); 0 otherwise."""
    if cfg.schedule == "onecycle":
        return cfg.epochs
    if cfg.loss != "ldam" or multilabel or cfg.drw_switch_epoch is None:
        return 0
    return min(cfg.epochs, cfg.drw_switch_epoch + cfg.patience)
