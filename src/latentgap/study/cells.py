"""The task kinds of a classification study (registered; see ``tasks.py``).

* ``train-autoencoder`` — train the built-in autoencoder once, when the spec asks for it;
* ``prepare`` — one per autoencoder x dataset: build the latent cache once (the only task that runs the
  autoencoder), write a fidelity row and a file of example originals / reconstructions for the report;
* ``classifier`` — one classifier training, dataset x autoencoder x space x variant x fold x seed -> one result
  row. It opens the cache its ``prepare`` input recorded and never loads the autoencoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..storage import atomic_write
from .spec import resize_for
from .tasks import Inputs, register_task


# --------------------------------------------------------------------------- real training

@register_task("train-autoencoder", row_kind="autoencoder")
def train_autoencoder_task(cfg: dict[str, Any], out_dir: Path, inputs: Inputs) -> dict[str, Any]:
    """Train the built-in autoencoder on ``cfg["data"]`` into ``out_dir`` (resumes from its checkpoints)."""
    from ..autoencoders.train import train_autoencoder
    from ..data import open_dataset
    from ..storage import read_json

    indices = None
    if not (out_dir / "model").is_dir():  # a killed training resumes; a finished one is never redone
        ds = open_dataset(cfg["data"], resize=cfg["resize"])
        if cfg.get("fold"):  # one autoencoder per fold: that fold's training part only (never val / test)
            indices = _fold_part(ds, cfg["fold"], inputs.root, "train")
        t = {k: v for k, v in cfg["train"].items() if k != "data"}
        train_autoencoder(ds, out_dir, device=cfg["device"], indices=indices, **t)
    rec = read_json(out_dir / "training.json")
    return {"steps": rec["settings"]["steps"], "ae_train_seconds": rec["train_seconds"],
            "train_sample_psnr_db": rec["train_sample_psnr_db"], "scaling_factor": rec.get("scaling_factor"),
            "n_train_images": rec.get("dataset", {}).get("n"), "final_loss": rec["history"][-1][1],
            "weights_dir": str(out_dir.relative_to(inputs.root)), "settings": cfg["train"]}


def _fold_part(ds, fold_cfg: dict[str, Any], root: Path, part: str) -> np.ndarray:
    """Indices of ``part`` of a fold of the study's own splits (the file every cell of the dataset uses)."""
    from ..data import load_or_make_splits
    from ..workspace import splits_path

    k, seed = fold_cfg["k"], fold_cfg["split_seed"]
    splits = load_or_make_splits(splits_path(root, ds, "kfold", k, seed), ds, protocol="kfold", k=k, seed=seed,
                                 val_fraction=fold_cfg["val_fraction"])
    return np.asarray(getattr(splits.folds[fold_cfg["fold"]], part), dtype=np.int64)


def _ae_spec(cfg: dict[str, Any], inputs: Inputs) -> str:
    """What ``create_autoencoder`` loads: the weights folder of the study's own training, or the entry's
    name / hub id / path (never its label)."""
    if "autoencoder" in inputs:
        return str(inputs.path(inputs["autoencoder"]["weights_dir"]))
    return cfg["ae_name"]


@register_task("prepare", row_kind="fidelity")
def prepare_pair(cfg: dict[str, Any], out_dir: Path, inputs: Inputs) -> dict[str, Any]:
    """Build the latent cache of one dataset x autoencoder and return its fidelity row; save examples."""
    from ..data import open_dataset
    from ..latents import ensure_cache
    from ..latents.fidelity import summarize_fidelity

    c = cfg["cache"]
    side = resize_for(c, cfg["dataset"])
    ds = open_dataset(cfg["dataset"], resize=side)
    ae_spec = _ae_spec(cfg, inputs)
    cache = ensure_cache(ds, ae_spec, inputs.root, resize=side, grey_to_rgb=c["grey_to_rgb"],
                         dtype=c["dtype"], batch_size=c["batch_size"], device=cfg["device"], progress=False,
                         views=c.get("views"))
    fold = (cfg.get("ae_train") or {}).get("fold")
    if fold:  # a per-fold autoencoder: fidelity on the images it never saw, the fold's test part
        row = summarize_fidelity(cache, ds, split=f"fold {fold['fold']} test",
                                 indices=_fold_part(ds, fold, inputs.root, "test"))
    else:
        row = summarize_fidelity(cache, ds, split="all")
    row["ae_in_sample"] = bool(cfg.get("ae_in_sample"))  # trained on every image, test images included
    row["ae_fold"] = fold["fold"] if fold else None  # the fold whose training part the autoencoder saw
    idx = example_indices(np.asarray(ds.labels), cfg["examples"])
    if len(idx):
        save_examples(out_dir / "examples.npz", ds.load_uint8(idx), np.asarray(cache.recon[idx]),
                      np.asarray(ds.labels)[idx], cfg)
    # rows never hold absolute paths: what cells need is relative to the study folder
    row["cache_dir"] = str(Path(cache.path).relative_to(inputs.root))
    row["ae_in_study"] = "autoencoder" in inputs
    row["ae_spec"] = str(Path(ae_spec).relative_to(inputs.root)) if row["ae_in_study"] else ae_spec
    return row


@register_task("classifier", row_kind="result")
def train_cell(cfg: dict[str, Any], run_dir: Path, inputs: Inputs) -> dict[str, Any]:
    """Train one classifier with ``latentgap.train.run_training`` on ready inputs and return its result row.

    The cache comes from the ``pair`` input's row; the autoencoder is named in the config (its identity is part
    of the result) but never loaded.
    """
    from ..data import open_dataset
    from ..latents import open_cache
    from ..train import TrainConfig, TrainInputs, run_training
    from ..train.run import open_splits

    c = cfg["cache"]
    pair = inputs.get("pair")
    extra = {}
    if "teacher" in inputs:  # the study's own recon cell of this fold and seed teaches the distilled cell
        extra["distill_teacher"] = str(inputs.path(inputs["teacher"]["run_dir"]))
    if "synthetic" in inputs:  # a utility cell: the fold's synthetic dataset is (part of) the training data
        extra["synthetic"] = str(inputs.path(inputs["synthetic"]["synthetic_dir"]))
    ae = inputs.pair_autoencoder() if pair is not None else None
    cache = open_cache(inputs.path(pair["cache_dir"])) if pair is not None else None
    if cfg["variant"] == "matched":  # a patch stem of the autoencoder's factor: images reach the latent grid
        extra["stem_patch"] = _latent_factor(cache)
    values = {**cfg["train"], **extra, "dataset": cfg["dataset"], "space": cfg["space"], "variant": cfg["variant"],
              "autoencoder": None if cfg["space"] == "image" else ae, "fold": cfg["fold"],
              "seed": cfg["seed"], "k": cfg["k"], "split_seed": cfg["split_seed"], "val_fraction": cfg["val_fraction"],
              "resize": resize_for(c, cfg["dataset"]), "grey_to_rgb": c["grey_to_rgb"], "dtype": c["dtype"],
              "cache_batch_size": c["batch_size"], "device": cfg["device"], "views": c.get("views", ["identity"]),
              # caches and splits.json live in the study folder, shared by every cell of a dataset
              "root": str(inputs.root)}
    tcfg = TrainConfig(**values).resolved()
    ds = open_dataset(tcfg.dataset, resize=tcfg.resize)
    ready = TrainInputs(ds, open_splits(tcfg, ds, inputs.root), cache, inputs.root)
    row = dict(run_training(tcfg, run_dir, ready))
    if pair is not None:
        row["ae_in_sample"] = bool(pair.get("ae_in_sample", False))
    return row


def _latent_factor(cache) -> int:
    """Image side / latent side of a cache (the autoencoder's effective downsampling, patching included)."""
    from ..errors import UserError

    (h, w), (_, lh, lw) = cache.manifest["image_size"], cache.latent_shape
    if h % lh or w % lw or h // lh != w // lw:
        raise UserError(f"latent grid {lh}x{lw} is not an integer downsampling of the {h}x{w} images",
                        "the architecture-matched control needs a whole downsampling factor; set matched_control: false")
    return h // lh


def example_indices(labels: np.ndarray, n: int) -> np.ndarray:
    """Up to ``n`` indices, cycling over classes (first unused sample of each class in turn)."""
    y = labels if labels.ndim == 1 else labels.argmax(1)
    per_class = [list(np.flatnonzero(y == c)) for c in np.unique(y)]
    out: list[int] = []
    while len(out) < n and any(per_class):
        for lst in per_class:
            if lst and len(out) < n:
                out.append(int(lst.pop(0)))
    return np.array(sorted(out), dtype=np.int64)


def save_examples(path: Path, original: np.ndarray, recon: np.ndarray, labels: np.ndarray, cfg: dict) -> None:
    """Examples for the report figure: uint8 (B, H, W, C) originals and reconstructions."""
    def write(p: Path) -> None:
        with open(p, "wb") as f:  # a file object: np.savez would append ".npz" to the temporary name
            np.savez_compressed(f, original=original, recon=recon, labels=labels,
                                dataset=cfg["dataset"], autoencoder=cfg["autoencoder"])

    atomic_write(path, write)
