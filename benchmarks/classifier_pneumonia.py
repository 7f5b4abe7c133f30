"""Image-space classifier on PneumoniaMNIST (28 px, official split) against MedMNIST v2's reference.

MedMNIST v2 (Yang et al., Sci. Data 2023), ResNet-18 at 28 px: test AUC 0.944, ACC 0.854. This script trains
latentgap's image-space classifier (LDAM-DRW, early stopping on validation bACC) within a stated CPU budget
and writes the result row to benchmarks/classifier_pneumonia.json.

    python benchmarks/classifier_pneumonia.py [--epochs 10] [--threads 2] [--work /tmp/lg-bench]
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
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/lg-bench")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TrainConfig(dataset="pneumoniamnist_28", space="image", protocol="official", model="resnet18",
                      pretrained="false", epochs=args.epochs, patience=5, batch_size=128, lr=1e-3, weight_decay=0.05,
                      loss="ldam", drw_switch_epoch=6, augment="flip+shift", seed=0, device="cpu", root=args.work)
    t0 = time.perf_counter()
    row = run_training(cfg, Path(args.work) / f"pneumonia-resnet18-e{args.epochs}")
    wall = time.perf_counter() - t0
    out = {
        "command": f"python benchmarks/classifier_pneumonia.py --epochs {args.epochs} --threads {args.threads}",
        "reference": {"source": "MedMNIST v2, ResNet-18 (28)", "auc": 0.944, "acc": 0.854},
        "result": {k: row[k] for k in ("auc", "acc", "bacc", "mcc", "epochs", "best_epoch", "train_seconds",
                                       "seconds_per_epoch", "n_train", "n_val", "n_test", "pretrained",
                                       "stem_stride", "model", "loss", "config_hash")},
        "wall_seconds": round(wall, 1),
        "hardware": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                     "note": "shared 2-core machine, other jobs running"},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    path = Path(__file__).with_suffix(".json")
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
