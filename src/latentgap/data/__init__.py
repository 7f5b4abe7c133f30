"""Datasets, the phantom generator and folds (docs/architecture.md, "Datasets" and "Splits").

>>> ds = open_dataset("phantom:n=2000,size=32,feature=coarse")
>>> x = ds.load(np.arange(8))                       # float32 (8, 1, 32, 32) in [0, 1]
>>> splits = load_or_make_splits("splits.json", ds)  # 5 stratified folds, reused by every stage
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from ..storage import shared_data_dir
from .base import ImageDataset, check_resize, to_float, to_uint8
from .splits import Fold, Splits, load_or_make_splits, make_splits

__all__ = ["ImageDataset", "open_dataset", "check_dataset_name", "to_float", "to_uint8", "make_splits", "load_or_make_splits", "Splits",
           "Fold", "SPEC_HELP"]

SPEC_HELP = ("phantom[:n=..,size=..,feature=coarse|intensity|fine,classes=..,imbalance=..,channels=1|3,seed=..,"
             "multilabel=0|1,patients=..], a MedMNIST name (dermamnist, pneumoniamnist_64, ...), a shared file name "
             "(isic_skin8_64, busi_128, ...), or a path to a .npz, a class-per-subfolder folder or a .csv manifest "
             "(multi-label: file.csv:labels=col1+col2)")


def _split_options(spec: str) -> tuple[str, dict[str, str]]:
    """``"a.csv:labels=x+y"`` -> ``("a.csv", {"labels": "x+y"})``; a bare path is returned unchanged."""
    head, sep, tail = spec.rpartition(":")
    if not sep or "=" not in tail or not head:
        return spec, {}
    opts = {}
    for item in tail.split(","):
        key, _, val = item.partition("=")
        opts[key.strip()] = val.strip()
    return head, opts


def check_dataset_name(spec: str) -> str:
    """``spec`` if :func:`open_dataset` accepts its form, checked without opening or downloading anything
    (study specs validate their dataset names with it); ValueError naming the accepted forms otherwise."""
    from .npz import parse_medmnist_name

    s = str(spec).strip()
    if s == "phantom" or s.startswith("phantom:"):
        return s
    if Path(_split_options(s)[0]).expanduser().exists():
        return s
    if os.sep not in s and "." not in s:
        if (shared_data_dir() / "datasets" / f"{s}.npz").is_file():
            return s
        try:
            if parse_medmnist_name(s):
                return s
        except UserError as e:  # a MedMNIST name with a size that does not exist
            raise ValueError(f"{e.problem} ({e.fix})") from None
    raise ValueError(f"unknown dataset '{s}' (not phantom[:...], a MedMNIST 2-D name, a file in "
                     f"{shared_data_dir() / 'datasets'}, or an existing path)")


def open_dataset(spec: str | os.PathLike, resize: int | None = None) -> ImageDataset:
    """Open a dataset by name or path.

    Args:
        spec: see :data:`SPEC_HELP` and docs/datasets.md.
        resize: optional square side N: every image is resized to N x N (antialiased bilinear); recorded in
            ``describe()`` and in the fingerprint.

    Returns:
        An :class:`ImageDataset` with labels in RAM and images loaded on demand.
    """
    resize = check_resize(resize)
    spec = str(spec).strip()
    if spec == "phantom" or spec.startswith("phantom:"):
        from .phantom import PhantomDataset, parse_phantom_spec

        return PhantomDataset(resize=resize, **parse_phantom_spec(spec))

    from .npz import NpzDataset, open_medmnist, parse_medmnist_name

    # a bare name: shared data folder first (real staged files), then MedMNIST
    if os.sep not in spec and "." not in spec and not Path(spec).exists():
        shared = shared_data_dir() / "datasets" / f"{spec}.npz"
        mm = parse_medmnist_name(spec)
        if mm:
            return open_medmnist(*mm, resize=resize)
        if shared.is_file():
            return NpzDataset(shared, resize, name=spec)
        raise UserError(f"'{spec}' is neither a file, a folder, a MedMNIST name nor a shared dataset",
                        f"pass one of: {SPEC_HELP}")

    path_str, opts = _split_options(spec)
    path = Path(path_str).expanduser()
    if path.is_dir():
        from .files import open_folder
        from .synthetic import is_synthetic_folder, open_synthetic

        if is_synthetic_folder(path):  # written by `latentgap synth sample`: training data only, never a test part
            return open_synthetic(path, resize)

        return open_folder(path, resize)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        from .files import open_csv

        labels = [c for c in opts.get("labels", "").split("+") if c] or None
        return open_csv(path, resize, label_columns=labels)
    if suffix == ".npz" or not path.exists():
        if not path.exists():
            raise UserError(f"dataset file {path} not found", f"check the path, or pass one of: {SPEC_HELP}")
        return NpzDataset(path, resize)
    raise UserError(f"{path} is a {suffix or 'extension-less'} file, not a dataset",
                    "pass a .npz (MedMNIST keys), a .csv manifest or a folder with one subfolder per class")
