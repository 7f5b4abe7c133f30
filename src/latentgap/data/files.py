"""Datasets made of image files: a folder with one subfolder per class, or a CSV manifest.

Images are read lazily per index (PIL for PNG/JPEG/BMP/TIFF, pydicom for DICOM); only the file list,
labels and image headers are held in RAM. Conversions, documented in docs/datasets.md:

* DICOM: ``RescaleSlope``/``RescaleIntercept`` applied, ``MONOCHROME1`` inverted (so bright = dense as in
  ``MONOCHROME2``), then a per-image min-max window to 0..255. 16-bit PNG/TIFF get the same min-max window.
* Grey and RGB files in one dataset: every image is converted to the majority mode (ties -> RGB);
  RGB -> grey uses PIL's ITU-R 601-2 luma, grey -> RGB replicates the channel.
* Images of different sizes need ``resize`` (square, antialiased bilinear; non-square images are squashed).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import SPLIT_NAMES, ImageDataset, check_labels, resize_uint8

PIL_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
DICOM_EXTS = {".dcm", ".dicom"}
IMAGE_EXTS = PIL_EXTS | DICOM_EXTS
_PIL_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


# --------------------------------------------------------------------------- single-file readers

def _minmax_uint8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:  # a constant image carries no contrast; map it to black rather than divide by zero
        return np.zeros(a.shape, np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_header(path: Path) -> tuple[int, int, bool]:
    """``(H, W, is_rgb)`` of one image file without decoding its pixels."""
    try:
        if path.suffix.lower() in DICOM_EXTS:
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
                raise UserError(f"{path} is a multi-frame DICOM ({ds.NumberOfFrames} frames)",
                                "export one 2-D slice per file")
            return int(ds.Rows), int(ds.Columns), int(getattr(ds, "SamplesPerPixel", 1)) == 3
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
            return h, w, im.mode not in _PIL_GREY_MODES
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read image {path} ({type(e).__name__}: {e})",
                        "remove or replace the file; supported are PNG, JPEG, BMP, TIFF and DICOM") from None


def read_image(path: Path, rgb: bool) -> np.ndarray:
    """One image as ``uint8 (H, W, C)``, C = 3 if ``rgb`` else 1 (see the module docstring for conversions)."""
    from PIL import Image

    if path.suffix.lower() in DICOM_EXTS:
        import pydicom

        ds = pydicom.dcmread(path)
        a = ds.pixel_array  # pydicom converts YBR colour to RGB by default
        if int(getattr(ds, "SamplesPerPixel", 1)) == 1:
            a = a.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
            if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
                a = -a  # MONOCHROME1: low values are white
            im = Image.fromarray(_minmax_uint8(a), mode="L")
        else:
            im = Image.fromarray(a if a.dtype == np.uint8 else _minmax_uint8(a), mode="RGB")
    else:
        with Image.open(path) as f:
            f.load()
            im = f
            if f.mode in {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}:
                im = Image.fromarray(_minmax_uint8(np.asarray(f)), mode="L")
            elif f.mode in _PIL_GREY_MODES:
                im = f.convert("L")
            else:
                im = f.convert("RGB")
    im = im.convert("RGB" if rgb else "L")
    a = np.asarray(im, dtype=np.uint8)
    return a if a.ndim == 3 else a[..., None]


# --------------------------------------------------------------------------- a list of files

class FileListDataset(ImageDataset):
    """Images from a list of files, read lazily.

    Args:
        paths: one file per image.
        labels: ``(N,)`` class ids or ``(N, L)`` 0/1.
        class_names: one name per class / label column.
        root: folder the fingerprint's relative paths are taken from.
        resize: optional square output side (required when sizes differ).
    """

    def __init__(self, paths: list[Path], labels: np.ndarray, class_names: list[str], *, root: Path, name: str,
                 source: str, resize: int | None = None, official_split: np.ndarray | None = None,
                 patient_ids: np.ndarray | None = None):
        if not paths:
            raise UserError(f"no images found in {source}", f"put {'/'.join(sorted(IMAGE_EXTS))} files there")
        self.paths, self.root, self.name, self.source, self.resize = list(paths), Path(root), name, source, resize
        self.labels, self.multilabel = check_labels(labels, source, class_names)
        self.class_names = list(class_names)
        self.official_split, self.patient_ids = official_split, patient_ids
        self.ids = np.array([os.path.relpath(p, self.root) for p in self.paths])
        headers = [read_header(p) for p in self.paths]
        modes = Counter(rgb for _, _, rgb in headers)
        # Majority mode wins so that a few stray RGB screenshots in a grey X-ray set stay grey (and vice versa).
        self.rgb = modes[True] >= modes[False]
        self.channels = 3 if self.rgb else 1
        sizes = Counter((h, w) for h, w, _ in headers)
        if len(sizes) > 1 and resize is None:
            (common, n_common), = sizes.most_common(1)
            odd = next(p for p, (h, w, _) in zip(self.paths, headers) if (h, w) != common)
            raise UserError(f"images in {source} have {len(sizes)} different sizes (e.g. {common[0]}x{common[1]} "
                            f"for {n_common} files, {odd.name} differs)", "pass --resize N (e.g. --resize 64) to resize all to NxN")
        self.native_size = sizes.most_common(1)[0][0]
        stats = [p.stat() for p in self.paths]
        self._files_key = [(str(i), s.st_size, s.st_mtime_ns) for i, s in zip(self.ids, stats)]

    def _load_native(self, idx: np.ndarray) -> np.ndarray:
        imgs = [read_image(self.paths[i], self.rgb) for i in idx]
        if self.resize:  # sizes may differ, so resize one by one before stacking
            imgs = [resize_uint8(a[None], self.resize)[0] for a in imgs]
        h, w = self.native_size if not self.resize else (self.resize, self.resize)
        out = np.empty((len(imgs), h, w, self.channels), np.uint8)
        for j, a in enumerate(imgs):
            out[j] = a
        return out

    def _content_key(self) -> dict:
        return {"kind": "files", "files": self._files_key, "rgb": self.rgb}


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def open_folder(root: str | os.PathLike, resize: int | None = None) -> FileListDataset:
    """A folder with one subfolder per class (``root/<class>/**/<image>``), class ids in sorted name order."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels, names = [], [], []
    for name in classes:
        files = _image_files(root / name)
        if files:  # folders without images (e.g. a stray "logs/") are not classes
            labels += [len(names)] * len(files)
            names.append(name)
            paths += files
    if len(names) < 2:
        raise UserError(f"{root} has {len(names)} class subfolder(s) with images",
                        "arrange images as <folder>/<class name>/<image> with at least two classes, or use a CSV manifest")
    return FileListDataset(paths, np.array(labels), names, root=root, name=root.name, source=str(root), resize=resize)


def open_csv(path: str | os.PathLike, resize: int | None = None, label_columns: list[str] | None = None) -> FileListDataset:
    """A CSV manifest: column ``path`` (relative to the CSV) plus ``label`` or the 0/1 ``label_columns``.

    Optional columns: ``patient_id`` (grouped folds) and ``split`` (``train``/``val``/``test``, the
    official split).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"manifest {path} not found", "check the path to the .csv file")
    try:
        df = pd.read_csv(path, dtype={"path": str, "patient_id": str, "split": str})
    except Exception as e:
        raise UserError(f"cannot parse {path} as CSV ({type(e).__name__})", "save the manifest as comma-separated text with a header row") from None
    need = ["path"] + (label_columns or ["label"])
    missing = [c for c in need if c not in df.columns]
    if missing:
        hint = "" if label_columns else " (or name 0/1 label columns with <file>.csv:labels=col1+col2)"
        raise UserError(f"{path} lacks column(s) {missing}; found {list(df.columns)}", f"add the column(s){hint}")
    if df[need].isna().any().any():
        row = int(np.flatnonzero(df[need].isna().any(axis=1).to_numpy())[0]) + 2
        raise UserError(f"{path} has an empty path or label at line {row}", "fill in every path and label, or drop unlabelled rows")
    base = path.parent
    paths = [Path(p) if os.path.isabs(p) else base / p for p in df["path"]]
    absent = [str(p) for p in paths if not p.is_file()]
    if absent:
        raise UserError(f"{len(absent)} file(s) listed in {path} do not exist, e.g. {absent[0]}",
                        "fix the paths (they are relative to the CSV's folder)")
    if label_columns:
        labels, names = df[label_columns].to_numpy(), list(label_columns)
        if labels.ndim == 2 and labels.shape[1] == 1:
            raise UserError(f"only one label column ({label_columns[0]}) given for multi-label {path}",
                            "use a single 'label' column for single-label data, or list two or more 0/1 columns")
    else:
        col = df["label"]
        if pd.api.types.is_integer_dtype(col.dtype):
            labels = col.to_numpy()
            names = [str(i) for i in range(max(int(labels.max()) + 1, 0))]
        else:
            names = sorted(col.astype(str).unique())
            labels = np.array([names.index(v) for v in col.astype(str)])
    split = None
    if "split" in df.columns:
        split = df["split"].astype(str).str.strip().str.lower().to_numpy()
        bad = sorted(set(split) - set(SPLIT_NAMES))
        if bad:
            raise UserError(f"column 'split' in {path} has values {bad[:5]}", "use only train, val and test (or drop the column)")
        split = split.astype("<U5")
    pids = df["patient_id"].astype(str).to_numpy() if "patient_id" in df.columns else None
    return FileListDataset(paths, labels, names, root=base, name=path.stem, source=str(path), resize=resize,
                           official_split=split, patient_ids=pids)
