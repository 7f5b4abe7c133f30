"""``latentgap encode`` and ``latentgap fidelity``: build latent caches and report reconstruction fidelity."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import app

_console = Console()

DataOpt = typer.Option(..., "--data", "-d", help="Dataset: phantom[:k=v,...], a MedMNIST name, a shared-data name, "
                       "or a path to a .npz / image folder / .csv manifest.")
AeOpt = typer.Option(..., "--ae", "-a", help="Autoencoder: a registry name (see `latentgap ae list`), hub id or local path.")
RootOpt = typer.Option(None, "--root", help="Working folder for caches and splits [default: $LATENTGAP_HOME or ./.latentgap].")
ResizeOpt = typer.Option(None, "--resize", help="Resize images to N x N first (recorded in the manifest).")
GreyOpt = typer.Option(True, "--grey-to-rgb/--no-grey-to-rgb", help="Replicate grey images to RGB for RGB autoencoders.")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps.")
CacheOpt = typer.Option(None, "--cache", help="Use (or build) the cache in this folder instead of one under --root; "
                        "an existing cache must have been made by the same autoencoder and dataset.")


def _root(root: Optional[Path]) -> Path:
    from ..workspace import default_root

    return Path(root) if root is not None else default_root()


@app.command("encode")
def encode_cmd(
    data: str = DataOpt,
    ae: str = AeOpt,
    root: Optional[Path] = RootOpt,
    resize: Optional[int] = ResizeOpt,
    grey_to_rgb: bool = GreyOpt,
    dtype: str = typer.Option("float16", "--dtype", help="Latent storage dtype: float16 or float32."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    chunk_size: int = typer.Option(4096, "--chunk-size", help="Images per resumable chunk."),
    recon: bool = typer.Option(True, "--recon/--no-recon", help="Also store reconstructions and PSNR/SSIM."),
    folds: int = typer.Option(5, "--folds", help="K of the stratified K-fold splits."),
    protocol: str = typer.Option("kfold", "--protocol", help="kfold, or official (the dataset's own train/val/test)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Part of each fold's training data held out for early stopping."),
    cache_dir: Optional[Path] = CacheOpt,
    views: str = typer.Option("identity", "--views", help="Encode-time views to store, comma-separated, identity "
                              "first (identity, hflip, vflip, hvflip, rot90, rot270), e.g. identity,hflip."),
    device: str = DeviceOpt,
) -> None:
    """Encode a dataset once into a memory-mapped latent cache (resumable), with reconstructions,
    the fold file and each fold's channel normalisation statistics."""
    from ..data import load_or_make_splits, open_dataset
    from ..latents import ensure_cache
    from ..workspace import splits_path

    root_ = _root(root)
    ds = open_dataset(data, resize=resize)
    t0 = time.perf_counter()
    cache = ensure_cache(ds, ae, root_, grey_to_rgb=grey_to_rgb, dtype=dtype, batch_size=batch_size,
                         chunk_size=chunk_size, with_recon=recon, device=device, cache=cache_dir,
                         views=[v.strip() for v in views.split(",") if v.strip()])
    sp_path = splits_path(root_, ds, protocol, folds, seed)
    splits = load_or_make_splits(sp_path, ds, protocol=protocol, k=folds, seed=seed, val_fraction=val_fraction)
    for f in range(len(splits.folds)):
        cache.fold_stats(splits, f)
    dt = time.perf_counter() - t0
    _console.print(f"cache   {cache.path}\nlatents {len(cache)} x {tuple(cache.latent_shape)} {dtype}, views "
                   f"{', '.join(cache.views)}\n"
                   f"splits  {sp_path} ({len(splits.folds)} fold(s), normalisation statistics per fold)\n"
                   f"time    {dt:.1f} s")


@app.command("fidelity")
def fidelity_cmd(
    data: list[str] = DataOpt,
    ae: list[str] = AeOpt,
    split: str = typer.Option("test", "--split", help="train, val or test (the dataset's own split), or all."),
    root: Optional[Path] = RootOpt,
    resize: Optional[int] = ResizeOpt,
    grey_to_rgb: bool = GreyOpt,
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass when a cache must be built."),
    csv: Optional[Path] = typer.Option(None, "--csv", help="Also write the rows to this CSV file."),
    device: str = DeviceOpt,
) -> None:
    """Per-image PSNR and SSIM, mean ± std per autoencoder x dataset (the paper's Table 2).
    Encodes (and caches) what is missing; repeat --data and --ae for a grid."""
    import pandas as pd

    from ..autoencoders import create_autoencoder
    from ..data import open_dataset
    from ..device import resolve_device
    from ..storage import atomic_write_text
    from ..latents import ensure_cache, summarize_fidelity

    root_ = _root(root)
    dev = resolve_device(device)
    rows = []
    for a in ae:
        model = create_autoencoder(a, device=dev)
        for d in data:
            ds = open_dataset(d, resize=resize)
            cache = ensure_cache(ds, model, root_, grey_to_rgb=grey_to_rgb, batch_size=batch_size, device=dev)
            rows.append(summarize_fidelity(cache, ds, split))
    table = Table(title=f"Reconstruction fidelity ({split} split, mean ± std per image)")
    for col in ("autoencoder", "dataset", "n", "PSNR (dB)", "SSIM"):
        table.add_column(col, justify="right" if col not in ("autoencoder", "dataset") else "left")
    for r in rows:
        table.add_row(r["autoencoder"], r["dataset"], str(r["n"]), f"{r['psnr_mean']:.2f} ± {r['psnr_std']:.2f}",
                      f"{r['ssim_mean']:.4f} ± {r['ssim_std']:.4f}")
    _console.print(table)
    if csv is not None:
        atomic_write_text(csv, pd.DataFrame(rows).to_csv(index=False))
        _console.print(f"rows written to {csv}")
