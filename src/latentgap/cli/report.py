"""``latentgap report``: rebuild a study's tables, figures and CSV from its rows (no retraining)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from . import app


@app.command("report")
def report_cmd(
    study_dir: Path = typer.Argument(..., help="Study folder written by `latentgap study` (holds rows/)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write (default: the study folder)."),
) -> None:
    """Write report.md, a self-contained report.html and rows.csv from STUDY_DIR/rows/*.json."""
    from ..reports import build_report

    paths = build_report(study_dir, out)
    for kind in ("html", "md", "csv"):
        typer.echo(f"{kind}: {paths[kind]}")
