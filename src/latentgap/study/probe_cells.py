"""The ``probe`` task kind: `latentgap probe`'s scores for one dataset x autoencoder of a study, on the pair's own
latent cache and the study's folds (see ``latentgap.probe`` and docs/probe.md). The row (kind ``probe``) holds every
score as ``probe_<name>``, the seconds per score family and ``probe_seconds`` in all, so the report can set the
scores beside the measured gap and their cost beside the cells'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .spec import resize_for
from .tasks import Inputs, register_task


@register_task("probe", row_kind="probe")
def probe_task(cfg: dict[str, Any], run_dir: Path, inputs: Inputs) -> dict[str, Any]:
    import time

    from ..autoencoders import create_autoencoder
    from ..data import load_or_make_splits, open_dataset
    from ..device import resolve_device
    from ..latents import open_cache
    from ..probe import probe_scores
    from ..workspace import splits_path

    t0 = time.perf_counter()
    pair, c = inputs["pair"], cfg["cache"]
    ds = open_dataset(cfg["dataset"], resize=resize_for(c, cfg["dataset"]))
    cache = open_cache(inputs.path(pair["cache_dir"]))
    dev = resolve_device(cfg["device"])
    ae = create_autoencoder(inputs.pair_autoencoder(), device=dev)
    k, seed = cfg["k"], cfg["split_seed"]
    splits = load_or_make_splits(splits_path(inputs.root, ds, "kfold", k, seed), ds, protocol="kfold", k=k,
                                 seed=seed, val_fraction=cfg["val_fraction"])
    folds = None if cfg["fold"] is None else [cfg["fold"]]
    row = probe_scores(ds, ae, cache, splits, folds=folds, images=cfg["images"], seed=0,
                       grey_to_rgb=c["grey_to_rgb"], batch_size=c["batch_size"], device=dev)
    out = {f"probe_{name}": v for name, v in row["scores"].items()}
    out.update({f"probe_seconds_{fam}": v for fam, v in row["seconds"].items()})
    out.update(probe_seconds=time.perf_counter() - t0, probe_images=row["images"], probe_folds=folds or "all",
               latent_shape=row["latent_shape"], image_size=row["image_size"], probe_notes=row["notes"])
    return out
