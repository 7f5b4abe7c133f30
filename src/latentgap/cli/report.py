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
    margin: float = typer.Option(0.02, "--margin", help="Equivalence margin in bACC for the TOST verdicts and the "
                                 "baseline check (0.02 = 2 points)."),
) -> None:
    """Write report.md, a self-contained report.html and rows.csv from STUDY_DIR/rows/*.json."""
    from ..errors import UserError
    from ..reports import build_report

    if not 0 < margin < 1:
        raise UserError(f"--margin {margin} is not a bACC difference in (0, 1)", "use e.g. --margin 0.02 (2 points)")
    paths = build_report(study_dir, out, margin=margin)
    for kind in ("html", "md", "csv"):
        typer.echo(f"{kind}: {paths[kind]}")
