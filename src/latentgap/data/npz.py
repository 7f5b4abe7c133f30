"""MedMNIST-format ``.npz`` files and MedMNIST names (Yang et al., "MedMNIST v2", Sci. Data 2023).

File layout: ``{train,val,test}_images`` uint8 ``(N, H, W)`` grey or ``(N, H, W, 3)`` RGB and
``{split}_labels`` ``(N,)``/``(N, 1)`` class ids or ``(N, L)`` 0/1; optional ``class_names``,
``{split}_ids`` and ``{split}_patient_ids``. All splits are pooled (folds are made over everything)
and the file's own split is kept in ``official_split``. These files are small, so arrays live in RAM.
"""

from __future__ import annotations

import os
import re
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..storage import atomic_write, sha256_file, shared_data_dir
from .base import SPLIT_NAMES, ImageDataset, check_labels

MEDMNIST_SIZES = (28, 64, 128, 224)
_MEDMNIST_RE = re.compile(r"^(?P<flag>[a-z0-9]+mnist)(?:_(?P<size>\d+))?$")
DOWNLOAD_TIMEOUT_S = 20.0  # per socket operation: an offline machine fails at DNS in milliseconds


class NpzDataset(ImageDataset):
    """A MedMNIST-format ``.npz`` file, all splits pooled.

    Args:
        path: the ``.npz`` file.
        resize: optional square output side.
        name: short name (default: the file stem).
        class_names: names to use when the file has none (e.g. from ``medmnist.INFO``).
        source: human-readable origin recorded in ``describe()`` (default: the path).

    Labels of shape ``(N, L>1)`` with values in {0, 1} make the dataset multi-label (``chestmnist``).
    """

    def __init__(self, path: str | os.PathLike, resize: int | None = None, *, name: str | None = None,
                 class_names: list[str] | None = None, source: str | None = None):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"dataset file {path} not found", "check the path, or pass a MedMNIST name, a folder or a .csv")
        try:
            npz = np.load(path, allow_pickle=False)
            keys = set(npz.files)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise UserError(f"{path} is not a readable .npz file ({type(e).__name__})",
                            "pass a numpy .npz with MedMNIST keys train_images, train_labels, val_*, test_*") from None
        self.path, self.resize = path, resize
        self.name = name or path.stem
        self.source = source or str(path)
        splits = [s for s in SPLIT_NAMES if f"{s}_images" in keys or f"{s}_labels" in keys]
        missing = [k for s in splits for k in (f"{s}_images", f"{s}_labels") if k not in keys]
        if not splits or missing:
            expected = [f"{s}_{k}" for s in SPLIT_NAMES for k in ("images", "labels")]
            raise UserError(f"{path} lacks the expected keys {missing or expected}; found {sorted(keys)}",
                            "save the file with MedMNIST keys train_images, train_labels (and val_*, test_*)")

        if "class_names" in keys:
            class_names = [str(c) for c in npz["class_names"].tolist()]
        images, labels, split_of, ids, pids = [], [], [], [], []
        for s in splits:
            x, y = npz[f"{s}_images"], npz[f"{s}_labels"]
            if x.dtype != np.uint8 or x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3)):
                raise UserError(f"{s}_images in {path} has shape {x.shape} and dtype {x.dtype}",
                                "store images as uint8 (N,H,W) grey or (N,H,W,3) RGB")
            if len(x) != len(y):
                raise UserError(f"{path}: {s}_images has {len(x)} images but {s}_labels has {len(y)} labels",
                                "store exactly one label row per image")
            images.append(x if x.ndim == 4 else x[..., None])
            labels.append(np.asarray(y).reshape(len(y), -1))
            split_of.append(np.full(len(x), s, dtype="<U5"))
            ids.append(npz[f"{s}_ids"] if f"{s}_ids" in keys else None)
            pids.append(npz[f"{s}_patient_ids"] if f"{s}_patient_ids" in keys else None)
        shapes = {im.shape[1:] for im in images}
        if len(shapes) > 1:
            raise UserError(f"{path}: splits have different image shapes {sorted(shapes)}",
                            "store all splits at one size and channel count")
        widths = {y.shape[1] for y in labels}
        if len(widths) > 1:
            raise UserError(f"{path}: splits have label widths {sorted(widths)}", "use the same label columns in every split")

        self.images = np.concatenate(images)                      # (N, H, W, C) uint8, in RAM
        self.labels, self.multilabel = check_labels(np.concatenate(labels), str(path), class_names)
        if class_names is None:
            k = self.labels.shape[1] if self.multilabel else (int(self.labels.max()) + 1 if len(self.labels) else 0)
            class_names = [str(i) for i in range(k)]
        self.class_names = list(class_names)
        self.official_split = np.concatenate(split_of)
        self.ids = np.concatenate(ids).astype(str) if all(i is not None for i in ids) else None
        self.patient_ids = np.concatenate(pids).astype(str) if all(p is not None for p in pids) else None
        self.native_size = tuple(self.images.shape[1:3])
        self.channels = int(self.images.shape[3])
        self._sha = sha256_file(path)

    def _load_native(self, idx: np.ndarray) -> np.ndarray:
        return self.images[idx]

    def _content_key(self) -> dict:
        return {"kind": "npz", "sha256": self._sha}


# --------------------------------------------------------------------------- MedMNIST names

def medmnist_root() -> Path:
    """Folder for MedMNIST files: ``$LATENTGAP_DATA_ROOT`` or ``~/.cache/latentgap/medmnist``."""
    env = os.environ.get("LATENTGAP_DATA_ROOT")
    return Path(env) if env else Path.home() / ".cache" / "latentgap" / "medmnist"


def parse_medmnist_name(spec: str) -> tuple[str, int] | None:
    """``"dermamnist_64"`` -> ``("dermamnist", 64)``; ``"dermamnist"`` -> 28; None if not a 2-D MedMNIST name."""
    m = _MEDMNIST_RE.match(spec.lower())
    if not m:
        return None
    import medmnist  # heavy-ish import, only when a MedMNIST-looking name is used

    flag = m["flag"]
    if flag not in medmnist.INFO or flag.endswith("3d"):  # 2-D datasets only
        return None
    size = int(m["size"] or 28)
    if size not in MEDMNIST_SIZES:
        raise UserError(f"MedMNIST size {size} in '{spec}' does not exist",
                        f"use one of {', '.join(f'{flag}_{s}' for s in MEDMNIST_SIZES)}")
    return flag, size


def medmnist_filename(flag: str, size: int) -> str:
    # medmnist's own naming: 28 px files carry no suffix
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def _download(url: str, dest: Path, md5: str | None, timeout: float = DOWNLOAD_TIMEOUT_S) -> None:
    import hashlib

    def write(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
            h = hashlib.md5()
            while block := r.read(1 << 20):
                f.write(block)
                h.update(block)
        if md5 and h.hexdigest() != md5:
            raise OSError(f"md5 mismatch for {url}")

    atomic_write(dest, write)


def open_medmnist(flag: str, size: int, resize: int | None = None) -> NpzDataset:
    """A MedMNIST dataset by flag and size: shared data folder first, then the data root, then download.

    Args:
        flag: MedMNIST flag, e.g. ``"dermamnist"`` (2-D datasets only).
        size: 28, 64, 128 or 224.
        resize: optional square output side.
    """
    import medmnist

    info = medmnist.INFO[flag]
    names = [info["label"][str(i)] for i in range(len(info["label"]))]
    name = f"{flag}_{size}"
    shared = shared_data_dir() / "datasets" / f"{name}.npz"
    if shared.is_file():
        return NpzDataset(shared, resize, name=name, class_names=names, source=f"medmnist:{name} ({shared})")
    root = medmnist_root()
    path = root / medmnist_filename(flag, size)
    if not path.is_file():
        url = info["url"] if size == 28 else info[f"url_{size}"]
        md5 = info["MD5"] if size == 28 else info.get(f"MD5_{size}")
        try:
            _download(url, path, md5)
        except OSError as e:  # URLError, timeouts and md5 mismatches are all OSErrors
            raise UserError(f"MedMNIST file {path.name} is not in {root} and could not be downloaded "
                            f"({type(e).__name__}: {getattr(e, 'reason', e)})",
                            f"download {url} on a machine with internet and put it at {path} "
                            f"(or set LATENTGAP_DATA_ROOT to the folder holding {path.name})") from None
    # The multi-label flag (chestmnist) is inferred from its (N, 14) label matrix.
    return NpzDataset(path, resize, name=name, class_names=names, source=f"medmnist:{name}")
