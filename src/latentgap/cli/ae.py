"""``latentgap ae``: list, inspect, train and fine-tune autoencoders (one library call per command)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..defaults import AE_FINETUNE_DEFAULTS as FINETUNE_DEFAULTS
from ..defaults import AE_TRAIN_DEFAULTS as TRAIN_DEFAULTS
from . import app

_console = Console()

ae_app = typer.Typer(help="Autoencoders: list the registry, show one's conventions, train the built-in one, "
                          "fine-tune any trainable one.", no_args_is_help=True)
app.add_typer(ae_app, name="ae")

DataOpt = typer.Option(..., "--data", "-d", help="Dataset: phantom[:k=v,...], a MedMNIST name, a shared-data name, "
                       "or a path to a .npz / image folder / .csv manifest.")
OutOpt = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, training.json and the final model/ "
                      "(an interrupted run in it resumes; a finished one is never overwritten).")
ResizeOpt = typer.Option(None, "--resize", help="Resize images to N x N first (N a multiple of the downsampling).")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps.")
CropOpt = typer.Option(None, "--crop", help="Train on random N x N crops (a multiple of the downsampling; "
                       "cheaper steps, whole images are still encoded).")
SeedOpt = typer.Option(TRAIN_DEFAULTS["seed"], "--seed", help="Seeds initial weights, batch order and posterior noise.")
KlOpt = typer.Option(TRAIN_DEFAULTS["kl_weight"], "--kl-weight", help="KL weight, SD convention (KL summed over latents vs. "
                     "reconstruction summed over pixels; SD uses 1e-6).")
LossOpt = typer.Option(TRAIN_DEFAULTS["loss"], "--loss", help="Reconstruction loss: l1 or mse.")
PercOpt = typer.Option(TRAIN_DEFAULTS["perceptual_weight"], "--perceptual-weight", help="LPIPS-VGG weight; used only when the lpips package and "
                       "VGG16 weights are already on disk, otherwise a warning is recorded in training.json.")
CkptOpt = typer.Option(TRAIN_DEFAULTS["checkpoint_every"], "--checkpoint-every", help="Steps between checkpoints.")


@ae_app.command("list")
def list_cmd() -> None:
    """Print the registered autoencoder names (any hub id or local path works too)."""
    from ..autoencoders import AUTOENCODERS

    for name in AUTOENCODERS.names():
        print(name)


@ae_app.command("info")
def info_cmd(spec: str = typer.Argument(..., help="Registry name, hub id (owner/name[/subfolder]) or local path."),
             as_json: bool = typer.Option(False, "--json", help="Print AEInfo as JSON.")) -> None:
    """Load an autoencoder and print its AEInfo (channels, downsampling, scaling convention, weights sha256)."""
    from ..autoencoders import create_autoencoder

    info = create_autoencoder(spec, device="cpu").info.to_dict()
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    table = Table(title=f"autoencoder {spec}", show_header=False)
    for k, v in info.items():
        table.add_row(k, json.dumps(v) if isinstance(v, (dict, list)) else str(v))
    _console.print(table)


@ae_app.command("train")
def train_cmd(
    data: str = DataOpt,
    out: Path = OutOpt,
    steps: int = typer.Option(TRAIN_DEFAULTS["steps"], "--steps", help="Optimisation steps."),
    batch_size: int = typer.Option(TRAIN_DEFAULTS["batch_size"], "--batch-size", help="Images per step."),
    lr: float = typer.Option(TRAIN_DEFAULTS["lr"], "--lr", help="Peak Adam learning rate (warm-up, then cosine decay)."),
    width: int = typer.Option(TRAIN_DEFAULTS["width"], "--width", help="Channels of the first stage (multiple of 8); later stages x2, x4."),
    depth: int = typer.Option(TRAIN_DEFAULTS["depth"], "--depth", help="ResNet blocks per stage."),
    latent_channels: int = typer.Option(TRAIN_DEFAULTS["latent_channels"], "--latent-channels", help="Latent channels."),
    downsample: int = typer.Option(TRAIN_DEFAULTS["downsample"], "--downsample", help="Spatial downsampling factor (power of two)."),
    attention: bool = typer.Option(TRAIN_DEFAULTS["attention"], "--attention/--no-attention", help="Self-attention in the mid blocks."),
    kl_weight: float = KlOpt,
    loss: str = LossOpt,
    perceptual_weight: float = PercOpt,
    checkpoint_every: int = CkptOpt,
    resize: Optional[int] = ResizeOpt,
    crop: Optional[int] = CropOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
) -> None:
    """Train the built-in SD-style KL autoencoder on a dataset; load it afterwards with --ae OUT."""
    from ..autoencoders.train import train_autoencoder

    run = train_autoencoder(data, out, steps=steps, batch_size=batch_size, lr=lr, width=width, depth=depth,
                            latent_channels=latent_channels, downsample=downsample, attention=attention,
                            kl_weight=kl_weight, loss=loss, perceptual_weight=perceptual_weight,
                            checkpoint_every=checkpoint_every, device=device, seed=seed, resize=resize, crop=crop)
    _summary(run)


@ae_app.command("finetune")
def finetune_cmd(
    spec: str = typer.Argument(..., help="Autoencoder to start from: registry name, hub id or local path."),
    data: str = DataOpt,
    out: Path = OutOpt,
    steps: int = typer.Option(FINETUNE_DEFAULTS["steps"], "--steps", help="Optimisation steps."),
    batch_size: int = typer.Option(FINETUNE_DEFAULTS["batch_size"], "--batch-size", help="Images per step."),
    lr: float = typer.Option(FINETUNE_DEFAULTS["lr"], "--lr", help="Peak Adam learning rate (warm-up, then cosine decay)."),
    kl_weight: float = KlOpt,
    loss: str = LossOpt,
    perceptual_weight: float = PercOpt,
    checkpoint_every: int = typer.Option(FINETUNE_DEFAULTS["checkpoint_every"], "--checkpoint-every", help="Steps between checkpoints."),
    grey_to_rgb: bool = typer.Option(True, "--grey-to-rgb/--no-grey-to-rgb",
                                     help="Replicate grey images to RGB for RGB autoencoders."),
    resize: Optional[int] = ResizeOpt,
    crop: Optional[int] = CropOpt,
    device: str = DeviceOpt,
    seed: int = SeedOpt,
) -> None:
    """Fine-tune a trainable autoencoder (diffusers KL / FLUX.2 / tiny / MedVAE) on a target dataset
    (the paper's MedVAE-FT arm), keeping its latent convention; load it afterwards with --ae OUT."""
    from ..autoencoders.train import finetune_autoencoder

    run = finetune_autoencoder(spec, data, out, steps=steps, batch_size=batch_size, lr=lr, kl_weight=kl_weight,
                               loss=loss, perceptual_weight=perceptual_weight, checkpoint_every=checkpoint_every,
                               device=device, seed=seed, grey_to_rgb=grey_to_rgb, resize=resize, crop=crop)
    _summary(run)


def _summary(run: Path) -> None:
    rec = json.loads((Path(run) / "training.json").read_text())
    last = rec["history"][-1] if rec["history"] else [0, float("nan"), float("nan")]
    msg = (f"saved {Path(run) / 'model'}: {last[0]} steps, final loss {last[1]:.4f}, "
           f"PSNR {rec['train_sample_psnr_db']:.2f} dB on {rec['train_sample_n']} training images, "
           f"{rec['train_seconds']:.0f} s")
    if "scaling_factor" in rec:
        msg += f", scaling_factor {rec['scaling_factor']:.4f}"
    _console.print(msg)
    for w in rec["warnings"]:
        _console.print(f"[yellow]warning:[/yellow] {w}")
