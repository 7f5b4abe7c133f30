"""``latentgap synth ...``: latent diffusion generators (thin wrappers around ``latentgap.synth``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import typer

from . import app

synth_app = typer.Typer(help="Latent diffusion synthesis: train a class-conditional generator on a fold's latents.",
                        no_args_is_help=True)
app.add_typer(synth_app, name="synth")

_FLAGS = {"dataset": "--data", "autoencoder": "--ae", "k": "--folds"}


@synth_app.command("train")
def synth_train_cmd(
    data: str = typer.Option(..., "--data", "-d", help="Dataset (single-label): a shared-data name, MedMNIST name, "
                             "phantom[:k=v,...] or a path."),
    ae: str = typer.Option(..., "--ae", "-a", help="Autoencoder whose latent space the generator models."),
    fold: int = typer.Option(0, "--fold", "-k", help="Fold whose *training part* the generator learns (never its "
                             "validation or test part)."),
    folds: int = typer.Option(5, "--folds", help="K of the K-fold splits (the study's splits when --root is the study)."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the fold assignment."),
    backbone: str = typer.Option("dit", "--backbone", help="dit (DiTTransformer2DModel) or unet (UNet2DModel)."),
    size: str = typer.Option("tiny", "--size", help="tiny (CPU, minutes), small, base, large (GPU)."),
    objective: str = typer.Option("flow", "--objective", help="flow (rectified flow, logit-normal times) or vpred "
                                  "(DDPM v-prediction, min-SNR weighting)."),
    steps: int = typer.Option(2000, "--steps", help="Optimisation steps."),
    batch_size: int = typer.Option(64, "--batch-size", help="Latents per step."),
    lr: float = typer.Option(3e-4, "--lr", help="AdamW learning rate (linear warm-up over --warmup steps)."),
    warmup: int = typer.Option(100, "--warmup", help="Warm-up steps."),
    label_dropout: float = typer.Option(0.1, "--label-dropout", help="Share of labels dropped to 'no class' "
                                        "(classifier-free guidance needs > 0)."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", help="EMA decay (with warm-up)."),
    views: str = typer.Option("identity", "--views", help="Encode-time views to train on, e.g. identity,hflip."),
    seed: int = typer.Option(0, "--seed", help="Seed of init, batches, label dropout and noise."),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", help="Steps between checkpoints."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize images to N x N before encoding."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default ROOT/generators/<data>-<ae>-"
                                       "<backbone>-<size>-<objective>-fold<k>)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Working folder for caches and splits."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
) -> None:
    """Train a class-conditional latent diffusion generator on one fold's training latents. Re-running the same
    command resumes from the last checkpoint (bit-identical on CPU); a finished run is not retrained."""
    from pydantic import ValidationError

    from ..errors import UserError
    from ..synth.train import SynthConfig, train_generator
    from ..workspace import default_root

    try:
        cfg = SynthConfig(dataset=data, autoencoder=ae, fold=fold, k=folds, split_seed=split_seed, backbone=backbone,
                          size=size, objective=objective, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup,
                          label_dropout=label_dropout, ema_decay=ema_decay, seed=seed, checkpoint_every=checkpoint_every,
                          views=[v.strip() for v in views.split(",") if v.strip()], resize=resize,
                          root=str(root) if root else None, device=device)
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0])
        raise UserError(f"{_FLAGS.get(field, '--' + field.replace('_', '-'))}: {err['msg']}",
                        "pass a valid value (see --help)") from None
    if out is None:
        tag = "-".join(re.sub(r"[^A-Za-z0-9_.=]+", "_", Path(p).stem) for p in (data, ae))
        out = (root or default_root()) / "generators" / f"{tag}-{backbone}-{size}-{objective}-fold{fold}"
    row = train_generator(cfg, out)
    keys = ("dataset", "autoencoder", "fold", "backbone", "size", "objective", "parameters", "steps", "final_loss",
            "samples_per_s", "train_seconds")
    typer.echo(json.dumps({k: row.get(k) for k in keys}))
    typer.echo(f"run folder: {out}")


@synth_app.command("sample")
def synth_sample_cmd(
    generator: Path = typer.Option(..., "--generator", "-g", help="Run folder of `latentgap synth train`."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the synthetic dataset (never overwritten)."),
    per_class: Optional[int] = typer.Option(None, "--per-class", help="Plan: N samples of every class."),
    fill: bool = typer.Option(False, "--fill", help="Plan: fill every class up to the majority count of the fold's "
                              "training part."),
    ratio: Optional[float] = typer.Option(None, "--ratio", help="Plan: R synthetic per real image of each class."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Only these class ids, comma-separated."),
    steps: int = typer.Option(50, "--steps", help="Sampler steps."),
    sampler: str = typer.Option("auto", "--sampler", help="auto (euler for flow, ddim for vpred), euler, ddim, dpm++."),
    cfg_scale: float = typer.Option(1.0, "--cfg", help="Classifier-free guidance scale (1 = off)."),
    guide: Optional[Path] = typer.Option(None, "--guide", help="Noise-conditioned latent classifier run of the "
                                         "generator's fold (`latentgap train --space latent --noise-cond`)."),
    guide_scale: float = typer.Option(1.0, "--guide-scale", help="Classifier-guidance scale s (with --guide)."),
    filter_run: Optional[Path] = typer.Option(None, "--filter", help="Latent classifier run of the generator's fold: "
                                              "keep samples whose intended class has probability >= --threshold."),
    threshold: float = typer.Option(0.5, "--threshold", help="Acceptance threshold of --filter."),
    max_tries: int = typer.Option(20, "--max-tries", help="Draws per requested sample before a class gives up."),
    seed: int = typer.Option(0, "--seed", help="Seed of the initial noise."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
) -> None:
    """Sample a synthetic dataset from a trained generator (optionally guided and filtered by latent classifiers)
    and write latents, decoded images, labels and a manifest marking it synthetic."""
    from ..device import resolve_device
    from ..synth.dataset import write_synthetic
    from ..synth.sample import load_generator, plan_counts, sample_plan
    from ..train import load_run

    dev = resolve_device(device)
    gen = load_generator(generator, dev)
    ids = [int(c) for c in classes.split(",")] if classes else None
    counts = plan_counts(gen, per_class=per_class, fill=fill, ratio=ratio, classes=ids)
    g = load_run(guide, dev) if guide else None
    f = load_run(filter_run, dev) if filter_run else None
    res = sample_plan(gen, counts, filter_run=f, threshold=threshold, max_tries=max_tries, seed=seed, steps=steps,
                      sampler=sampler, cfg_scale=cfg_scale, guide=g, guide_scale=guide_scale if g else 0.0)
    settings = {"sampler": sampler, "steps": steps, "cfg_scale": cfg_scale, "seed": seed,
                "guide": str(guide) if guide else None, "guide_scale": guide_scale if guide else 0.0,
                "filter": str(filter_run) if filter_run else None, "threshold": threshold if filter_run else None,
                "plan": {"per_class": per_class, "fill": fill, "ratio": ratio, "classes": ids},
                "requested": counts.tolist()}
    path = write_synthetic(out, gen, res, settings, device=dev)
    typer.echo(json.dumps({"out": str(path), "n": int(len(res["labels"])), "requested": counts.tolist(),
                           "accepted": res["accepted"].tolist(),
                           "acceptance": [None if a != a else round(float(a), 3) for a in res["acceptance"]]}))


@synth_app.command("eval")
def synth_eval_cmd(
    real: str = typer.Option(..., "--real", help="The real dataset the synthetic images imitate."),
    synthetic: str = typer.Option(..., "--synthetic", help="Synthetic images: a `latentgap synth sample` folder, or "
                                  "your own generator's images as a folder with one sub-folder per class (named "
                                  "after the real classes or their ids) or a CSV manifest."),
    fold: int = typer.Option(0, "--fold", "-k", help="Real fold: fidelity against its training part, privacy "
                             "against its training vs test part, utility tested on its test part."),
    folds: int = typer.Option(5, "--folds", help="K of the real dataset's K-fold splits."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the fold assignment."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize real and synthetic images to N x N."),
    utility: bool = typer.Option(True, "--utility/--no-utility", help="Train TRTR and TSTR image classifiers "
                                 "(ResNet-18, until converged under --epochs) on the fold."),
    epochs: int = typer.Option(30, "--epochs", help="Epoch ceiling of the utility classifiers."),
    out: Path = typer.Option(Path("synth-eval"), "--out", "-o", help="Folder for the imported set, runs and the "
                             "summary (summary.json, gallery.png)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
) -> None:
    """Evaluate a synthetic image set against real data: utility (TSTR vs TRTR on the real fold's test part),
    fidelity (FD, KID, precision/recall, density/coverage in random-conv features) and privacy (nearest-neighbour
    copies). Membership inference needs the generator and is skipped for external sets, with the reason."""
    import numpy as np

    from ..data import load_or_make_splits, open_dataset
    from ..storage import atomic_write_bytes, atomic_write_json
    from ..data.synthetic import is_synthetic_folder
    from ..synth.dataset import import_external
    from ..synth.evaluate import evaluate_synthetic
    from ..synth.fidelity import RandomConvFeatures
    from ..train import TrainConfig, run_training
    from ..workspace import splits_path

    out.mkdir(parents=True, exist_ok=True)
    real_ds = open_dataset(real, resize=resize)
    splits = load_or_make_splits(splits_path(out, real_ds, "kfold", folds, split_seed), real_ds, protocol="kfold",
                                 k=folds, seed=split_seed)
    if fold >= len(splits.folds):
        from ..errors import UserError

        raise UserError(f"fold {fold} does not exist ({folds} folds)", f"pass --fold between 0 and {folds - 1}")
    syn_dir = Path(synthetic)
    if not is_synthetic_folder(syn_dir):  # an external set: imported once as a synthetic dataset of this fold
        syn_dir = out / "imported"
        if not is_synthetic_folder(syn_dir):
            import_external(syn_dir, real_ds, open_dataset(synthetic, resize=resize), fold=fold, splits=splits)
    syn_ds = open_dataset(str(syn_dir))
    f = splits.folds[fold]
    row = evaluate_synthetic(real_ds, np.asarray(f.train), np.asarray(f.test), syn_ds,
                             {"random": RandomConvFeatures(real_ds.channels, seed=0)})
    atomic_write_bytes(out / "gallery.png", row.pop("gallery"))
    if utility:
        common = dict(dataset=real, resize=resize, space="image", fold=fold, k=folds, split_seed=split_seed,
                      model="resnet18", pretrained="false", epochs=epochs, until="converged", patience=8,
                      device=device, root=str(out), views=["identity", "hflip"])
        trtr = run_training(TrainConfig(**common), out / "runs" / "trtr")
        tstr = run_training(TrainConfig(**common, variant="tstr", synthetic=str(syn_dir)), out / "runs" / "tstr")
        row["utility"] = {"trtr_bacc": trtr["bacc"], "tstr_bacc": tstr["bacc"], "tstr_over_trtr": tstr["bacc"] / trtr["bacc"],
                          "note": "one fold, one seed: a first look; run a study with synth.evaluate for paired "
                                  "statistics across folds"}
    atomic_write_json(out / "summary.json", row)
    fidr = row["fidelity"]["random"]["overall"]
    typer.echo(json.dumps({"n_synthetic": row["n_synthetic"], "fd": round(fidr["fd"], 4), "lead": fidr["lead"],
                           "kid": round(fidr["kid_mean"], 5), "precision": round(fidr["precision"], 3),
                           "recall": round(fidr["recall"], 3), "copy_rate_pixel_l2": row["copy_rate_pixel_l2"],
                           "membership": row.get("mia_skipped"), **row.get("utility", {})}))
    typer.echo(f"summary: {out / 'summary.json'}")
