"""``latentgap seg ...``: segmentation with latent diffusion and its U-Net baseline (thin wrappers around
``latentgap.seg``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import app

seg_app = typer.Typer(help="Segmentation: latent diffusion segmenter (MedSegLatDiff), pixel-space diffusion and a "
                           "U-Net baseline on the same folds; predict and evaluate on other images.",
                      no_args_is_help=True)
app.add_typer(seg_app, name="seg")

_SHOW = ("dataset", "method", "fold", "dice_per_image", "dice_global", "iou_per_image", "hd95_per_image", "ece",
         "brier", "uncertainty_auroc_std", "uncertainty_auroc_entropy", "mask_ae_ceiling_dice_per_image",
         "cost_steps_x_samples", "seconds_per_image", "epochs", "best_epoch", "train_seconds")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


@seg_app.command("train")
def seg_train_cmd(
    data: str = typer.Option(..., "--data", "-d", help="Segmentation dataset: kvasir_seg_128, busi_seg_128, a .npz "
                             "({split}_images/{split}_masks), a folder with images/ and masks/, or a CSV (image,mask)."),
    method: str = typer.Option("latent", "--method", "-m", help="latent (mask-latent diffusion), pixel (pixel-space "
                               "diffusion, same denoiser) or unet (deterministic baseline)."),
    fold: int = typer.Option(0, "--fold", "-k", help="Fold to train on (its test part is reported)."),
    folds: int = typer.Option(5, "--folds", help="K of the K-fold splits (grouped by ids, stratified by empty mask)."),
    split_seed: int = typer.Option(0, "--split-seed", help="Seed of the fold assignment."),
    resize: Optional[int] = typer.Option(None, "--resize", help="Resize images (bilinear) and masks (nearest) to N x N "
                                       "first; recorded in the run."),
    ae: str = typer.Option("taef2", "--ae", "-a", help="Image autoencoder of the 'latent' condition (and of "
                           "--unet-latents)."),
    unet_latents: bool = typer.Option(False, "--unet-latents", help="unet only: also feed the U-Net --ae's image "
                                      "latents (upsampled, concatenated to the input) — the deterministic control of "
                                      "the latent condition; rows say method unet-latent."),
    condition: str = typer.Option("latent,encoder", "--condition", help="Diffusion conditions, comma-separated: "
                                  "latent (image latents of --ae), encoder (trainable image encoder), image (pixels)."),
    objective: str = typer.Option("vpred", "--objective", help="vpred (DDPM v-prediction, min-SNR) or flow."),
    width: int = typer.Option(64, "--width", help="Denoiser channels of the first level."),
    mask_downsample: int = typer.Option(8, "--mask-downsample", help="Factor of the mask autoencoder (latent method)."),
    mask_epochs: int = typer.Option(15, "--mask-epochs", help="Epoch ceiling of the mask autoencoder."),
    epochs: int = typer.Option(60, "--epochs", help="Epoch ceiling (early stopping on validation Dice)."),
    patience: int = typer.Option(10, "--patience", help="Epochs without a better validation Dice before stopping."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per step."),
    lr: float = typer.Option(5e-4, "--lr", help="AdamW learning rate (cosine schedule)."),
    ema_decay: float = typer.Option(0.999, "--ema-decay", help="Weight average of the diffusion denoiser (validated, "
                                    "selected and sampled); 0 = none."),
    val_steps: int = typer.Option(1, "--val-steps", help="Sampler steps of the validation prediction early stopping "
                                  "reads (1 is cheap; the test's --steps selects on what is tested)."),
    samples: int = typer.Option(5, "--samples", help="Samples per test image (diffusion methods)."),
    steps: int = typer.Option(10, "--steps", help="Sampler steps per sample (1 = single-step mode)."),
    sampler: str = typer.Option("auto", "--sampler", help="auto, ddim, dpm++ (vpred) or euler (flow)."),
    seed: int = typer.Option(0, "--seed", help="Seed of init, batches, flips and noise."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (a re-run resumes; a finished run is returned)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
) -> None:
    """Train one segmentation model on one fold and test it on the fold's test part. The diffusion methods train the
    fold's mask autoencoder first (its round-trip Dice is the ceiling reported beside the result)."""
    from pydantic import ValidationError

    from ..errors import UserError
    from ..seg.data import open_seg_dataset, resize_seg, seg_splits

    if method not in ("latent", "pixel", "unet"):
        raise UserError(f"unknown method '{method}'", "use latent, pixel or unet")
    if unet_latents and method != "unet":
        raise UserError("--unet-latents applies to --method unet", "the diffusion methods take --condition latent")
    ds = open_seg_dataset(data)
    if resize:
        ds = resize_seg(ds, resize)
    splits = seg_splits(ds, k=folds, seed=split_seed)
    try:
        if method == "unet":
            from ..seg.baseline import UNetConfig, train_unet

            row = train_unet(UNetConfig(dataset=ds.name, image_size=list(ds.image_size), fold=fold, k=folds, split_seed=split_seed, epochs=epochs,
                                        patience=patience, batch_size=batch_size, lr=lr, seed=seed, device=device,
                                        latent_ae=ae if unet_latents else None),
                             out, ds, splits)
        else:
            from ..seg.segmenter import SegmenterConfig, train_segmenter

            cfg = SegmenterConfig(dataset=ds.name, image_size=list(ds.image_size), fold=fold, k=folds, split_seed=split_seed, space=method,
                                  condition=_csv(condition), autoencoder=ae, objective=objective, width=width,
                                  mask_ae={"downsample": mask_downsample, "epochs": mask_epochs}, epochs=epochs,
                                  patience=patience, batch_size=batch_size, lr=lr, ema_decay=ema_decay,
                                  val_steps=val_steps, samples=samples, steps=steps, sampler=sampler, seed=seed,
                                  device=device)
            row = train_segmenter(cfg, out, ds, splits)
    except ValidationError as e:
        err = e.errors()[0]
        raise UserError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}", "pass a valid value (see --help)") from None
    if ds.resized_from:
        from ..storage import atomic_write_json

        atomic_write_json(Path(out) / "resize.json", {"resized_from": ds.resized_from, "resized_to": list(ds.image_size)})
    typer.echo(json.dumps({k: row.get(k) for k in _SHOW if k in row}))
    typer.echo(f"run folder: {out}")


def _open_images(data: str):
    """(dataset, file names or None) of the images ``seg predict`` segments: a synthetic dataset's images, a folder
    of images alone (``<folder>/images`` or the folder itself), or any segmentation dataset (its masks unused)."""
    import numpy as np

    from ..data.synthetic import is_synthetic_folder, open_synthetic
    from ..errors import UserError
    from ..seg.data import IMAGE_EXT, SegDataset, _read, open_seg_dataset

    p = Path(data)
    if p.is_dir() and is_synthetic_folder(p):  # a synthetic dataset's decoded images, named by their row
        syn = open_synthetic(p)
        arr = syn.load_uint8(np.arange(len(syn)))
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr
        names = [f"synthetic-{i:06d}" for i in range(len(arr))]
        return SegDataset(syn.name, arr, np.zeros(arr.shape[:3], np.uint8), source=str(p)), names
    if p.is_dir() and not (p / "masks").is_dir():
        d = p / "images" if (p / "images").is_dir() else p
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_EXT)
        if not files:
            raise UserError(f"{d} holds no images ({', '.join(IMAGE_EXT)})", "point --data at a folder of images")
        imgs = [_read(f) for f in files]
        if len({a.shape for a in imgs}) > 1:
            raise UserError(f"{d}: images have different sizes", "resize them to one size first")
        arr = np.stack(imgs)
        return SegDataset(d.name, arr, np.zeros(arr.shape[:3], np.uint8), source=str(d)), [f.name for f in files]
    return open_seg_dataset(data), None


@seg_app.command("predict")
def seg_predict_cmd(
    model: Path = typer.Option(..., "--model", help="A finished seg train run folder."),
    data: str = typer.Option(..., "--data", "-d", help="Images to segment: a folder of images, a folder with images/ "
                             "(and masks/), a .npz or a CSV. Resized to the model's training size (recorded)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: predictions.npz, predict.json, overlays.png."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Samples per image (default: the run's)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (default: the run's; 1 = single step)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="ddim, dpm++ or euler (default: the run's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling noise."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
) -> None:
    """Segment images with a trained model: probability map, mask and confidence map per image."""
    import numpy as np

    from ..errors import UserError
    from ..seg.apply import fit_to_model, load_seg_model, save_overlays
    from ..storage import atomic_write, atomic_write_json

    m = load_seg_model(model, device)
    ds, names = _open_images(data)
    ds, resize = fit_to_model(ds, m)
    if (out / "predictions.npz").exists():
        raise UserError(f"{out} already holds predictions", "choose a new --out folder (results are never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    pred = m.predict(ds.images, samples=samples, steps=steps, sampler=sampler, seed=seed)
    def write(path):
        with open(path, "wb") as f:
            np.savez_compressed(f, prob=pred["prob"].astype(np.float32), mask=pred["mask"],
                                std=pred["std"].astype(np.float32), entropy=pred["entropy"].astype(np.float32))

    atomic_write(out / "predictions.npz", write)
    save_overlays(out / "overlays.png", ds.images, pred)
    cost = m.cost
    cost.update({k: v for k, v in (("samples", samples), ("steps", steps)) if v})
    atomic_write_json(out / "predict.json", {"model": str(model), "method": m.method, "data": data, "n": len(ds),
                                             "files": names, **resize, **cost, "seed": seed})
    typer.echo(f"{len(ds)} images segmented ({m.method}; resized {resize['resized_from']} -> {resize['resized_to']}"
               f"{'' if resize['resized'] else ', no resize needed'}); wrote {out}/predictions.npz, overlays.png")


@seg_app.command("eval")
def seg_eval_cmd(
    model: Path = typer.Option(..., "--model", help="A finished seg train run folder."),
    data: str = typer.Option(..., "--data", "-d", help="Images with masks: a folder with images/ and masks/, a .npz "
                             "or a CSV (every image is evaluated; resized to the training size, recorded)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write eval.json and overlays.png here."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Samples per image (default: the run's)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (default: the run's)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="ddim, dpm++ or euler (default: the run's)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling noise."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, mps."),
) -> None:
    """Dice / IoU (per image and global), HD95, ECE, Brier and the confidence map's error AUROC of a trained model
    on a labelled set."""
    from ..seg.apply import evaluate_model, load_seg_model, save_overlays
    from ..seg.data import open_seg_dataset
    from ..storage import atomic_write_json

    m = load_seg_model(model, device)
    ds = open_seg_dataset(data)  # image + mask pairs; names what is missing otherwise (masks, a synthetic set, ...)
    row, pred, ds = evaluate_model(m, ds, samples=samples, steps=steps, sampler=sampler, seed=seed)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "eval.json", row)
        save_overlays(out / "overlays.png", ds.images, pred, ds.masks)
    typer.echo(json.dumps({k: row.get(k) for k in (*_SHOW, "n_images", "resized_from", "resized_to", "aggregation") if k in row}))
