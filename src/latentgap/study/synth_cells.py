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


def _ae(pair: dict, inputs: Inputs) -> str:
    return str(inputs.path(pair["ae_spec"])) if pair["ae_in_study"] else pair["ae_spec"]


@register_task("synth-train", row_kind="generator")
def synth_train_task(cfg: dict[str, Any], run_dir: Path, inputs: Inputs) -> dict[str, Any]:
    from ..data import open_dataset
    from ..latents import open_cache
    from ..synth.train import SynthConfig, train_generator
    from ..train import TrainInputs
    from ..train.run import open_splits

    c, pair = cfg["cache"], inputs["pair"]
    scfg = SynthConfig(**cfg["train"], dataset=cfg["dataset"], autoencoder=_ae(pair, inputs), fold=cfg["fold"],
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
