"""Load a trained classifier back from its run folder: for guidance, rejection filtering and evaluation.

>>> run = load_run("studies/demo/runs/phantom_n1500-kl-builtin-latent-plain-f0-s0-c1a2b3")
>>> probs = run.predict_proba(z)          # z: raw latents from the cache or a generator (B, c, h, w)
>>> logits = run.model(run.transform(z))  # the same in two steps; a FiLM model also takes a noise level

The run folder records everything needed: ``config.yaml`` (the resolved TrainConfig), ``inputs.json``
(space, input shape, classes and, for latents, the fold's channel normalisation) and the best weights in
``checkpoint.safetensors``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from ..errors import UserError
from ..runs import load_checkpoint, prefixed
from ..storage import read_json
from .build import build_model
from .config import TrainConfig


class InputTransform(nn.Module):
    """What a run's classifier expects in front of it: ``(z - mean) / std`` per channel for latent-space runs
    (the fold's training statistics), the identity for images and reconstructions (float in [0, 1])."""

    def __init__(self, mean=None, std=None):
        super().__init__()
        self.identity = mean is None
        if not self.identity:
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32)[None, :, None, None])
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32)[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> same
        return x if self.identity else (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """From the classifier's coordinates back to the cache's (raw latents)."""
        return x if self.identity else x * self.std.to(x.dtype) + self.mean.to(x.dtype)


@dataclass
class LoadedRun:
    """A trained classifier with its configuration and input transform (see :func:`load_run`)."""

    model: nn.Module  # eval mode, best weights
    config: TrainConfig
    transform: InputTransform
    inputs: dict  # inputs.json: space, input_shape, num_classes, class_names, normalisation, fold, ...
    result: dict | None = field(default=None)  # result.json of a finished run

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, noise_level: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities (softmax; sigmoid for multi-label) for raw inputs ``x`` (B, C, H, W)."""
        dev = next(self.model.parameters()).device
        x = self.transform.to(dev)(x.to(dev).float())
        logits = self.model(x, noise_level) if noise_level is not None else self.model(x)
        return torch.sigmoid(logits) if self.inputs["multilabel"] else torch.softmax(logits.float(), 1)


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu", *, weights: str = "best") -> LoadedRun:
    """The classifier trained in ``run_dir`` by :func:`latentgap.train.run_training`.

    Args:
        run_dir: a run folder (``latentgap train --out``, or a study's ``runs/<name>``).
        device: where to put the model.
        weights: "best" (the early-stopping choice, used for the test rows) or "last" (the latest epoch).
    """
    run_dir = Path(run_dir)
    need = [run_dir / n for n in ("config.yaml", "inputs.json", "checkpoint.safetensors")]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        raise UserError(f"'{run_dir}' is not a loadable classifier run (missing {', '.join(missing)})",
                        "pass the folder of a run trained with this version of latentgap (`latentgap train --out`)")
    if weights not in ("best", "last"):
        raise UserError(f"unknown weights '{weights}'", "use best or last")
    d = yaml.safe_load((run_dir / "config.yaml").read_text())
    d.pop("config_hash", None)
    if (run_dir / "hpo.json").is_file():  # a tuned run trained with the search's best settings
        d.update(read_json(run_dir / "hpo.json")["config_update"])
    cfg = TrainConfig(**{**d, "pretrained": "false"})  # the weights come from the checkpoint
    rec = read_json(run_dir / "inputs.json")
    c, h, w = rec["input_shape"]
    model = build_model(cfg, c, rec["num_classes"], (h, w), rec["multilabel"])
    tensors, _ = load_checkpoint(run_dir / "checkpoint.safetensors")
    state = prefixed(tensors, "best" if weights == "best" else "model")
    if not state:
        raise UserError(f"'{run_dir}' has no {weights} weights yet", "let the run finish at least one epoch")
    model.load_state_dict(state)
    norm = rec.get("normalisation")
    transform = InputTransform(norm["mean"], norm["std"]) if norm else InputTransform()
    result = read_json(run_dir / "result.json") if (run_dir / "result.json").is_file() else None
    return LoadedRun(model.to(device).eval(), TrainConfig(**d), transform.to(device), rec, result)
