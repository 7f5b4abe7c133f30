"""The task kinds of latent diffusion synthesis in a study (registered; see ``tasks.py`` and docs/synthesis.md).

* ``synth-train`` — one generator per dataset x autoencoder x fold, on the fold's training part of the pair's
  cache (``latentgap.synth.train.train_generator``; resumes from its checkpoint like a classifier cell);
* ``synth-sample`` — one synthetic dataset per generator (``latentgap.synth.sample``), guided by the study's
  noise-conditioned latent cell of the fold and / or filtered by its plain latent cell when the spec asks.

Both open the cache and folds from the ``prepare`` row, never the autoencoder (sampling decodes with it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .spec import resize_for
from .tasks import Inputs, register_task


@register_task("synth-train", row_kind="generator")
def synth_train_task(cfg: dict[str, Any], run_dir: Path, inputs: Inputs) -> dict[str, Any]:
    from ..data import open_dataset
    from ..latents import open_cache
    from ..synth.train import SynthConfig, train_generator
    from ..train import TrainInputs
    from ..train.run import open_splits

    c, pair = cfg["cache"], inputs["pair"]
    scfg = SynthConfig(**cfg["train"], dataset=cfg["dataset"], autoencoder=inputs.pair_autoencoder(), fold=cfg["fold"],
                       k=cfg["k"], split_seed=cfg["split_seed"], val_fraction=cfg["val_fraction"],
                       views=c.get("views", ["identity"]), resize=resize_for(c, cfg["dataset"]), dtype=c["dtype"],
                       grey_to_rgb=c["grey_to_rgb"], device=cfg["device"], root=str(inputs.root))
    ds = open_dataset(scfg.dataset, resize=scfg.resize)
    ready = TrainInputs(ds, open_splits(scfg, ds, inputs.root), open_cache(inputs.path(pair["cache_dir"])), inputs.root)
    row = dict(train_generator(scfg, run_dir, ready, progress=False))
    row.pop("loss_curve", None)
    row["run_dir"] = str(run_dir.relative_to(inputs.root))
    return row


@register_task("synth-sample", row_kind="synthetic")
def synth_sample_task(cfg: dict[str, Any], run_dir: Path, inputs: Inputs) -> dict[str, Any]:
    from ..storage import read_json
    from ..synth.dataset import MANIFEST, write_synthetic
    from ..synth.sample import load_generator, plan_counts, sample_plan
    from ..train import load_run

    s = cfg["sample"]
    out = run_dir / "data"
    if not (out / MANIFEST).is_file():  # a finished folder whose row was not written yet is kept, not resampled
        gen = load_generator(inputs.path(inputs["generator"]["run_dir"]), cfg["device"] if cfg["device"] != "auto" else "cpu")
        guide = load_run(inputs.path(inputs["guide"]["run_dir"])) if "guide" in inputs else None
        filt = load_run(inputs.path(inputs["filter"]["run_dir"])) if "filter" in inputs else None
        counts = plan_counts(gen, per_class=s["per_class"], fill=s["fill"], ratio=s["ratio"])
        res = sample_plan(gen, counts, filter_run=filt, threshold=s["threshold"], max_tries=s["max_tries"],
                          seed=s["seed"], steps=s["steps"], sampler=s["sampler"], cfg_scale=s["cfg_scale"],
                          guide=guide, guide_scale=s["guide_scale"] if guide is not None else 0.0)
        settings = {**{k: s[k] for k in ("sampler", "steps", "cfg_scale", "seed")},
                    "guide": inputs["guide"]["run_dir"] if guide is not None else None,
                    "guide_scale": s["guide_scale"] if guide is not None else 0.0,
                    "filter": inputs["filter"]["run_dir"] if filt is not None else None,
                    "threshold": s["threshold"] if filt is not None else None,
                    "plan": {k: s[k] for k in ("fill", "per_class", "ratio")}, "requested": counts.tolist()}
        write_synthetic(out, gen, res, settings)
    man = read_json(out / MANIFEST)
    return {"dataset": man["dataset"], "fold": man["fold"], "n": man["n"], "counts": man["counts"],
            "requested": man["requested"], "attempts": man["attempts"], "acceptance": man["acceptance"],
            "short_classes": man["short_classes"], "cfg_scale": man["cfg_scale"], "guided": man["guide"] is not None,
            "guide_scale": man["guide_scale"], "filtered": man["filter"] is not None, "threshold": man["threshold"],
            "sampler": man["sampler"], "steps": man["steps"], "synthetic_dir": str(out.relative_to(inputs.root)),
            "source": "synthetic"}


@register_task("synth-eval", row_kind="synth-eval")
def synth_eval_task(cfg: dict[str, Any], run_dir: Path, inputs: Inputs) -> dict[str, Any]:
    """Fidelity (random-conv and image-classifier features, overall and per class) and privacy (copies in pixel,
    feature and latent space; membership inference against the generator) of one fold's synthetic dataset."""
    import numpy as np
    import torch

    from ..data import load_or_make_splits, open_dataset
    from ..latents import open_cache
    from ..latents.spaces import NpyRows
    from ..storage import atomic_write_bytes
    from ..synth.evaluate import evaluate_synthetic
    from ..synth.fidelity import ClassifierFeatures, RandomConvFeatures
    from ..synth.sample import load_generator
    from ..train import load_run
    from ..workspace import splits_path

    c = cfg["cache"]
    real = open_dataset(cfg["dataset"], resize=resize_for(c, cfg["dataset"]))
    syn = open_dataset(str(inputs.path(inputs["synthetic"]["synthetic_dir"])))
    gen = load_generator(inputs.path(inputs["generator"]["run_dir"]))
    fold = int(gen.inputs["fold"])
    splits = load_or_make_splits(splits_path(inputs.root, real, "kfold", cfg["k"], cfg["split_seed"]), real,
                                 protocol="kfold", k=cfg["k"], seed=cfg["split_seed"], val_fraction=cfg["val_fraction"])
    tr = np.asarray(splits.folds[fold].train, dtype=np.int64)
    te = np.asarray(splits.folds[fold].test, dtype=np.int64)
    features = {"random": RandomConvFeatures(real.channels, seed=0)}
    if "classifier" in inputs:
        features["classifier"] = ClassifierFeatures(load_run(inputs.path(inputs["classifier"]["run_dir"])))
    cache = open_cache(inputs.path(inputs["pair"]["cache_dir"]))
    mean, std = cache.fold_stats(splits, fold)
    norm = lambda z: (torch.as_tensor(np.asarray(z, np.float32)) - torch.as_tensor(mean, dtype=torch.float32)[None, :, None, None]) \
        / torch.as_tensor(std, dtype=torch.float32)[None, :, None, None]  # noqa: E731
    rows = NpyRows(cache.latents_path())
    z_tr, z_te = norm(rows(tr)), norm(rows(te))
    z_syn = norm(np.load(inputs.path(inputs["synthetic"]["synthetic_dir"]) / "latents.npy")).numpy()
    row = evaluate_synthetic(real, tr, te, syn, features, generator=gen, train_latents=z_tr, test_latents=z_te,
                             syn_latents=z_syn, quantile=cfg["quantile"])
    atomic_write_bytes(run_dir / "gallery.png", row.pop("gallery"))
    row["gallery"] = str((run_dir / "gallery.png").relative_to(inputs.root))
    for name, f in row["fidelity"].items():  # the overall figures as flat columns for the tables
        for key in ("fd", "fd_reliable", "kid_mean", "kid_std", "precision", "recall", "density", "coverage", "lead"):
            row[f"{key}_{name}"] = f["overall"][key]
    row["fold"] = fold
    return row
