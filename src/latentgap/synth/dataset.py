"""A synthetic dataset: what ``latentgap synth sample`` writes, and how it is opened again.

Layout of the folder (built in ``<out>.partial/`` and renamed when complete; an existing folder is never
overwritten)::

    synthetic.json   the manifest: ``source: synthetic``, the generator run and its config hash, dataset, fold,
                     splits digest, autoencoder (+ weights sha256), sampler, steps, CFG scale, guide and filter
                     (run folders, scale, threshold), seed, counts, attempts and acceptance per class
    latents.npy      (N, c, h, w) float32 raw latents (the autoencoder's scale, not the fold's normalisation)
    images.npz       ``train_images`` (N, H, W[, C]) uint8 decoded images, ``train_labels`` (N, 1), class names

``open_dataset(folder)`` opens it like any dataset (every command that takes ``--data`` accepts it) but marks
it ``synthetic``: it has no test part, and :func:`latentgap.data.make_splits` refuses to split it, so synthetic
images can never be mistaken for real data or become the test part of anything.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.synthetic import MANIFEST, check_image_shape
from ..errors import UserError
from ..runs import code_version
from ..storage import atomic_write_json

def write_synthetic(out: str | os.PathLike, gen, result: dict[str, Any], settings: dict[str, Any], *,
                    device: str | torch.device = "cpu", batch_size: int = 64) -> Path:
    """Decode ``result`` of :func:`~latentgap.synth.sample.sample_plan` with the generator's autoencoder and
    write the synthetic dataset folder ``out`` (see the module docstring). Returns ``out``."""
    from ..autoencoders import create_autoencoder, restore_channels
    from ..data import open_dataset, to_uint8

    out = Path(out)
    if out.exists():
        raise UserError(f"'{out}' already exists; a synthetic dataset is never overwritten", "pass a new --out folder")
    cfg = gen.config
    real = open_dataset(cfg.dataset, resize=cfg.resize)
    ae = create_autoencoder(cfg.autoencoder, device=device)
    sha = getattr(ae.info, "weights_sha256", None)
    if sha != gen.inputs.get("autoencoder_sha256"):
        raise UserError(f"autoencoder '{cfg.autoencoder}' now has other weights ({str(sha)[:12]}) than the generator "
                        f"was trained on ({str(gen.inputs.get('autoencoder_sha256'))[:12]})",
                        "decode with the autoencoder the generator's cache was made with")
    raw = gen.denormalise(result["latents"].float())
    images = []
    with torch.inference_mode():
        for lo in range(0, len(raw), batch_size):
            x = ae.decode(raw[lo:lo + batch_size].to(device)).float().clamp(0, 1).cpu()
            images.append(to_uint8(restore_channels(x, real.channels)))
    h, w = real.image_size
    imgs = np.concatenate(images) if images else np.zeros((0, h, w, real.channels), np.uint8)
    if real.channels == 1:
        imgs = imgs[..., 0]
    labels = result["labels"].numpy().astype(np.int64).reshape(-1, 1)
    part = out.with_name(out.name + ".partial")
    if part.exists():
        shutil.rmtree(part)
    part.mkdir(parents=True)
    np.save(part / "latents.npy", raw.numpy().astype(np.float32))
    np.savez(part / "images.npz", train_images=imgs, train_labels=labels, class_names=np.asarray(real.class_names))
    counts = np.bincount(labels.ravel(), minlength=gen.num_classes)
    atomic_write_json(part / MANIFEST, {
        "source": "synthetic", "generator": str(gen.run_dir), "generator_config_hash": cfg.config_hash(),
        "dataset": real.name, "dataset_fingerprint": gen.inputs["dataset_fingerprint"], "fold": gen.inputs["fold"],
        "splits_digest": gen.inputs["splits_digest"], "autoencoder": gen.inputs["autoencoder"],
        "autoencoder_sha256": gen.inputs["autoencoder_sha256"], "objective": cfg.objective, **settings,
        "n": int(len(labels)), "counts": counts.tolist(), "attempts": result["attempts"].tolist(),
        "accepted": result["accepted"].tolist(),
        "acceptance": [None if np.isnan(a) else float(a) for a in result["acceptance"]],
        "short_classes": result["short"], "class_names": list(real.class_names), "image_size": [h, w],
        "channels": int(real.channels), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "code_version": code_version()})
    os.replace(part, out)
    return out


def import_external(out: str | os.PathLike, real, external, *, fold: int, splits) -> Path:
    """Write an external synthetic image set (a folder with one sub-folder per class, a CSV manifest or an .npz) as
    a synthetic dataset of ``real``'s fold ``fold``, so that it trains utility cells like latentgap's own.

    Labels map to the real dataset's classes by name (sub-folder / column names equal to class names) or by id
    (names "0", "1", ...). Images must have the real data's size and channels (open the set with ``--resize``).
    """
    out = Path(out)
    if out.exists():
        raise UserError(f"'{out}' already exists; a synthetic dataset is never overwritten", "pass a new --out folder")
    if getattr(external, "multilabel", False):
        raise UserError("external synthetic labels must be one class per image", "give single-label synthetic data")
    check_image_shape(external, real)
    names, real_names = [str(c) for c in external.class_names], [str(c) for c in real.class_names]
    if all(n in real_names for n in names):
        mapping = [real_names.index(n) for n in names]
    elif all(n.isdigit() and int(n) < len(real_names) for n in names):
        mapping = [int(n) for n in names]
    else:
        unknown = next(n for n in names if n not in real_names)
        raise UserError(f"synthetic class '{unknown}' is not a class of {real.name} ({', '.join(real_names)})",
                        "name the class folders (or CSV labels) after the real classes, or by their ids 0..K-1")
    y = np.asarray([mapping[int(v)] for v in np.asarray(external.labels).reshape(-1)], dtype=np.int64)
    imgs = external.load_uint8(np.arange(len(external)))
    if real.channels == 1 and imgs.ndim == 4:
        imgs = imgs[..., 0]
    part = out.with_name(out.name + ".partial")
    if part.exists():
        shutil.rmtree(part)
    part.mkdir(parents=True)
    np.savez(part / "images.npz", train_images=imgs, train_labels=y.reshape(-1, 1), class_names=np.asarray(real_names))
    counts = np.bincount(y, minlength=real.num_classes)
    atomic_write_json(part / MANIFEST, {
        "source": "synthetic", "external": str(getattr(external, "root", getattr(external, "name", ""))),
        "generator": None, "dataset": real.name, "dataset_fingerprint": real.fingerprint(), "fold": fold,
        "splits_digest": splits.digest(), "autoencoder": None, "autoencoder_sha256": None, "n": int(len(y)),
        "counts": counts.tolist(), "requested": counts.tolist(), "attempts": counts.tolist(), "accepted": counts.tolist(),
        "acceptance": [None] * real.num_classes, "short_classes": [], "cfg_scale": 1.0, "guide": None, "guide_scale": 0.0,
        "filter": None, "threshold": None, "sampler": None, "steps": None, "class_names": real_names,
        "image_size": list(real.image_size), "channels": int(real.channels),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "code_version": code_version()})
    os.replace(part, out)
    return out
