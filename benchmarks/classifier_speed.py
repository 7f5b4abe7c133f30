"""Latent-space vs image-space training speed on the same data and fold, measured side by side.

For each dataset, fold 0 of the same 5-fold split is trained twice with latentgap's default models:
ResNet-50 on the images (image space) and ConvNeXt-Tiny on the TAEF2 latents (latent space), for the same
fixed number of epochs (early stopping off), in one process, one thread, back to back. Reported per space:
seconds per epoch (training + validation, from the run's metrics), seconds per fold (the whole
``run_training``: epochs + test evaluation) as wall time and as this process's CPU time. CPU time is the
fairer figure on a shared machine (it does not count time spent waiting for the CPU); wall time is also given.
The latent cache is built (or found) first; its encode time is paid once per dataset x AE and is shared by
every training of the study, so it is reported separately, not charged to the latent fold.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/classifier_speed.py --data busi_128 isic_skin8_64 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402

def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


SPACES = (("image", "resnet50", None), ("latent", "convnext_tiny", "taef2"))


def timed_fold(data: str, space: str, model: str, ae: str | None, epochs: int, work: Path) -> dict:
    """Train fold 0 for exactly ``epochs`` epochs and return times and the row's shapes."""
    from latentgap.train import TrainConfig, run_training

    cfg = TrainConfig(dataset=data, autoencoder=ae, space=space, model=model, pretrained="false", epochs=epochs,
                      patience=10_000, batch_size=64, fold=0, k=5, seed=0, device="cpu", root=str(work))
    run = work / "runs" / f"speed-{data}-{space}-e{epochs}"
    if (run / "result.json").exists():
        raise SystemExit(f"{run} is finished already: delete it to time again (a finished run is not retrained)")
    load0 = _load()
    w0, c0 = time.perf_counter(), time.process_time()
    row = run_training(cfg, run)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    per_epoch = [json.loads(ln)["seconds"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return {"model": row["model"], "input_shape": row["input_shape"], "stem_stride": row["stem_stride"],
            "n_train": row["n_train"], "n_val": row["n_val"], "n_test": row["n_test"], "epochs": row["epochs"],
            "seconds_per_epoch_wall": [round(s, 2) for s in per_epoch],
            "mean_seconds_per_epoch_wall": round(sum(per_epoch) / len(per_epoch), 2),
            "fold_wall_seconds": round(wall, 2), "fold_cpu_seconds": round(cpu, 2),
            "cpu_ms_per_train_sample_epoch": round(1000 * cpu / (row["n_train"] * epochs), 2),
            "bacc_after_budget": round(row["bacc"], 4), "loadavg_before": load0, "loadavg_after": _load()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["busi_128", "isic_skin8_64"])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/lgx/work")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    from latentgap.latents import ensure_cache

    rows, start = [], machine()
    for data in args.data:
        t0 = time.perf_counter()
        ensure_cache(data, "taef2", work, device="cpu")
        cache_s = time.perf_counter() - t0  # ~0 when the cache was built earlier (`latentgap encode`)
        res = {space: timed_fold(data, space, model, ae, args.epochs, work) for space, model, ae in SPACES}
        img, lat = res["image"], res["latent"]
        rows.append({"dataset": data, "cache_seconds_this_run": round(cache_s, 1), **res,
                     "speedup_fold_cpu": round(img["fold_cpu_seconds"] / lat["fold_cpu_seconds"], 2),
                     "speedup_fold_wall": round(img["fold_wall_seconds"] / lat["fold_wall_seconds"], 2),
                     "speedup_epoch_wall": round(img["mean_seconds_per_epoch_wall"]
                                                 / lat["mean_seconds_per_epoch_wall"], 2)})
        print(json.dumps(rows[-1], indent=1), flush=True)
    out = {"command": "OMP_NUM_THREADS=1 nice -n 5 python benchmarks/classifier_speed.py --data "
                      f"{' '.join(args.data)} --epochs {args.epochs} --threads {args.threads}",
           "settings": {"pretrained": False, "batch_size": 64, "fold": 0, "k": 5, "early_stopping": "off",
                        "loss": "ldam (DRW not reached)", "augment": "auto (flip+shift images, flip latents)"},
           "rows": rows, "machine_at_start": start, "machine_at_end": machine(), "versions": versions()}
    path = Path(__file__).with_suffix(".json")
    if path.exists():  # keep the other datasets' rows of an earlier invocation (one dataset per run is fine)
        earlier = json.loads(path.read_text())
        out["earlier_runs"] = [r for r in earlier.get("rows", []) + earlier.get("earlier_runs", [])
                               if r["dataset"] not in args.data]
    path.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
