"""``latentgap train``: one classifier on one fold in one space; a thin wrapper around ``run_training``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import typer

from . import app


# TrainConfig fields whose command-line option has another name (for error messages)
_FLAGS = {"dataset": "--data", "autoencoder": "--ae", "k": "--folds", "precise_bn_batches": "--precise-bn",
          "drw_switch_epoch": "--drw-epoch", "distill_alpha": "--alpha", "distill_temperature": "--temperature",
          "distill_teacher": "--teacher", "hpo_trials": "--trials"}


@app.command("train")
def train_cmd(
    data: str = typer.Option(..., "--data", "-d", help="Dataset: phantom[:k=v,...], a MedMNIST name, a shared-data "
                             "name (isic_skin8_64, ...) or a path to a .npz / image folder / .csv manifest."),
    ae: Optional[str] = typer.Option(None, "--ae", "-a", help="Autoencoder (registry name, hub id or path); "
                                     "needed for --space recon/latent and --distill."),
    space: str = typer.Option("image", "--space", "-s", help="image, recon (decode(encode(x))) or latent (encode(x))."),
    fold: int = typer.Option(0, "--fold", "-k", help="Fold to train (its test part is held out)."),
    model: Optional[str] = typer.Option(None, "--model", help="resnet18, resnet50, convnext_atto, convnext_nano, "
                                        "convnext_tiny (default: resnet50 for image/recon, convnext_tiny for latent)."),
    pretrained: str = typer.Option("auto", "--pretrained", help="auto (ImageNet if reachable, else random init with a "
                                   "warning), true, false, or a path to a weights file."),
    noise_cond: bool = typer.Option(False, "--noise-cond", help="FiLM noise conditioning (latent ConvNeXt)."),
    distill: bool = typer.Option(False, "--distill", help="Distil from a reconstruction-space teacher of this fold."),
    teacher: Optional[Path] = typer.Option(None, "--teacher", help="Run folder of a finished recon-space teacher "
                                           "(default: train one under ROOT/teachers)."),
    alpha: float = typer.Option(1.0, "--alpha", help="Weight of the distillation KL term."),
    temperature: float = typer.Option(4.0, "--temperature", help="Distillation temperature T."),
    hpo: bool = typer.Option(False, "--hpo", help="Optuna search inside the fold's training part first."),
    trials: int = typer.Option(20, "--trials", help="Optuna trials with --hpo."),
    epochs: int = typer.Option(60, "--epochs", help="Largest number of epochs."),
    until: str = typer.Option("epochs", "--until", help="epochs (cosine schedule over --epochs) or converged (to the "
                              "early-stopping point under the --epochs ceiling; lr halved on validation plateaus)."),
    monitor: str = typer.Option("bacc", "--monitor", help="Validation metric that picks the best epoch and drives "
                                "early stopping: bacc (the paper's) or auc (MedMNIST's model selection)."),
    patience: int = typer.Option(15, "--patience", help="Early-stopping patience on the --monitor metric (validation)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Mini-batch size."),
    lr: float = typer.Option(1e-3, "--lr", help="AdamW learning rate (cosine schedule)."),
    weight_decay: float = typer.Option(0.05, "--weight-decay", help="AdamW weight decay."),
    loss: str = typer.Option("ldam", "--loss", help="ldam (LDAM-DRW, cosine head) or ce."),
    drw_epoch: int = typer.Option(10, "--drw-epoch", help="Epoch at which deferred re-weighting starts."),
    augment: str = typer.Option("auto", "--augment", help="auto (with --views: none, the views are the augmentation; "
                                "else flip+shift for images/reconstructions, none for cached latents), none, flip, "
                                "flip2, shift, flip+shift, flip2+shift."),
    views: str = typer.Option("identity", "--views", help="Encode-time views a training sample draws from, comma-"
                              "separated, identity first (e.g. identity,hflip): every space sees the same augmented "
                              "image; the cache stores the latents of each view."),
    train_data: str = typer.Option("real", "--train-data", help="real (the fold's training part), synthetic (TSTR: "
                                   "only --synthetic) or real+synthetic (augmentation); validation and test stay real."),
    synthetic: Optional[Path] = typer.Option(None, "--synthetic", help="Synthetic dataset folder of this fold "
                                             "(`latentgap synth sample`)."),
    precise_bn: int = typer.Option(8, "--precise-bn", help="Recompute BatchNorm statistics over N training batches "
                                   "before each validation (0: off)."),
    protocol: str = typer.Option("kfold", "--protocol", help="kfold, or official (the dataset's own split)."),
    folds: int = typer.Option(5, "--folds", help="K of the K-fold splits."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the fold assignment."),
    seed: int = typer.Option(0, "--seed", help="Training seed (init, shuffling, augmentation, noise)."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize images to N x N first."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: ROOT/runs/<data>-<ae>-<space>-"
                                       "<variant>-fold<k>-seed<s>]."),
    root: Optional[Path] = typer.Option(None, "--root", help="Working folder for caches, splits and teachers "
                                        "(default: $LATENTGAP_HOME or ./.latentgap)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
) -> None:
    """Train a classifier on one fold (LDAM-DRW, early stopping on validation bACC) and write a run folder:
    config.yaml, metrics.jsonl, checkpoint.safetensors, test_probs.npy and result.json. Re-running the same
    command resumes from the last checkpoint."""
    from pydantic import ValidationError

    from ..errors import UserError
    from ..train import TrainConfig, run_training
    from ..workspace import default_root

    try:
        cfg = TrainConfig(
            dataset=data, autoencoder=ae, space=space, fold=fold, model=model, pretrained=pretrained,
            noise_cond=noise_cond, distill=distill, distill_teacher=str(teacher) if teacher else None,
            distill_alpha=alpha, distill_temperature=temperature, hpo=hpo, hpo_trials=trials, epochs=epochs, until=until, monitor=monitor,
            patience=patience, precise_bn_batches=precise_bn, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, loss=loss,
            drw_switch_epoch=drw_epoch, augment=augment, train_data=train_data,
            synthetic=str(synthetic) if synthetic else None, views=[v.strip() for v in views.split(",") if v.strip()],
            protocol=protocol, k=folds, split_seed=split_seed, seed=seed,
            resize=resize, root=str(root) if root else None, device=device,
        )
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0])
        flag = _FLAGS.get(field, "--" + field.replace("_", "-"))
        raise UserError(f"{flag}: {err['msg']}", "pass a valid value (see --help)") from None
    cfg = cfg.resolved()
    if out is None:
        tag = "-".join(re.sub(r"[^A-Za-z0-9_.=]+", "_", Path(p).stem) for p in (data, ae or "none"))
        out = (root or default_root()) / "runs" / f"{tag}-{cfg.space}-{cfg.variant}-fold{fold}-seed{seed}"
    row = run_training(cfg, out)
    keys = ("dataset", "autoencoder", "space", "variant", "fold", "bacc", "auc", "mcc", "acc", "epochs",
            "best_epoch", "pretrained", "train_seconds")
    typer.echo(json.dumps({k: row.get(k) for k in keys}))
    typer.echo(f"run folder: {out}")
