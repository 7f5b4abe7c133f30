"""``latentgap bench``: latent classifier vs decode-then-classify throughput and memory on this machine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from . import app

# rows are wide: do not squeeze them to 80 columns when the output goes to a file or a pipe
_console = Console() if sys.stdout.isatty() else Console(width=170)


@app.command("bench")
def bench_cmd(
    resolution: int = typer.Option(256, "--resolution", "-r", help="Image side in pixels (latents are side / AE factor)."),
    batch_size: int = typer.Option(2, "--batch-size", "-b", help="Samples per step, the same for both paths."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16 (inference casts the models; "
                              "training uses autocast with float32 weights)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
    iters: int = typer.Option(2, "--iters", help="Timed steps per case and round."),
    min_time: float = typer.Option(1.0, "--min-time", help="Each timed block lasts at least this many seconds "
                                   "(fast cases run more steps)."),
    warmup: int = typer.Option(1, "--warmup", help="Untimed warm-up steps per case."),
    rounds: int = typer.Option(2, "--rounds", help="Interleaved timing rounds; the table shows their spread."),
    ae: str = typer.Option("sd-vae-random", "--ae", help="sd-vae-random (Stable Diffusion VAE sizes, random weights) "
                           "or any autoencoder spec (registry name, path, hub id) whose decoder to time."),
    latent_model: str = typer.Option("convnext_tiny", "--latent-model", help="Classifier on latents."),
    image_model: str = typer.Option("resnet50", "--image-model", help="Classifier on decoded images."),
    train: bool = typer.Option(True, "--train/--no-train", help="Also time one training step of each path."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Also measure peak memory of each step."),
    channels_last: bool = typer.Option(False, "--channels-last", help="NHWC memory format for classifiers and inputs."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: torch's choice)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the rows as JSON and CSV "
                                       "(bench-<device>-<dtype>-<res>px-b<batch>.*); never overwritten."),
    name: Optional[str] = typer.Option(None, "--name", help="File stem instead of the default under --out."),
) -> None:
    """Samples/s and peak memory of a latent classifier vs decoding then classifying (the paper's Table 3),
    side by side in one process, after warm-up. Random weights: timing does not depend on their values."""
    import torch

    from ..bench import BenchConfig, render_table, run_bench, save_results
    from ..progress import console as progress_console

    if threads is not None:
        torch.set_num_threads(threads)
    cfg = BenchConfig(resolution=resolution, batch_size=batch_size, dtype=dtype, device=device, iters=iters,
                      min_time=min_time, warmup=warmup, rounds=rounds, ae=ae, latent_model=latent_model, image_model=image_model,
                      train=train, memory=memory, channels_last=channels_last)
    result = run_bench(cfg, progress=lambda msg: progress_console.print(f"[dim]{msg}[/]"))
    _console.print(render_table(result))
    if out is not None:
        for p in save_results(result, out, name):
            _console.print(f"rows written to {p}")
