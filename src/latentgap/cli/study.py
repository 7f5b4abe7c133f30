"""``latentgap study``: run a grid of classifier trainings (resumable; local or Slurm) and write its report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from . import app


@app.command("study")
def study_cmd(
    spec_file: Optional[Path] = typer.Argument(None, help="Study spec (YAML, see docs/studies.md). Omit with --preset."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A built-in study: demo, shared-data, paper, synth-isic, seg-shared or probe-validation."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Study folder (default: ./studies/<name>)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="local or slurm (default: from the spec)."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Local worker processes (1 = sequential)."),
    partition: Optional[str] = typer.Option(None, "--partition", help="Slurm partition."),
    gpus: Optional[int] = typer.Option(None, "--gpus", help="GPUs per Slurm task."),
    time_min: Optional[int] = typer.Option(None, "--time-min", help="Slurm time limit per task, minutes."),
    array_parallelism: Optional[int] = typer.Option(None, "--array-parallelism", help="Slurm array tasks at once."),
    mem_gb: Optional[float] = typer.Option(None, "--mem-gb", help="Memory per Slurm task, GB."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Run only this task hash (repeatable; from --dry-run)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the grid and what is already done; run nothing."),
    report: bool = typer.Option(True, "--report/--no-report", help="Rebuild the report when the study ends."),
    allow_mixed_code: bool = typer.Option(False, "--allow-mixed-code",
                                          help="Add rows to a study whose finished rows were made by other code "
                                               "(refused otherwise; the report lists the code versions)."),
) -> None:
    """Run every missing cell of a study (dataset x autoencoder x space x variant x fold x seed).

    Finished cells are kept in STUDY_DIR/rows/ and never re-run; a killed study resumes where it stopped.
    Several runs of this command may share one study folder (two shells, or Slurm login nodes on a shared
    file system): they split the tasks between them. Exits with status 1 when a task failed.
    """
    from ..errors import UserError
    from ..study import load_preset, load_spec, run_study, with_overrides
    from ..study.runner import format_summary

    if (spec_file is None) == (preset is None):
        raise UserError("give either a study spec file or --preset", "e.g. `latentgap study --preset demo`")
    if executor not in (None, "local", "slurm"):
        raise UserError(f"--executor '{executor}' is not known", "use --executor local or --executor slurm")
    spec = load_preset(preset) if preset else load_spec(spec_file)
    spec = with_overrides(spec, kind=executor, workers=workers, partition=partition, gpus_per_node=gpus,
                          time_min=time_min, array_parallelism=array_parallelism, mem_gb=mem_gb)
    study_dir = out or Path("studies") / spec.name
    result = run_study(spec, study_dir, only=only, dry_run=dry_run, allow_mixed_code=allow_mixed_code)
    if dry_run:
        typer.echo(result)
        return
    source = f"--preset {preset}" if preset else str(spec_file)
    typer.echo(format_summary(result, f"latentgap study {source} --out {study_dir}"))
    if report and (Path(study_dir) / "rows").is_dir():
        from ..reports import build_report

        paths = build_report(study_dir)
        typer.echo(f"report: {paths['html']} (also {paths['md'].name}, {paths['csv'].name})")
    if not result.ok:
        raise typer.Exit(1)
