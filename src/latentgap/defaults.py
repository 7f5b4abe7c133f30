"""Defaults that several layers share, kept in one light module (no torch import), so that the library, the
command line (``--help`` stays fast) and study specs cannot drift apart.

Classifier training defaults live in ``latentgap.train.TrainConfig`` (one pydantic model used everywhere).
"""

from __future__ import annotations

from typing import Any

# The built-in KL autoencoder's size knobs, sized for the CPU main job (see autoencoders/builtin.py).
BUILTIN_DEFAULTS: dict[str, Any] = dict(width=8, depth=1, latent_channels=4, downsample=4, in_channels=1,
                                        attention=False)

# Autoencoder training: `latentgap.autoencoders.train_autoencoder`, `latentgap ae train` and a study spec's
# `train:` block all read these. LPIPS is off by default: it is used only where its VGG weights happen to be on
# disk, so a non-zero default would train different autoencoders on different machines.
AE_TRAIN_DEFAULTS: dict[str, Any] = dict(steps=600, batch_size=16, lr=2e-3, kl_weight=1e-6, loss="l1",
                                         perceptual_weight=0.0, checkpoint_every=100, seed=0,
                                         **{k: v for k, v in BUILTIN_DEFAULTS.items() if k != "in_channels"})

# Fine-tuning a pretrained autoencoder: the training defaults with a shorter, gentler schedule.
AE_FINETUNE_DEFAULTS: dict[str, Any] = {**{k: AE_TRAIN_DEFAULTS[k] for k in (
    "batch_size", "kl_weight", "loss", "perceptual_weight", "checkpoint_every", "seed")}, "steps": 500, "lr": 1e-5}
