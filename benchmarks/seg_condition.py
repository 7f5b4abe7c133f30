"""What the pretrained image latents do for the latent diffusion segmenter: the record's segmenter (condition TAEF2
latents + a trainable encoder) against the same segmenter conditioned on the trainable encoder alone, and the U-Net.

Why: in ``seg_real`` the segmenter reads TAEF2's latents of the image (a pretrained autoencoder) while the U-Net's
encoder starts from random weights (ImageNet weights cannot be fetched here), so "diffusion beats / loses to the
U-Net" mixes two things. This run changes only ``condition`` (``[encoder]``; every other setting is ``seg-shared``'s,
the fold's mask autoencoder is the record's own — it does not depend on the condition, so its finished folder is
reused when its configuration hash matches) and compares the three models image by image on the fold's test part:
per-image Dice of each, and paired differences with a 95 % bootstrap CI over the test images (grouped by the
dataset's ids when an id has several images) and the Wilcoxon signed-rank test.

    OMP_NUM_THREADS=1 python benchmarks/seg_condition.py --work /work/runs/seg_condition \
        --record-work /work/runs/seg_real --datasets kvasir_seg_128

Resumable like ``seg_real`` (the run folder resumes; its ``result.json``, ``config.yaml`` and validation curve are
kept under ``benchmarks/seg_condition_runs/``). The record's runs must be finished with their weights in
``--record-work``. Writes benchmarks/seg_condition.json and .md (``--append`` keeps other datasets' rows).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from seg_real import K, appended, configs, run_name, sync, write_pair  # noqa: E402

HERE = Path(__file__).parent
RECORD = HERE / "seg_condition_runs"
VARIANT = {"condition": ["encoder"], "autoencoder": None}


def variant_config(ds, fold: int):
    """The record's segmenter configuration of ``ds`` x ``fold`` with the trainable encoder as its only condition."""
    cfg = configs(ds, fold)["latent-diffusion"]
    return cfg.model_copy(update=VARIANT)


def train_variant(work: Path, record_work: Path, ds, sp, fold: int) -> Path:
    """Train (or resume) the encoder-only segmenter of ``ds`` x ``fold``; the record's finished mask autoencoder of
    the fold is copied in first when its configuration hash is the one this run would train."""
    from latentgap.seg.segmenter import train_segmenter

    cfg = variant_config(ds, fold)
    run = work / run_name(ds.name, fold, "latent-diffusion", cfg)
    recorded = configs(ds, fold)["latent-diffusion"]
    source = record_work / run_name(ds.name, fold, "latent-diffusion", recorded) / "mask_ae"
    target = run / "mask_ae"
    if (not target.exists() and (source / "result.json").exists()
            and json.loads((source / "result.json").read_text())["config_hash"] == cfg.mask_ae_config().config_hash()):
        run.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, run / "mask_ae.tmp")
        (run / "mask_ae.tmp").rename(target)
        print(f"{ds.name} fold {fold}: mask autoencoder reused from {source}", flush=True)
    t0 = time.perf_counter()
    train_segmenter(cfg, run, ds, sp)
    print(f"{ds.name} fold {fold} encoder-only segmenter: {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def paired(a: np.ndarray, b: np.ndarray, groups: np.ndarray) -> dict:
    """Mean of ``a - b`` over images, a 95 % bootstrap CI over groups (SciPy, percentile) and Wilcoxon's p."""
    from scipy.stats import bootstrap, wilcoxon

    d = a - b
    _, inv = np.unique(groups, return_inverse=True)
    per_group = np.bincount(inv, weights=d) / np.bincount(inv)  # one value per id: images of one id move together
    ci = bootstrap((per_group,), np.mean, confidence_level=0.95, n_resamples=5000, method="percentile",
                   random_state=0).confidence_interval
    p = float(wilcoxon(per_group).pvalue) if np.any(per_group != 0) else 1.0
    return {"mean_diff": float(d.mean()), "ci": [float(ci.low), float(ci.high)], "p_wilcoxon": p,
            "groups": int(len(per_group))}


def compare(record_work: Path, ds, sp, fold: int, variant_run: Path) -> list[dict]:
    """Per-image Dice of the U-Net, the record's segmenter and the encoder-only one on the same test images (each
    model's recorded sampling budget and test seed), and the paired differences."""
    from latentgap.seg.apply import evaluate_model, load_seg_model
    from latentgap.seg.data import SegDataset
    from latentgap.seg.metrics import overlap

    part = np.asarray(sp.folds[fold].test)
    test = SegDataset(ds.name, ds.images[part], ds.masks[part], num_classes=ds.num_classes)
    groups = np.asarray(ds.ids)[part] if getattr(ds, "ids", None) is not None else np.arange(len(part))
    cfgs = configs(ds, fold)
    runs = {"unet": record_work / run_name(ds.name, fold, "unet", cfgs["unet"]),
            "latent + encoder (record)": record_work / run_name(ds.name, fold, "latent-diffusion",
                                                                 cfgs["latent-diffusion"]),
            "encoder only": variant_run}
    rows, dice = [], {}
    for label, run in runs.items():
        if not (run / "checkpoint.safetensors").exists() or not (run / "result.json").exists():
            raise SystemExit(f"{run} is not finished or its weights are not there: run benchmarks/seg_real.py first")
        # the recorded budget; seed 1 = the test seed train_segmenter uses (cfg.seed + 1 with seed 0)
        row, pred, _ = evaluate_model(load_seg_model(run, "cpu"), test, seed=1)
        dice[label] = overlap(pred["mask"], test.masks)["dice_values"]  # the row keeps only their mean
        rows.append({"dataset": ds.name, "fold": fold, "model": label, "run": run.name,
                     **{k: row.get(k) for k in ("dice_per_image", "dice_global", "iou_per_image", "hd95_per_image",
                                                "ece", "uncertainty_auroc_std", "seconds_per_image")}})
        print(f"{ds.name} fold {fold} {label}: Dice/img {rows[-1]['dice_per_image']:.3f}", flush=True)
    for a, b in (("latent + encoder (record)", "encoder only"), ("latent + encoder (record)", "unet"),
                 ("encoder only", "unet")):
        rows.append({"dataset": ds.name, "fold": fold, "model": f"{a} − {b}", **paired(dice[a], dice[b], groups)})
    return rows


def write(rows: list[dict], command: str) -> None:
    import pandas as pd

    from latentgap.reports.tables import to_markdown

    def f3(v):
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"

    models = pd.DataFrame([{"dataset": r["dataset"], "fold": r["fold"], "model": r["model"],
                            "Dice (per image)": f3(r["dice_per_image"]), "Dice (global)": f3(r["dice_global"]),
                            "IoU (per image)": f3(r["iou_per_image"]), "HD95 px": f3(r["hd95_per_image"]),
                            "ECE": f3(r["ece"]), "error AUROC (std map)": f3(r["uncertainty_auroc_std"]),
                            "s / image": f"{r['seconds_per_image']:.2f}"} for r in rows if "mean_diff" not in r])
    diffs = pd.DataFrame([{"dataset": r["dataset"], "fold": r["fold"], "difference (per-image Dice)": r["model"],
                           "mean": f"{100 * r['mean_diff']:+.1f} pts",
                           "95 % CI": f"[{100 * r['ci'][0]:+.1f}, {100 * r['ci'][1]:+.1f}]",
                           "Wilcoxon p": f"{r['p_wilcoxon']:.3g}", "groups": r["groups"]}
                          for r in rows if "mean_diff" in r])
    lines = ["# Segmenter condition: pretrained image latents (TAEF2) + trainable encoder vs the encoder alone", "",
             f"Command: `{command}` (script: `benchmarks/seg_condition.py`). The encoder-only segmenter has every "
             "other setting of `seg-shared` and the same fold's mask autoencoder; all three models are evaluated "
             "here on the fold's whole test part with sampling seed 1 (the record's budget: 5 samples x 10 DDIM "
             "steps). Per image = mean of per-image Dice (MONAI; empty on empty = 1); global = pixels pooled. "
             "Differences are paired by image; CI = percentile bootstrap over the test images grouped by id "
             "(SciPy, 5,000 resamples); p = Wilcoxon signed-rank on the same per-id differences. One fold: the "
             "CI covers the test images, not fold-to-fold variation.", "",
             to_markdown(models), "", to_markdown(diffs), ""]
    trained = [r for r in rows if r.get("model") == "encoder only"]
    for r in trained:
        res = json.loads((RECORD / r["run"] / "result.json").read_text())
        lines.append(f"* {r['dataset']} fold {r['fold']}, encoder only: {res['convergence']} (epochs {res['epochs']} "
                     f"of {res['max_epochs']}, best {res['best_epoch']}), {res['train_seconds']:.0f} s training, "
                     f"{res['parameters']:,} parameters.")
    write_pair("seg_condition", lines, rows, command)


def main() -> None:
    from latentgap.seg.data import open_seg_dataset, seg_splits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/lgx/seg_condition")
    ap.add_argument("--record-work", default="/tmp/lgx/seg_real", help="seg_real's --work (the record's weights)")
    ap.add_argument("--datasets", nargs="+", default=["kvasir_seg_128"])
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--append", action="store_true", help="keep the rows of other datasets in seg_condition.json")
    args = ap.parse_args()
    work, record_work = Path(args.work), Path(args.record_work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.datasets:
        ds = open_seg_dataset(name)
        sp = seg_splits(ds, k=K, seed=0)
        run = train_variant(work, record_work, ds, sp, args.fold)
        sync(work, RECORD)
        rows += compare(record_work, ds, sp, args.fold, run)
    command = "python benchmarks/seg_condition.py " + " ".join(sys.argv[1:])
    if args.append:
        rows, command = appended("seg_condition", rows, args.datasets, command)
    write(rows, command)


if __name__ == "__main__":
    main()
