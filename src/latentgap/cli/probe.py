"""``latentgap probe``: cheap learnability scores for one or more autoencoders on a dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import app
from .encode import AeOpt, CacheOpt, DataOpt, DeviceOpt, GreyOpt, ResizeOpt, RootOpt, _root

_console = Console()

VALIDATION = ("Validation: none of these scores is validated yet. They are candidates; their Spearman correlation "
              "with the RS - LS gap of full, converged studies is being measured (docs/probe.md). Until then read "
              "them as descriptions of the latent space, not as a prediction of the study's verdict.")
VALIDATION_FILE = Path(__file__).resolve().parents[1] / "probe" / "validation.json"


def _validation_text() -> str:
    """What the scores rest on: the packaged record of benchmarks/probe_validation.py, or the plain statement that
    there is none."""
    if not VALIDATION_FILE.is_file():
        return VALIDATION
    rec = json.loads(VALIDATION_FILE.read_text())
    lines = [f"Validation ({rec['n_pairs']} autoencoder x dataset pairs of full, converged studies; "
             f"{rec['source']}): Spearman rho of each score with the measured RS - LS gap and with the latent "
             "classifier's bACC [95 % bootstrap CIs], and the score's compute as a share of a study:"]
    for v in rec["validation"]:
        with_latent = (f"; with LS bACC {v['rho_latent']:+.2f} [{v['rho_latent_lo']:+.2f}, {v['rho_latent_hi']:+.2f}]"
                       if "rho_latent" in v else "")
        lines.append(f"  {v['score']:<14} with the gap {v['rho_gap']:+.2f} [{v['rho_gap_lo']:+.2f}, "
                     f"{v['rho_gap_hi']:+.2f}]{with_latent}  ({100 * v['compute_fraction']:.1f} %)")
    gap = max(rec["validation"], key=lambda v: abs(v["rho_gap"]))
    if abs(gap["rho_gap"]) >= 0.8 and gap["rho_gap_lo"] * gap["rho_gap_hi"] > 0:
        lines.append(f"Best predictor of the gap: {gap['score']} (rho {gap['rho_gap']:+.2f}).")
    else:
        lines.append(f"No score predicts the gap well enough to stand in for a study (best: {gap['score']}, rho "
                     f"{gap['rho_gap']:+.2f}; goal |rho| >= 0.8): read them as descriptions of the latent space.")
    lat = [v for v in rec["validation"] if "rho_latent" in v]
    if lat:
        best = max(lat, key=lambda v: abs(v["rho_latent"]))
        lines.append(f"Best predictor of the latent classifier's bACC: {best['score']} (rho {best['rho_latent']:+.2f} "
                     f"[{best['rho_latent_lo']:+.2f}, {best['rho_latent_hi']:+.2f}]).")
    return "\n".join(lines)


@app.command("probe")
def probe_cmd(
    data: str = DataOpt,
    ae: list[str] = AeOpt,
    root: Optional[Path] = RootOpt,
    resize: Optional[int] = ResizeOpt,
    grey_to_rgb: bool = GreyOpt,
    folds: int = typer.Option(3, "--folds", help="K of the stratified K-fold splits (a study's folds for the same K and seed)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment and of the probes."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", help="Part of each training part held out for "
                                       "validation (a study's val_fraction; the probes train on the rest)."),
    dtype: str = typer.Option("float16", "--dtype", help="Latent cache dtype (a study's cache.dtype to reuse its cache)."),
    cache_dir: Optional[Path] = CacheOpt,
    images: int = typer.Option(64, "--images", help="Images (from fold 0's test part) the geometric measures encode."),
    skip: str = typer.Option("", "--skip", help="Score families to leave out, comma-separated: linear, knn, "
                             "equivariance, spectral, sensitivity."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the rows (one per autoencoder) to this JSON file."),
    device: str = DeviceOpt,
) -> None:
    """Cheap candidate scores of how learnable each autoencoder's latent space is on `--data`, in minutes on a
    CPU: linear / k-NN probes on images, reconstructions and latents (the study's folds), equivariance errors
    under flips and shifts, latent high-frequency energy and noise sensitivity. Repeat --ae to compare."""
    from ..errors import UserError
    from ..probe import FAMILIES, meaning, run_probe
    from ..storage import atomic_write_text

    families = tuple(s.strip() for s in skip.split(",") if s.strip())
    unknown = [s for s in families if s not in FAMILIES]
    if unknown:
        raise UserError(f"unknown score family '{unknown[0]}' in --skip", f"use {', '.join(FAMILIES)}")
    if cache_dir is not None and len(ae) > 1:
        raise UserError("--cache names one autoencoder's cache, but several --ae were given", "probe one --ae with --cache")
    rows = [run_probe(data, a, _root(root), k=folds, seed=seed, val_fraction=val_fraction, images=images, resize=resize,
                      grey_to_rgb=grey_to_rgb, dtype=dtype, cache=cache_dir, device=device, skip=families) for a in ae]
    names = list(dict.fromkeys(n for r in rows for n in r["scores"]))
    table = Table(title=f"latentgap probe: {rows[0]['dataset']} ({folds} folds, {rows[0]['images']} images for the "
                        "geometric measures)")
    table.add_column("score")
    for r in rows:
        table.add_column(r["autoencoder"], justify="right")
    table.add_column("meaning", overflow="fold")
    for n in names:
        table.add_row(n, *[f"{r['scores'][n]:.3f}" if n in r["scores"] else "-" for r in rows], meaning(n))
    fams = list(dict.fromkeys(f for r in rows for f in r["seconds"]))
    for f in ["encode"] + fams:
        table.add_row(f"seconds: {f}", *[f"{(r['encode_seconds'] if f == 'encode' else r['seconds'].get(f, 0)):.1f}"
                                          for r in rows], "cache build (reused if present)" if f == "encode" else "")
    _console.print(table)
    for note in dict.fromkeys(n for r in rows for n in r.get("notes", [])):
        _console.print(f"note: {note}")
    _console.print(_validation_text())
    if out is not None:
        atomic_write_text(out, json.dumps(rows, indent=1) + "\n")
        _console.print(f"rows written to {out}")
