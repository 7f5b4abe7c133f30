"""Image-space classifier on PneumoniaMNIST (28 px, official split) against MedMNIST v2's reference.

MedMNIST v2 (Yang et al., Sci. Data 2023), ResNet-18 at 28 px: test AUC 0.944, ACC 0.854. This script runs
`latentgap train` (LDAM-DRW, early stopping on validation bACC, official train/val/test split) within a
stated CPU budget and writes the row's figures plus wall and CPU time to benchmarks/classifier_pneumonia.json.

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/classifier_pneumonia.py --epochs 8 --drw-epoch 5 --work /tmp/lgx/work
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402


def child_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patience", type=int, default=5)
    ap.add_argument("--drw-epoch", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--work", default="/tmp/lgx/work")
    args = ap.parse_args()
    run_dir = Path(args.work) / "runs" / f"pneumonia-resnet18-e{args.epochs}-drw{args.drw_epoch}"
    # the command is the CLI a user would type; resumable (a re-run continues from the last finished epoch)
    cmd = ["latentgap", "train", "--data", "pneumoniamnist_28", "--space", "image", "--protocol", "official",
           "--model", "resnet18", "--pretrained", "false", "--epochs", str(args.epochs), "--patience",
           str(args.patience), "--drw-epoch", str(args.drw_epoch), "--batch-size", str(args.batch_size),
           "--seed", "0", "--device", "cpu", "--root", args.work, "--out", str(run_dir)]
    start = machine()
    t0, c0 = time.perf_counter(), child_cpu_seconds()
    subprocess.run(cmd, check=True)
    wall, cpu = time.perf_counter() - t0, child_cpu_seconds() - c0
    row = json.loads((run_dir / "result.json").read_text())
    keep = ("auc", "acc", "bacc", "mcc", "recall_per_class", "epochs", "best_epoch", "max_epochs", "train_seconds",
            "seconds_per_epoch", "n_train", "n_val", "n_test", "pretrained", "pretrained_reason", "stem_stride",
            "model", "loss", "batch_size", "lr", "weight_decay", "augment", "image_size", "device_name", "config_hash")
    out = {
        "command": " ".join(cmd),
        "reference": {"source": "MedMNIST v2, ResNet-18 (28), 100 epochs", "auc": 0.944, "acc": 0.854},
        "target": {"auc": 0.93, "acc": 0.83},
        "settings": {"drw_epoch": args.drw_epoch, "patience": args.patience, "threads": "OMP_NUM_THREADS=1"},
        "result": {k: row.get(k) for k in keep},
        # wall/CPU of this invocation: after a resume they cover only the epochs run now (train_seconds is cumulative)
        "wall_seconds_this_invocation": round(wall, 1), "cpu_seconds_this_invocation": round(cpu, 1),
        "machine_at_start": start, "machine_at_end": machine(), "versions": versions(),
    }
    Path(__file__).with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
