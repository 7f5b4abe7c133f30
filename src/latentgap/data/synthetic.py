"""Opening a synthetic dataset folder (written by ``latentgap synth sample``; see ``latentgap.synth.dataset``).

It opens like any dataset but is marked ``synthetic``: :func:`latentgap.data.make_splits` refuses to split it,
so synthetic images can never be the test part of anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from ..storage import read_json

MANIFEST = "synthetic.json"


def is_synthetic_folder(path: str | os.PathLike) -> bool:
    return (Path(path) / MANIFEST).is_file()


def open_synthetic(path: str | os.PathLike, resize: int | None = None):
    """The synthetic dataset in ``path`` (an ``NpzDataset`` with ``synthetic = True`` and its manifest)."""
    from .npz import NpzDataset

    path = Path(path)
    manifest = read_json(path / MANIFEST)
    if manifest.get("source") != "synthetic" or not (path / "images.npz").is_file():
        raise UserError(f"'{path}' has a {MANIFEST} but is not a complete synthetic dataset",
                        "pass a folder written by `latentgap synth sample`")
    ds = NpzDataset(path / "images.npz", resize, name=f"synthetic-{manifest['dataset']}-fold{manifest['fold']}")
    ds.synthetic = True
    ds.synthetic_manifest = manifest
    ds.synthetic_path = path
    ds.source = (f"synthetic: sampled by the generator {manifest['generator']} of {manifest['dataset']} fold "
                 f"{manifest['fold']} (training data only)")
    return ds


def check_image_shape(synthetic, real) -> None:
    """UserError unless ``synthetic`` images have ``real``'s size and channels (every use of a synthetic set next
    to real data: training parts, evaluation, importing an external set)."""
    if tuple(synthetic.image_size) != tuple(real.image_size) or synthetic.channels != real.channels:
        (sh, sw), (rh, rw) = synthetic.image_size, real.image_size
        raise UserError(f"synthetic images are {sh}x{sw}x{synthetic.channels}, the real ones {rh}x{rw}x{real.channels}",
                        "give synthetic images the real data's size and channels (sample from the real data's "
                        "generator, or pass --resize to open both at one side)")

