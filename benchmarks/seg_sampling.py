"""Where the latent diffusion segmenter loses Dice against the U-Net: sampling budget, fit and generalisation.

For fold 0 of each shared segmentation set, the finished runs of ``benchmarks/seg_real.py`` (the ``seg-shared``
settings) are re-evaluated, without training, through ``latentgap.seg.apply.evaluate_model`` (what ``latentgap seg
eval`` runs):

* the segmenter on the fold's test part at samples x steps = 1 x 1, 1 x 10, 5 x 10 (the recorded setting) and
  10 x 25 DDIM: does more sampling close the gap?
* both methods on the first ``--train-images`` images of the fold's *training* part (5 x 10 for the segmenter):
  does the segmenter fit its own training images as well as the U-Net does (under-fitting) or fit them and fail to
  generalise (over-fitting)?
* the mask autoencoder's round-trip Dice (in the run's record) bounds what any decoder of its latents can reach.

    OMP_NUM_THREADS=1 python benchmarks/seg_sampling.py --work /work/runs/seg_real

Writes benchmarks/seg_sampling.md / .json. The sampling noise is seeded (seed 0), so the figures repeat.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from seg_real import DATASETS, K, LATENT, appended, configs, run_name, write_pair  # noqa: E402

HERE = Path(__file__).parent
BUDGETS = [(1, 1), (1, 10), (5, 10), (10, 25)]  # samples x steps on the test part
RECORDED = (LATENT["samples"], LATENT["steps"])  # seg-shared's own setting (5 x 10), also on the training images
KEYS = ("dice_per_image", "dice_global", "iou_per_image", "ece", "uncertainty_auroc_std", "seconds_per_image")


def subset(ds, idx):
    from latentgap.seg.data import SegDataset

    return SegDataset(ds.name, ds.images[idx], ds.masks[idx], num_classes=ds.num_classes)


def measure(work: Path, fold: int, n_train: int, datasets=DATASETS) -> list[dict]:
    from latentgap.seg.apply import evaluate_model, load_seg_model
    from latentgap.seg.data import open_seg_dataset, seg_splits

    out = []
    for name in datasets:
        ds = open_seg_dataset(name)
        part = seg_splits(ds, k=K, seed=0).folds[fold]
        test, train = subset(ds, part.test), subset(ds, np.sort(part.train)[:n_train])
        for method, cfg in configs(ds, fold).items():
            run = work / run_name(name, fold, method, cfg)
            if not (run / "checkpoint.safetensors").exists() or not (run / "result.json").exists():
                print(f"{run.name}: not finished (or its weights are not in --work), skipped", flush=True)
                continue
            model = load_seg_model(run, "cpu")
            # the deterministic U-Net once per part; the segmenter at every budget on test, the recorded one on train
            plan = ([("test", test, None), ("train", train, None)] if method == "unet" else
                    [("test", test, b) for b in BUDGETS] + [("train", train, RECORDED)])
            for part_name, data, budget in plan:
                samples, steps = budget or (None, None)
                t0 = time.perf_counter()
                row, _, _ = evaluate_model(model, data, samples=samples, steps=steps, seed=0)
                rec = {"dataset": name, "fold": fold, "method": method, "part": part_name, "n": len(data),
                       "samples": row["samples"], "steps": row["steps"], **{k: row.get(k) for k in KEYS}}
                out.append(rec)
                print(f"{name} {method} {part_name} {rec['samples']}x{rec['steps']}: Dice/img "
                      f"{rec['dice_per_image']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
            res = json.loads((run / "result.json").read_text())
            if res.get("mask_ae_ceiling_dice_per_image") is not None:
                out.append({"dataset": name, "fold": fold, "method": "mask-AE round trip", "part": "test",
                            "n": res["n_test"], "dice_per_image": res["mask_ae_ceiling_dice_per_image"],
                            "dice_global": res["mask_ae_ceiling_dice_global"]})
    return out


def write(rows: list[dict], command: str) -> None:
    import pandas as pd

    from latentgap.reports.tables import to_markdown

    def fmt(v, k):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return "–"
        return f"{v:.3f}" if k != "seconds_per_image" else f"{v:.2f}"

    table = pd.DataFrame([{"dataset": r["dataset"], "method": r["method"], "part (images)": f"{r['part']} ({r['n']})",
                           "samples x steps": f"{r['samples']} x {r['steps']}" if r.get("samples") else "–",
                           **{k: fmt(r.get(k), k) for k in KEYS}} for r in rows])
    lines = ["# Latent diffusion segmenter: sampling budget, fit and generalisation (fold 0)", "",
             f"Command: `{command}` (script: `benchmarks/seg_sampling.py`), on the fold-0 runs of "
             "`benchmarks/seg_real.py`; no training. Per image = mean of per-image Dice / IoU; global = pixels pooled; "
             "error AUROC of the std map across samples (a deterministic U-Net has none). The training-part rows use "
             "the first images of the fold's training part by index; the test rows the whole test part.", "",
             to_markdown(table), ""]
    write_pair("seg_sampling", lines, rows, command)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/lgx/seg_real")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--train-images", type=int, default=100)
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--append", action="store_true", help="add to the rows already in seg_sampling.json (other sets)")
    args = ap.parse_args()
    rows = measure(Path(args.work), args.fold, args.train_images, args.datasets)
    command = "python benchmarks/seg_sampling.py " + " ".join(sys.argv[1:])
    if args.append:
        rows, command = appended("seg_sampling", rows, args.datasets, command)
    write(rows, command)


if __name__ == "__main__":
    main()
