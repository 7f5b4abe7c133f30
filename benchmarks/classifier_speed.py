"""Latent-space vs image-space training speed on the same data and fold, measured side by side.

Trains fold 0 of the same dataset twice with latentgap's defaults for each space: ResNet-50 on the images
(image space) and ConvNeXt-Tiny on TAEF2 latents (latent space), for the same fixed number of epochs
(early stopping off), and compares the training seconds per epoch. The latent cache is built first and
its encode time reported separately (it is paid once per dataset x AE and shared by every training).

    python benchmarks/classifier_speed.py [--data busi_128] [--epochs 1] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from latentgap.train import TrainConfig, run_training


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", default=["busi_128", "isic_skin8_64"])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/lg-bench")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for data in args.data:
        from latentgap.latents import ensure_cache
        t0 = time.perf_counter()
        ensure_cache(data, "taef2", args.work, device="cpu")
        encode_s = time.perf_counter() - t0
        res = {}
        for space, model in (("image", "resnet50"), ("latent", "convnext_tiny")):
            cfg = TrainConfig(dataset=data, autoencoder="taef2" if space == "latent" else None, space=space,
                              model=model, pretrained="false", epochs=args.epochs, patience=1000, batch_size=64,
                              fold=0, k=5, seed=0, device="cpu", root=args.work)
            row = run_training(cfg, Path(args.work) / f"speed-{data}-{space}-e{args.epochs}")
            res[space] = {k: row[k] for k in ("model", "input_shape", "stem_stride", "n_train", "epochs",
                                              "train_seconds", "seconds_per_epoch", "bacc")}
        rows.append({"dataset": data, "encode_seconds_once": round(encode_s, 1), **res,
                     "speedup_per_epoch": round(res["image"]["seconds_per_epoch"] / res["latent"]["seconds_per_epoch"], 2)})
    out = {"command": f"python benchmarks/classifier_speed.py --data {' '.join(args.data)} --epochs {args.epochs} "
                      f"--threads {args.threads}",
           "rows": rows,
           "hardware": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                        "note": "shared 2-core machine, other jobs running: absolute seconds are noisy, the two "
                                "spaces of a dataset run back to back"},
           "versions": {"torch": torch.__version__, "python": platform.python_version()}}
    Path(__file__).with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
