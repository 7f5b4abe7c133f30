"""Sampling from a trained generator: diffusers schedulers, classifier-free guidance, classifier guidance with
the study's noise-conditioned latent classifier, and rejection filtering.

Samplers: ``euler`` (``FlowMatchEulerDiscreteScheduler``) for flow matching; ``ddim`` (``DDIMScheduler``, eta 0)
and ``dpm++`` (``DPMSolverMultistepScheduler``, DPM-Solver++ 2M) for v-prediction — all with the generator's
own forward process.

**Classifier guidance** adds s * grad log p(y | z, sigma) (Dhariwal & Nichol 2021). The guide is a FiLM
noise-conditioned latent classifier (``latentgap train --space latent --noise-cond``) trained on the VP forward
process of the shared schedule and conditioned on sigma; it must come from the generator's autoencoder, fold and
normalisation (both work in the fold's normalised latent coordinates). With g = grad_{z_vp} log p at the VP
point z_vp = alpha x + sigma eps:

* eps-form: eps' = eps - s sigma g;
* v-prediction (z = z_vp): v' = v - s sigma g / alpha;
* flow (z_vp = z_t / S, S = sqrt((1-t)^2 + t^2), sigma = t / S): v' = v - s sigma g / (1 - t)
  (from x0 = z_t - t v, eps = z_t + (1 - t) v at fixed z_t).

**Rejection filtering** keeps a sample when a latent classifier of the same fold (trained on that fold's
training part, never on its test part) gives the intended class probability >= threshold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..errors import UserError
from ..runs import load_checkpoint, prefixed
from ..storage import read_json
from .models import Denoiser, build_denoiser
from ..diffusion.guidance import guidance_shift
from ..diffusion.objectives import VPrediction, build_objective
from ..diffusion.samplers import denoise
from .train import SynthConfig


@dataclass
class Generator:
    """A trained generator (EMA weights by default) with its configuration and inputs record."""

    model: Denoiser
    config: SynthConfig
    inputs: dict  # inputs.json: dataset, fold, splits digest, autoencoder identity, latent shape, normalisation
    run_dir: Path
    objective: Any = field(default=None)

    @property
    def num_classes(self) -> int:
        return int(self.inputs["num_classes"])

    def denormalise(self, z: torch.Tensor) -> torch.Tensor:
        """From the fold's normalised coordinates (the generator's) to the autoencoder's raw latents."""
        n = self.inputs["normalisation"]
        mean = torch.as_tensor(n["mean"], dtype=z.dtype, device=z.device)[None, :, None, None]
        std = torch.as_tensor(n["std"], dtype=z.dtype, device=z.device)[None, :, None, None]
        return z * std + mean


def load_generator(run_dir: str | os.PathLike, device: str | torch.device = "cpu", *, weights: str = "ema") -> Generator:
    """The generator trained in ``run_dir`` by :func:`~latentgap.synth.train.train_generator`.

    Args:
        weights: "ema" (the exponential moving average, what samples are drawn from) or "model" (the raw weights).
    """
    run_dir = Path(run_dir)
    need = [run_dir / n for n in ("config.yaml", "inputs.json", "checkpoint.safetensors")]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        raise UserError(f"'{run_dir}' is not a generator run (missing {', '.join(missing)})",
                        "pass the folder written by `latentgap synth train --out`")
    d = yaml.safe_load((run_dir / "config.yaml").read_text())
    d.pop("config_hash", None)
    cfg = SynthConfig(**d)
    rec = read_json(run_dir / "inputs.json")
    c, h, _ = rec["latent_shape"]
    model = build_denoiser(cfg.backbone, cfg.size, c, h, rec["num_classes"], patch_size=cfg.patch_size)
    tensors, meta = load_checkpoint(run_dir / "checkpoint.safetensors")
    model.load_state_dict(prefixed(tensors, "model"))
    if weights == "ema":
        params = list(model.parameters())
        shadow = [tensors[f"ema.{i}"] for i in range(meta["ema_n"])]
        with torch.no_grad():
            for p, s in zip(params, shadow):
                p.copy_(s)
    elif weights != "model":
        raise UserError(f"unknown weights '{weights}'", "use ema or model")
    obj = build_objective(cfg.objective, logit_mean=cfg.logit_mean, logit_std=cfg.logit_std,
                          min_snr_gamma=cfg.min_snr_gamma)
    if isinstance(obj, VPrediction):
        obj.schedule.to(device)
    return Generator(model.to(device).eval(), cfg, rec, run_dir, obj)


# --------------------------------------------------------------------------- classifiers for guidance / filtering

def check_classifier(run, gen: Generator, purpose: str) -> None:
    """Refuse (one-line UserError) a classifier that does not work in the generator's latent coordinates.

    Args:
        run: a :class:`latentgap.train.LoadedRun`.
        purpose: "guidance" (needs FiLM noise conditioning) or "filter".
    """
    rec, g = run.inputs, gen.inputs
    where = f"{purpose} classifier '{run.config.dataset}' ({rec.get('space')} space, fold {rec.get('fold')})"
    if rec.get("space") != "latent":
        raise UserError(f"the {where} is not a latent-space classifier",
                        "pass a run trained with --space latent on the generator's autoencoder and fold")
    for key, what in (("dataset_fingerprint", "dataset"), ("autoencoder_sha256", "autoencoder"),
                      ("fold", "fold"), ("splits_digest", "fold assignment")):
        if rec.get(key) != g.get(key):
            raise UserError(f"the {where} was trained for another {what} than the generator "
                            f"({rec.get(key)!r} vs {g.get(key)!r})",
                            "train the classifier on the generator's dataset, autoencoder and fold (same --folds, "
                            "--split-seed)")
    have, want = rec.get("normalisation") or {}, g.get("normalisation") or {}
    same = [np.shape(have.get(k, [])) == np.shape(want.get(k, []))
            and np.allclose(have.get(k, []), want.get(k, []), atol=1e-6) for k in ("mean", "std")]
    if not all(same):
        raise UserError(f"the {where} normalises latents differently from the generator",
                        "use a classifier whose run normalises with the same fold's training statistics")
    if purpose == "guidance":
        if not run.config.noise_cond:
            raise UserError(f"the {where} has no noise conditioning and cannot read noisy latents",
                            "train the guide with --noise-cond (FiLM on the noise level)")
        _check_forward_process(run.config, gen, where)


def _check_forward_process(cfg, gen: Generator, where: str) -> None:
    """The guide must have been trained on the noise the sampler produces: the generator's VP schedule for
    v-prediction, and for flow matching a schedule that reaches (almost) pure noise; over the whole range."""
    from ..train.build import build_noise

    noise = build_noise(cfg, torch.device("cpu"))  # the guide's forward process, as its training built it
    if noise.max_fraction < 1:
        raise UserError(f"the {where} saw only the first {noise.max_fraction:.0%} of its noise schedule, but the "
                        "sampler starts from pure noise", "train the guide with noise_max_fraction 1 (the default)")
    theirs = noise.schedule
    if gen.config.objective == "vpred":
        ours = gen.objective.schedule
        if theirs.num_train_timesteps != ours.num_train_timesteps or not torch.allclose(theirs.abar, ours.abar.cpu()):
            raise UserError(f"the {where} was trained on another noise schedule than the generator "
                            f"({cfg.noise_schedule} {cfg.noise_beta_start}..{cfg.noise_beta_end}, "
                            f"{cfg.noise_timesteps} steps)",
                            "train the guide with the generator's schedule (the defaults: scaled_linear "
                            "0.00085..0.012, 1000 steps)")
        return
    sigma_max = float((1 - theirs.abar[-1]).sqrt())
    if sigma_max < 0.99:
        raise UserError(f"the {where} never saw latents noisier than sigma = {sigma_max:.3f}, "
                        "but flow sampling starts from pure noise (sigma = 1)",
                        "train the guide with a schedule that ends near pure noise (the default scaled_linear does)")


def _log_prob_grad(run, z_vp: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """grad_z log p(y | z, sigma) of a FiLM classifier at VP latents z (normalised coordinates)."""
    with torch.enable_grad():
        z = z_vp.detach().float().requires_grad_(True)
        logits = run.model(z, sigma.float())  # the guide's coordinates are the generator's (checked)
        logp = torch.log_softmax(logits.float(), dim=1).gather(1, labels.view(-1, 1)).sum()
        (g,) = torch.autograd.grad(logp, z)
    return g


# --------------------------------------------------------------------------- the sampler

@torch.no_grad()
def sample(gen: Generator, labels: torch.Tensor, *, steps: int = 50, sampler: str = "auto", cfg_scale: float = 1.0,
           guide=None, guide_scale: float = 0.0, generator: torch.Generator | None = None,
           batch_size: int = 256) -> torch.Tensor:
    """Latents (N, c, h, w) in the fold's normalised coordinates for class ``labels`` (N,).

    Args:
        steps: sampler steps; sampler: "auto" (euler for flow, ddim for vpred), "euler", "ddim" or "dpm++".
        cfg_scale: classifier-free guidance scale w (1 = conditional only, no CFG): u + w (c - u).
        guide: a :class:`~latentgap.train.LoadedRun` noise-conditioned latent classifier of the generator's fold
            (checked with :func:`check_classifier`); guide_scale: s.
        generator: CPU generator of the initial noise (reproducible on any device).
    """
    k = gen.num_classes
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise UserError(f"class {int(labels.max())} is not a class of the generator (it knows 0..{k - 1})",
                        "ask only for the classes of the generator's dataset")
    if cfg_scale != 1.0 and gen.config.label_dropout <= 0:
        raise UserError("classifier-free guidance needs a generator trained with label dropout",
                        "use --cfg 1, or train the generator with --label-dropout > 0 (e.g. 0.1)")
    if guide is not None and guide_scale:
        check_classifier(guide, gen, "guidance")
    g = generator or torch.Generator().manual_seed(0)
    c, h, w = gen.inputs["latent_shape"]
    dev = next(gen.model.parameters()).device
    out = []
    for lo in range(0, len(labels), batch_size):
        y = labels[lo:lo + batch_size].to(dev)
        z = torch.randn((len(y), c, h, w), generator=g).to(dev)

        def predict(z, tb, y=y):
            if cfg_scale != 1.0:
                both = gen.model(torch.cat([z, z]), torch.cat([tb, tb]), torch.cat([y, torch.full_like(y, k)]))
                cond, unc = both.chunk(2)
                pred = unc + cfg_scale * (cond - unc)
            else:
                pred = gen.model(z, tb, y)
            if guide is not None and guide_scale:
                pred = pred + guide_scale * _guidance_shift(gen, guide, z, tb, y)
            return pred

        z = denoise(gen.config.objective, z, predict, steps=steps, sampler=sampler)
        out.append(z.float().cpu())
    return torch.cat(out) if out else torch.empty(0, c, h, w)


def _guidance_shift(gen: Generator, guide, z: torch.Tensor, model_time: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The change of the model's prediction per unit guidance scale (``latentgap.diffusion.guidance``)."""
    return guidance_shift(gen.objective, z, model_time, lambda z_vp, sigma: _log_prob_grad(guide, z_vp, sigma, y))


# --------------------------------------------------------------------------- plans and filtering

def plan_counts(gen: Generator, *, per_class: int | None = None, fill: bool = False, ratio: float | None = None,
                classes: list[int] | None = None) -> np.ndarray:
    """Synthetic samples per class: ``per_class`` each, ``fill`` every class up to the majority count of the
    fold's training part, or ``ratio`` synthetic per real image of each class (e.g. 1.0 doubles each class).
    ``classes`` restricts the plan (others get 0)."""
    k = gen.num_classes
    real = np.asarray(gen.inputs["class_counts"], dtype=np.int64)
    chosen = [per_class is not None, fill, ratio is not None]
    if sum(chosen) != 1:
        raise UserError("give exactly one plan: --per-class N, --fill or --ratio R", "e.g. --fill (tail classes up "
                        "to the majority count)")
    if per_class is not None:
        n = np.full(k, int(per_class))
    elif fill:
        n = real.max() - real
    else:
        n = np.rint(float(ratio) * real).astype(np.int64)
    if classes is not None:
        bad = [c for c in classes if not 0 <= c < k]
        if bad:
            raise UserError(f"class {bad[0]} is not a class of the generator (it knows 0..{k - 1}: "
                            f"{', '.join(gen.inputs['class_names'])})", "ask only for the generator's classes")
        n = np.where(np.isin(np.arange(k), classes), n, 0)
    return n.astype(np.int64)


def sample_plan(gen: Generator, counts: np.ndarray, *, filter_run=None, threshold: float = 0.5,
                max_tries: int = 20, seed: int = 0, **kw) -> dict[str, Any]:
    """Sample ``counts[c]`` latents of each class c, keeping only those the filter accepts (if given).

    Returns dict: latents (N, c, h, w) normalised, labels (N,), attempts (K,), accepted (K,), acceptance (K,),
    short (classes that did not reach their count within ``max_tries`` x count draws).
    """
    if filter_run is not None:
        check_classifier(filter_run, gen, "filter")
    g = torch.Generator().manual_seed(seed)
    k = gen.num_classes
    zs, ys = [], []
    attempts, accepted = np.zeros(k, np.int64), np.zeros(k, np.int64)
    for c in range(k):
        need, budget = int(counts[c]), int(max_tries * counts[c])
        while need > 0 and attempts[c] < budget:
            n = min(max(need, 8) if filter_run is not None else need, budget - attempts[c])
            z = sample(gen, torch.full((n,), c), generator=g, **kw)
            attempts[c] += n
            if filter_run is not None:
                p = filter_run.predict_proba(gen.denormalise(z))[:, c].cpu().numpy()
                z = z[torch.as_tensor(p >= threshold)]
            z = z[:need]
            zs.append(z)
            ys.append(torch.full((len(z),), c))
            accepted[c] += len(z)
            need -= len(z)
    lat = torch.cat(zs) if zs else torch.empty(0, *gen.inputs["latent_shape"])
    return {"latents": lat, "labels": torch.cat(ys) if ys else torch.empty(0, dtype=torch.long),
            "attempts": attempts, "accepted": accepted,
            "acceptance": np.where(attempts > 0, accepted / np.maximum(attempts, 1), np.nan),
            "short": [c for c in range(k) if accepted[c] < counts[c]]}
