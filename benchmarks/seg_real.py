"""Latent diffusion segmenter vs U-Net baseline on the shared segmentation sets (kvasir_seg_128, busi_seg_128).

Same folds (3, grouped by ids, stratified by empty mask) and flips for both methods at the native 128 px; the
``seg-shared`` preset's settings (epoch ceilings matched in CPU time per fold, early stopping on validation Dice). Per
fold: the mask autoencoder's round-trip Dice (the ceiling of the latent method), Dice / IoU per image and global,
HD95, ECE, Brier, the confidence map's AUROC for per-pixel error (diffusion only), cost (steps x samples, seconds per
image) and training time. Across folds: mean +- sd and the corrected paired t-test of per-image Dice, latent diffusion
vs U-Net.

    OMP_NUM_THREADS=1 python benchmarks/seg_real.py --work /work/runs/seg_real

Resumable: every run folder resumes, finished runs are read back. Each finished run's ``result.json``, ``config.yaml``
and validation curve ``metrics.jsonl`` (a few kB; the weights stay in ``--work``) are also kept under
``benchmarks/seg_real_runs/<run>/``, and runs found there are not trained again, so the record grows across machines
and sessions by committing that folder. Writes
benchmarks/seg_real.json and .md from every finished run (``--report-only`` rebuilds them without training).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402

HERE = Path(__file__).parent
RECORD = HERE / "seg_real_runs"  # the finished runs' result.json, config.yaml and metrics.jsonl, committed
KEPT = ("result.json", "config.yaml", "metrics.jsonl", "mask_ae/result.json", "mask_ae/config.yaml",
        "mask_ae/metrics.jsonl")
DATASETS = ("kvasir_seg_128", "busi_seg_128")
K = 3

def _preset():
    from latentgap.study import load_preset

    return load_preset("seg-shared").seg  # the settings of `latentgap study --preset seg-shared`


UNET, LATENT = _preset().unet, {"space": "latent", **_preset().segmenter}
PAPER = {"kvasir_seg_128": "MedSegLatDiff reports Dice 84.5 on CVC-ClinicDB (polyps; Kvasir-SEG not reported)",
         "busi_seg_128": "MedSegLatDiff does not report BUSI (ISIC-2018 88.0, CVC-ClinicDB 84.5, LIDC-IDRI 83.4)"}


def sync(work: Path, record: Path = RECORD) -> None:
    """Finished runs in both places: new results in ``work`` are recorded in ``record`` (with their ``config.yaml``
    and validation curve ``metrics.jsonl``, so how training ended can be read from the record), recorded ones seed
    ``work`` (a run folder holding only ``result.json`` of its configuration counts as finished)."""
    from latentgap.storage import atomic_write_text

    for src, dst, names in ((work, record, KEPT), (record, work, ("result.json",))):
        for res in sorted(src.glob("*/result.json")):
            for name in names:
                source, target = res.parent / name, dst / res.parent.name / name
                if source.exists() and not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_text(target, source.read_text())


def write_pair(name: str, lines: list[str], rows: list[dict], command: str) -> None:
    """``benchmarks/<name>.md`` from ``lines`` and ``<name>.json`` (command, machine, versions, rows)."""
    HERE.joinpath(f"{name}.md").write_text("\n".join(lines) + "\n")
    HERE.joinpath(f"{name}.json").write_text(json.dumps({"command": command, "machine": machine(),
                                                        "versions": versions(), "rows": rows},
                                                       indent=1, default=str) + "\n")


def appended(name: str, rows: list[dict], datasets, command: str) -> tuple[list[dict], str]:
    """``--append``: the rows already in ``<name>.json`` of other datasets, then ``rows``; the commands joined."""
    old = json.loads(HERE.joinpath(f"{name}.json").read_text()) if HERE.joinpath(f"{name}.json").exists() else None
    if old is None:
        return rows, command
    return [r for r in old["rows"] if r["dataset"] not in datasets] + rows, old["command"] + "; " + command


def settings(cfg: dict) -> str:
    """A run's training settings in a few words (from its recorded ``config.yaml``), to tell generations apart."""
    if not cfg:
        return "settings not recorded"
    text = f"ceiling {cfg['epochs']}, patience {cfg['patience']}"
    if "mask_ae" in cfg:  # a diffusion segmenter
        ae = cfg["mask_ae"]
        text += (f", validated on {cfg['val_samples']} x {cfg['val_steps']} steps, "
                 f"{'EMA ' + str(cfg['ema_decay']) if cfg.get('ema_decay') else 'no weight average'}, "
                 f"mask AE ceiling {ae.get('epochs', '?')}")
    return text


def training(row: dict) -> dict:
    """``row`` with its settings (epoch ceiling, patience) from the recorded ``config.yaml`` and, for runs recorded
    before the rows carried it, how training ended (``latentgap.seg.fit.training_end``, the rule the rows use now)."""
    import yaml

    from latentgap.seg.fit import training_end

    folder = RECORD / row["run"]
    cfg = yaml.safe_load((folder / "config.yaml").read_text()) if (folder / "config.yaml").exists() else {}
    out = {**row, "patience": cfg.get("patience"), "settings": settings(cfg)}
    if "convergence" not in row and cfg:
        out.update(max_epochs=cfg["epochs"],
                   convergence=training_end(row["epochs"], row["best_epoch"], cfg["epochs"], cfg["patience"]))
    ae = folder / "mask_ae"
    if "mask_ae_convergence" not in row and (ae / "result.json").exists() and (ae / "config.yaml").exists():
        res, acfg = json.loads((ae / "result.json").read_text()), yaml.safe_load((ae / "config.yaml").read_text())
        out["mask_ae_convergence"] = training_end(res["epochs"], res["best_epoch"], acfg["epochs"], acfg["patience"])
    return out


def configs(ds, fold: int) -> dict:
    """The U-Net and segmenter configurations of the opened dataset ``ds`` x ``fold`` under the preset's settings,
    by method."""
    from latentgap.seg.baseline import UNetConfig
    from latentgap.seg.segmenter import SegmenterConfig

    name = ds.name
    common = dict(dataset=name, image_size=list(ds.image_size), fold=fold, k=K, device="cpu")
    return {"unet": UNetConfig(**common, **UNET), "latent-diffusion": SegmenterConfig(**common, **LATENT),
            "unet-latent": UNetConfig(**common, **UNET, latent_ae=LATENT["autoencoder"])}


SHORT = {"unet": "unet", "latent-diffusion": "latent", "unet-latent": "unet-latent"}  # --methods and folder names


def run_name(name: str, fold: int, method: str, cfg) -> str:
    """A run folder per configuration (``kvasir_seg_128-unet-f0-<hash>``): runs of other settings stay recorded
    beside the current ones and are never resumed into."""
    return f"{name}-{SHORT[method]}-f{fold}-{cfg.config_hash()[:8]}"


def train_all(work: Path, datasets, folds, methods=("unet", "latent")) -> None:
    from latentgap.seg.baseline import train_unet
    from latentgap.seg.data import open_seg_dataset, seg_splits
    from latentgap.seg.segmenter import train_segmenter

    for fold in folds:
        for name in datasets:
            ds = open_seg_dataset(name)
            sp = seg_splits(ds, k=K, seed=0)
            for method, cfg in configs(ds, fold).items():
                if SHORT[method] not in methods:
                    continue
                t0 = time.perf_counter()
                train = train_segmenter if method == "latent-diffusion" else train_unet
                train(cfg, work / run_name(name, fold, method, cfg), ds, sp)
                print(f"{name} fold {fold} {method}: {time.perf_counter() - t0:.0f} s", flush=True)
                sync(work)


def report() -> None:
    """seg_real.md / .json from the finished run folders, through the study report's own segmentation table (mean ±
    sd over folds; latent vs U-Net by the Nadeau–Bengio corrected paired t-test across folds)."""
    import pandas as pd

    from latentgap.reports.tables import seg_table, to_markdown

    from latentgap.seg.data import open_seg_dataset

    opened = [open_seg_dataset(name) for name in DATASETS]
    current = {cfg.config_hash() for ds in opened for fold in range(K) for cfg in configs(ds, fold).values()}
    every = [training({**json.loads(p.read_text()), "run": p.parent.name}) for p in sorted(RECORD.glob("*/result.json"))]
    rows = [r for r in every if r["config_hash"] in current]  # earlier settings stay in RECORD, not in the table
    out = {"command": "python benchmarks/seg_real.py " + " ".join(sys.argv[1:]), "k": K, "unet": UNET, "latent": LATENT,
           "machine": machine(), "versions": versions(), "rows": rows}
    lines = ["# Latent diffusion segmenter vs U-Net on kvasir_seg_128 and busi_seg_128 (3 folds, 128 px, CPU)", "",
             f"Command: `{out['command']}` (script: `benchmarks/seg_real.py`). Folds: {K}, grouped by ids, stratified "
             "by empty mask; the same folds for both methods. Settings: U-Net " + json.dumps(UNET) + "; latent "
             "diffusion " + json.dumps(LATENT) + "; unet-latent (the control, `--methods unet-latent`, run on the folds "
             "listed): the U-Net's settings with TAEF2's latents upsampled and concatenated to its input "
             "(`latent_ae: taef2`): the segmenter's pretrained features without diffusion.", "",
             "Aggregation: *per image* = Dice/IoU per image (MONAI, an empty prediction on an empty mask scores 1), "
             "mean over the fold's test images; *global* = all test pixels pooled. HD95 over images where both masks "
             "are non-empty. Mean ± sd over the finished folds; vs U-Net: Nadeau–Bengio corrected paired t-test "
             "across folds (the report's own table).", ""]
    done = {(r["dataset"], r["method"], r["fold"]) for r in rows}
    todo = [f"{d} {m} fold {f}" for d in DATASETS for f in range(K) for m in ("unet", "latent-diffusion")
            if (d, m, f) not in done]
    if len(every) > len(rows):
        lines += [f"{len(every) - len(rows)} earlier run(s) under other settings are kept in `benchmarks/seg_real_runs/` "
                  "and left out of this table (the preset's header says what changed and why).", ""]
    if todo:  # a partial record says so, and which runs the next resume trains
        lines += [f"**Partial record: {len(done)} of {len(DATASETS) * K * 2} runs finished.** Still to run (the same "
                  "command resumes): " + ", ".join(todo) + ".", ""]
    table = seg_table(pd.DataFrame(rows).assign(kind="seg")) if rows else pd.DataFrame()
    if len(table):
        lines.append(to_markdown(table))
    older = [r for r in every if r["config_hash"] not in current]
    if older:  # shown, so the reason for the settings change can be read off, but never mixed with the current table
        table = seg_table(pd.DataFrame([{**r, "method": f"{r['method']} ({r['settings']})"} for r in older])
                          .assign(kind="seg"))
        lines += ["", "Earlier settings (superseded; the preset's header says what changed and why). Each method is "
                  "labelled with its settings, so runs of different settings are never averaged together:", "",
                  to_markdown(table.drop(columns=["vs U-Net (Dice per image)"])),
                  "", "Training of the earlier runs (epochs run / best epoch): " + ", ".join(
                      f"{r['dataset']} {r['method']} fold {r['fold']} {r['epochs']}/{r['best_epoch']}" for r in older)
                  + ".", ""]
    for name in DATASETS:
        lines += [f"* {name}: {PAPER[name]}."]
        for r in rows:
            if r["dataset"] == name and r.get("uncertainty_auroc_std") is not None:
                lo, hi = r["uncertainty_auroc_std_ci"]
                lines.append(f"  fold {r['fold']}, {r['method']}: confidence map (std over {r['samples']} samples) vs "
                             f"per-pixel error AUROC {r['uncertainty_auroc_std']:.3f} [95 % bootstrap CI {lo:.3f}, {hi:.3f}]")
    (HERE / "seg_real.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    (HERE / "seg_real.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/lgx/seg_real")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS))
    ap.add_argument("--folds", type=int, nargs="+", default=list(range(K)))
    ap.add_argument("--methods", nargs="+", choices=["unet", "latent", "unet-latent"], default=["unet", "latent"],
                    help="train only these (two processes can split a fold's pair; never two on one run); "
                    "unet-latent is the control: the U-Net also fed TAEF2's latents")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sync(work)
    if not args.report_only:
        train_all(work, args.datasets, args.folds, args.methods)
    report()


if __name__ == "__main__":
    main()
