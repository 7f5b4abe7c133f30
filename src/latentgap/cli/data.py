"""``latentgap data``: inspect a dataset and write its folds (``splits.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app

data_app = typer.Typer(help="Inspect datasets and make the folds every later stage reuses.", no_args_is_help=True)
app.add_typer(data_app, name="data")

_SPEC = typer.Argument(..., help="Dataset: phantom[:k=v,...], a MedMNIST name (dermamnist_64), a shared file name "
                                 "(isic_skin8_64), or a path to a .npz, a class-per-subfolder folder or a .csv manifest "
                                 "(multi-label: file.csv:labels=col1+col2).")
_RESIZE = typer.Option(None, "--resize", help="Resize every image to N x N (antialiased bilinear); needed for mixed sizes.")


@data_app.command("info")
def info(spec: str = _SPEC, resize: Optional[int] = _RESIZE) -> None:
    """Print size, channels, class counts, imbalance and fingerprint of a dataset."""
    from rich.console import Console
    from rich.table import Table

    from ..data import open_dataset

    d = open_dataset(spec, resize=resize).describe()
    head = Table(show_header=False, box=None)
    h, w = d["image_size"]
    for key, val in [("name", d["name"]), ("source", d["source"]), ("images", d["n"]),
                     ("size", f"{h} x {w}" + (f" (resized from {d['native_size'][0]} x {d['native_size'][1]})" if d["resize"] else "")),
                     ("channels", d["channels"]), ("task", "multi-label" if d["multilabel"] else "multi-class"),
                     ("imbalance (max/min)", "inf (a class is empty)" if d["imbalance"] is None else f"{d['imbalance']:.1f}"),
                     ("official split", ", ".join(f"{k} {v}" for k, v in d.get("official_split_counts", {}).items()) or "none"),
                     ("patient ids", "yes" if d["has_patient_ids"] else "no"), ("fingerprint", d["fingerprint"])]:
        head.add_row(f"[bold]{key}[/]", str(val))
    classes = Table("id", "class", "positives" if d["multilabel"] else "images", "share")
    for i, (name, count) in enumerate(zip(d["class_names"], d["class_counts"])):
        classes.add_row(str(i), name, str(count), f"{count / max(d['n'], 1):.1%}")
    console = Console()
    console.print(head)
    console.print(classes)


@data_app.command("splits")
def splits(spec: str = _SPEC,
           out: Path = typer.Option(..., "--out", help="Where to write splits.json (an existing matching file is reused)."),
           folds: int = typer.Option(5, "--folds", help="Number of folds for --protocol kfold."),
           protocol: str = typer.Option("kfold", "--protocol", help="kfold (stratified, pooled data) or official "
                                                                      "(the dataset's own train/val/test)."),
           seed: int = typer.Option(0, "--seed", help="Shuffling seed."),
           val_fraction: float = typer.Option(0.1, "--val-fraction", help="Share of each training part kept for early stopping."),
           resize: Optional[int] = _RESIZE) -> None:
    """Make (or reuse) stratified folds and write them to splits.json."""
    from rich.console import Console
    from rich.table import Table

    from ..data import load_or_make_splits, open_dataset

    ds = open_dataset(spec, resize=resize)
    existed = out.exists()
    s = load_or_make_splits(out, ds, protocol=protocol, k=folds, seed=seed, val_fraction=val_fraction)
    table = Table("fold", "train", "val", "test")
    for i, f in enumerate(s.folds):
        table.add_row(str(i), str(len(f.train)), str(len(f.val)), str(len(f.test)))
    console = Console()
    console.print(f"{'reused' if existed else 'wrote'} {out}: {s.protocol}, k={s.k}, seed={s.seed}, "
                  f"val_fraction={s.val_fraction}, digest {s.digest()}", soft_wrap=True)
    console.print(table)
