"""The latent cache: encode a dataset once, reuse it for every classifier (nanoGPT's prepare-once idea).

Layout of a finished cache directory::

    manifest.json          what made it: autoencoder info, dataset description, dtype, chunking, versions
    latents.npy            (N, c, h, w) float16/float32 latents, read memory-mapped
    recon.npy              (N, H, W, C) uint8 reconstructions decode(encode(x)) (reconstruction space)
    psnr.npy, ssim.npy     (N,) float64 per-image fidelity, computed on the float reconstructions
    chunks/NNNNN.json      one marker per finished chunk (with the sha256 of its latent bytes)
    norm/<digest>-fold<k>.json   channel mean/std over that fold's *training* part
    views/<view>/latents.npy, views/<view>/recon.npy   the same for each extra encode-time view
                           (``views: [identity, hflip, ...]``; see ``latentgap.latents.views``)

A cache is built in ``<dir>.partial/`` and renamed when every chunk is done, so a finished cache is
never rewritten. Chunks are written with positioned writes (``os.pwrite``) rather than through a
writable memory map, so the process's memory does not grow with the size of the dataset; a killed
build resumes at the first unfinished chunk and, because batches are fixed by index, ends with
bytes identical to an uninterrupted build.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..version import __version__
from ..errors import UserError
from ..runs import environment
from ..storage import atomic_write_json, read_json, stable_hash
from ..progress import progress_bar
from .fidelity import psnr, ssim
from .spaces import NpyRows
from .views import IDENTITY, apply_view, check_views

FORMAT_VERSION = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}

# Manifest keys that must agree between a request and an existing cache (see `_request`).
_MATCH_KEYS = ("format_version", "autoencoder", "dataset_fingerprint", "image_size", "channels", "dtype",
               "grey_to_rgb", "with_recon", "views")


# ---------------------------------------------------------------------------------------------------
# The cache object
# ---------------------------------------------------------------------------------------------------

class LatentCache:
    """An opened (finished) cache directory. Arrays are read memory-mapped on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.is_file():
            raise UserError(f"'{self.path}' is not a latent cache (no manifest.json)",
                            "point --cache at a folder written by `latentgap encode`, or omit it")
        self.manifest: dict[str, Any] = read_json(mf)
        if self.manifest.get("status") != "complete":
            raise UserError(f"latent cache '{self.path}' is unfinished",
                            "run `latentgap encode` again with the same options to finish it")

    # -- arrays ---------------------------------------------------------------------------------
    @property
    def latents(self) -> np.ndarray:
        """(N, c, h, w) memory-mapped latents at the autoencoder's scale (not normalised)."""
        return np.load(self.path / "latents.npy", mmap_mode="r")

    @property
    def recon(self) -> np.ndarray | None:
        """(N, H, W, C) uint8 reconstructions, or None for a cache built without them."""
        p = self.path / "recon.npy"
        return np.load(p, mmap_mode="r") if p.exists() else None

    @property
    def views(self) -> tuple[str, ...]:
        """The encode-time views this cache holds (identity first; a cache without the field holds identity)."""
        return tuple(self.manifest.get("views", IDENTITY))

    def latents_path(self, view: str = "identity") -> Path:
        """The ``.npy`` file of the latents of ``view`` (UserError if the cache was built without it)."""
        return self._view_dir(view) / "latents.npy"

    def recon_path(self, view: str = "identity") -> Path:
        """The ``.npy`` file of the reconstructions of ``view``."""
        if not self.manifest["with_recon"]:
            raise UserError(f"cache '{self.path}' has no reconstructions", "re-encode without --no-recon")
        return self._view_dir(view) / "recon.npy"

    def _view_dir(self, view: str) -> Path:
        if view not in self.views:
            raise UserError(f"latent cache '{self.path}' holds the views {list(self.views)}, not '{view}'",
                            f"build a cache with views including '{view}' (study spec: cache.views)")
        return self.path if view == "identity" else self.path / "views" / view

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return tuple(self.manifest["latent_shape"])  # type: ignore[return-value]

    def __len__(self) -> int:
        return int(self.manifest["n"])

    def fidelity(self) -> dict[str, np.ndarray]:
        """Per-image ``psnr`` and ``ssim`` (N,) arrays."""
        if not self.manifest["with_recon"]:
            raise UserError(f"cache '{self.path}' was built without reconstructions",
                            "re-encode without --no-recon to get fidelity numbers")
        return {k: np.load(self.path / f"{k}.npy") for k in ("psnr", "ssim")}

    # -- normalisation ------------------------------------------------------------------------------
    def fold_stats(self, splits, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """Channel-wise mean and std of the latents in ``splits.folds[fold].train`` (computed once, saved).

        Returns:
            mean, std: (c,) float64 arrays.
        """
        path = self.path / "norm" / f"{splits.digest()}-fold{fold}.json"
        if path.exists():
            d = read_json(path)
            return np.asarray(d["mean"]), np.asarray(d["std"])
        idx = np.sort(np.asarray(splits.folds[fold].train))
        rows = NpyRows(self.path / "latents.npy")  # positioned reads: memory bounded by one block
        c = self.latent_shape[0]
        s1, s2, cnt = np.zeros(c), np.zeros(c), 0
        for start in range(0, len(idx), 2048):
            z = rows(idx[start:start + 2048]).astype(np.float64)  # (b, c, h, w)
            s1 += z.sum(axis=(0, 2, 3))
            s2 += (z * z).sum(axis=(0, 2, 3))
            cnt += z.shape[0] * z.shape[2] * z.shape[3]
        mean = s1 / cnt
        std = np.sqrt(np.maximum(s2 / cnt - mean**2, 0.0))
        std = np.where(std > 1e-8, std, 1.0)  # a constant channel is left unscaled
        atomic_write_json(path, {"fold": fold, "splits_digest": splits.digest(), "n": int(len(idx)),
                                 "mean": mean.tolist(), "std": std.tolist()})
        return mean, std

    def check(self, expect: dict[str, Any]) -> None:
        """Refuse (UserError) if this cache was made by something other than ``expect`` describes."""
        for key in _MATCH_KEYS:
            if key not in expect:
                continue
            have, want = self.manifest.get(key), expect[key]
            if have == want:
                continue
            if key == "autoencoder":
                hs = f"{have.get('name')} (weights {str(have.get('weights_sha256'))[:12]})"
                ws = f"{want.get('name')} (weights {str(want.get('weights_sha256'))[:12]})"
                raise UserError(f"latent cache '{self.path}' was made by autoencoder {hs}, not the requested {ws}",
                                "drop --cache to use (or build) the cache for this autoencoder, or pass the matching --ae")
            raise UserError(f"latent cache '{self.path}' does not match the request: {key} is {have!r}, "
                            f"requested {want!r}", "drop --cache to use (or build) a matching cache")


def open_cache(path: str | os.PathLike, expect: dict[str, Any] | None = None) -> LatentCache:
    """Open a finished cache and, if ``expect`` is given, check that it matches the request."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"latent cache '{path}' does not exist", "run `latentgap encode` first or check the path")
    cache = LatentCache(path)
    if expect is not None:
        cache.check(expect)
    return cache


# ---------------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------------

def _jsonable(obj: Any) -> Any:
    if is_dataclass(obj):
        obj = asdict(obj)
    return json.loads(json.dumps(obj, default=str))


def _request(ds, ae, *, dtype: str, grey_to_rgb: bool, with_recon: bool,
             views: tuple[str, ...] = IDENTITY) -> dict[str, Any]:
    """The part of the manifest that identifies a cache (compared on reuse, hashed into its name)."""
    info = _jsonable(ae.info)
    extra = {} if tuple(views) == IDENTITY else {"views": list(views)}  # identity-only caches keep their name
    return {
        "format_version": FORMAT_VERSION,
        "autoencoder": {k: info.get(k) for k in ("name", "backend", "weights_id", "weights_sha256",
                                                 "latent_channels", "downsample", "scaling")},
        "dataset_fingerprint": ds.fingerprint(),
        "image_size": list(ds.image_size),
        "channels": int(ds.channels),
        "dtype": dtype,
        "grey_to_rgb": bool(grey_to_rgb),
        "with_recon": bool(with_recon),
        **extra,
    }


def cache_dir_for(root: str | os.PathLike, ds, ae, request: dict[str, Any]) -> Path:
    name = f"{ds.name}-{ae.info.name}-{stable_hash(request)}".replace("/", "_")
    return Path(root) / "caches" / name


def _pwrite_rows(path: Path, header_len: int, row_bytes: int, start: int, arr: np.ndarray) -> None:
    """Write rows [start, start+len(arr)) of a C-contiguous .npy file in place."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, np.ascontiguousarray(arr).tobytes(), header_len + start * row_bytes)
    finally:
        os.close(fd)


def _create_npy(path: Path, shape: tuple[int, ...], dtype) -> tuple[int, int]:
    """Create a (sparse) .npy file of the given shape; return (header length, bytes per row)."""
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    header_len = int(mm.offset)
    del mm
    return header_len, int(np.dtype(dtype).itemsize * int(np.prod(shape[1:])))


def _npy_layout(path: Path) -> tuple[int, int]:
    mm = np.load(path, mmap_mode="r")
    out = int(mm.offset), int(mm.dtype.itemsize * int(np.prod(mm.shape[1:])))
    del mm
    return out


def encode_dataset(ds, ae, cache_dir: str | os.PathLike, *, dtype: str = "float16", grey_to_rgb: bool = True,
                   batch_size: int = 64, chunk_size: int = 4096, with_recon: bool = True,
                   device: torch.device | str = "cpu", progress: bool | None = None,
                   views: tuple[str, ...] | list[str] | None = None) -> LatentCache:
    """Encode every image of ``ds`` with ``ae`` into ``cache_dir`` (resumable; see the module docstring).

    Args:
        ds: an ``ImageDataset`` (images float in [0, 1] via ``ds.load``).
        ae: an ``Autoencoder`` (``encode``/``decode``/``info``), already on ``device``.
        dtype: storage dtype of the latents, "float16" or "float32".
        grey_to_rgb: replicate grey images for RGB autoencoders (else grey data into an RGB AE is an error).
        batch_size, chunk_size: images per forward pass / per resumable unit (chunk_size is rounded to a
            multiple of batch_size so that batches, and hence bytes, do not depend on where a run stopped).
        with_recon: also decode and store reconstructions and per-image PSNR/SSIM.
        views: encode-time views (identity first, e.g. ``["identity", "hflip"]``): the latents and
            reconstructions of ``view(x)`` are stored for each (``latentgap.latents.views``); PSNR/SSIM are of
            the identity view. None: identity only.
    """
    from ..autoencoders import adapt_images, restore_channels
    from ..data import to_uint8

    if dtype not in _DTYPES:
        raise UserError(f"unknown latent dtype '{dtype}'", "use float16 or float32")
    final = Path(cache_dir)
    views = check_views(views, tuple(ds.image_size))
    request = _request(ds, ae, dtype=dtype, grey_to_rgb=grey_to_rgb, with_recon=with_recon, views=views)
    if final.exists():
        return open_cache(final, expect=request)
    device = torch.device(device)
    part = final.with_name(final.name + ".partial")
    n = len(ds)
    if n == 0:
        raise UserError(f"dataset '{ds.name}' is empty", "check the dataset path or spec")

    if (part / "manifest.json").exists():  # resume: the original chunking wins so bytes stay identical
        manifest = read_json(part / "manifest.json")
        if {k: manifest.get(k) for k in request} != request:
            raise UserError(f"unfinished cache '{part}' was started with other settings",
                            f"delete '{part}' or re-run with the settings recorded in its manifest.json")
        batch_size, chunk_size = manifest["batch_size"], manifest["chunk_size"]
        latent_shape = tuple(manifest["latent_shape"])
    else:
        chunk_size = max(batch_size, (chunk_size // batch_size) * batch_size)
        x0 = adapt_images(ds.load(np.arange(1)), ae.info, grey_to_rgb=grey_to_rgb).to(device)
        with torch.inference_mode():
            latent_shape = tuple(ae.encode(x0).shape[1:])  # probe: exact shape after any patching
        part.mkdir(parents=True, exist_ok=True)
        (part / "chunks").mkdir(exist_ok=True)
        for v in views:
            vdir = part if v == "identity" else part / "views" / v
            vdir.mkdir(parents=True, exist_ok=True)
            _create_npy(vdir / "latents.npy", (n, *latent_shape), _DTYPES[dtype])
            if with_recon:
                h, w = ds.image_size
                _create_npy(vdir / "recon.npy", (n, h, w, ds.channels), np.uint8)
        if with_recon:
            _create_npy(part / "psnr.npy", (n,), np.float64)
            _create_npy(part / "ssim.npy", (n,), np.float64)
        manifest = {**request, "status": "building", "n": n, "latent_shape": list(latent_shape),
                    "batch_size": batch_size, "chunk_size": chunk_size, "num_chunks": -(-n // chunk_size),
                    "ae_info": _jsonable(ae.info), "dataset": _jsonable(ds.describe()),
                    "latentgap_version": __version__, "environment": environment(device),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "recon_note": "decoded from the full-precision latent, clamped to [0, 1], rounded to uint8"}
        atomic_write_json(part / "manifest.json", manifest)

    files = ["latents.npy", "recon.npy", "psnr.npy", "ssim.npy"] if with_recon else ["latents.npy"]
    for v in views[1:]:
        files += [f"views/{v}/latents.npy"] + ([f"views/{v}/recon.npy"] if with_recon else [])
    layouts = {k: _npy_layout(part / k) for k in files}
    num_chunks = -(-n // chunk_size)
    todo = [c for c in range(num_chunks) if not (part / "chunks" / f"{c:05d}.json").exists()]
    ae.eval()
    with progress_bar(n, f"encode {ds.name} with {ae.info.name}", disable=None if progress is None else not progress) as bar:
        bar.advance(n - sum(min(chunk_size, n - c * chunk_size) for c in todo))
        for c in todo:
            lo, hi = c * chunk_size, min(n, (c + 1) * chunk_size)
            zs: dict[str, list[np.ndarray]] = {v: [] for v in views}
            for s in range(lo, hi, batch_size):
                idx = np.arange(s, min(hi, s + batch_size))
                x0 = ds.load(idx)  # (B, C, H, W) in [0, 1]
                for v in views:
                    x = apply_view(v, x0)
                    prefix = "" if v == "identity" else f"views/{v}/"
                    with torch.inference_mode():
                        z = ae.encode(adapt_images(x, ae.info, grey_to_rgb=grey_to_rgb).to(device))
                        zs[v].append(z.float().cpu().numpy().astype(_DTYPES[dtype]))
                        if with_recon:
                            xr = restore_channels(ae.decode(z).float().clamp(0, 1).cpu(), ds.channels)
                            _pwrite_rows(part / f"{prefix}recon.npy", *layouts[f"{prefix}recon.npy"], s,
                                         to_uint8(xr))  # (B, H, W, C)
                            if v == "identity":
                                _pwrite_rows(part / "psnr.npy", *layouts["psnr.npy"], s, psnr(xr, x).numpy())
                                _pwrite_rows(part / "ssim.npy", *layouts["ssim.npy"], s, ssim(xr, x).numpy())
                bar.advance(len(idx))
            digests = {}
            for v in views:
                prefix = "" if v == "identity" else f"views/{v}/"
                block = np.concatenate(zs[v])
                _pwrite_rows(part / f"{prefix}latents.npy", *layouts[f"{prefix}latents.npy"], lo, block)
                digests[v] = hashlib.sha256(block.tobytes()).hexdigest()
            for k in layouts:  # make the chunk durable before marking it done
                fd = os.open(part / k, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
            marker = {"chunk": c, "start": lo, "stop": hi, "latents_sha256": digests["identity"]}
            if len(views) > 1:
                marker["views_latents_sha256"] = digests
            atomic_write_json(part / "chunks" / f"{c:05d}.json", marker)

    manifest["status"] = "complete"
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    atomic_write_json(part / "manifest.json", manifest)
    os.replace(part, final)
    return LatentCache(final)


def ensure_cache(dataset, autoencoder, root: str | os.PathLike, *, resize: int | None = None,
                 grey_to_rgb: bool = True, dtype: str = "float16", batch_size: int = 64, chunk_size: int = 4096,
                 with_recon: bool = True, device: str | torch.device = "auto",
                 cache: str | os.PathLike | None = None, progress: bool | None = None,
                 views: tuple[str, ...] | list[str] | None = None) -> LatentCache:
    """Return the cache of ``dataset`` encoded by ``autoencoder`` under ``root``, building it if needed.

    Args:
        dataset: an ``ImageDataset`` or a spec for ``latentgap.data.open_dataset``.
        autoencoder: an ``Autoencoder`` or a spec for ``latentgap.autoencoders.create_autoencoder``.
        root: working folder; the cache goes to ``<root>/caches/<dataset>-<ae>-<hash>/``.
        cache: an explicit cache folder to use or build instead; an existing one must match the request
            (else UserError).
        views: encode-time views to store (see :func:`encode_dataset`); None: identity only.
    """
    from ..autoencoders import create_autoencoder
    from ..data import open_dataset
    from ..device import resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    ds = open_dataset(dataset, resize=resize) if isinstance(dataset, str) else dataset
    ae = create_autoencoder(autoencoder, device=dev) if isinstance(autoencoder, str) else autoencoder
    views = check_views(views, tuple(ds.image_size))
    request = _request(ds, ae, dtype=dtype, grey_to_rgb=grey_to_rgb, with_recon=with_recon, views=views)
    target = Path(cache) if cache is not None else cache_dir_for(root, ds, ae, request)
    if target.exists():
        return open_cache(target, expect=request)
    return encode_dataset(ds, ae, target, dtype=dtype, grey_to_rgb=grey_to_rgb, batch_size=batch_size,
                          chunk_size=chunk_size, with_recon=with_recon, device=dev, progress=progress, views=views)

