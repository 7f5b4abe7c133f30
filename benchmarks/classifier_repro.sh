#!/usr/bin/env bash
# Same seed, same data, same CPU -> identical metrics on a re-run (issue 3, "Done means").
# Two small real trainings, each run twice into two folders; every field of result.json (except wall
# seconds), every per-epoch metric of metrics.jsonl and the saved test probabilities are compared bit for bit.
#   image: BreastMNIST 28 px (official split), ResNet-18, LDAM-DRW, flip+shift augmentation
#   latent: ISIC-8 64 px fold 0, TAEF2 latents, ConvNeXt-Atto with FiLM noise conditioning (noise draws,
#           per-quartile noisy test accuracy), i.e. every random stream of the training loop
#   bash benchmarks/classifier_repro.sh [WORK] [ROOT]   (run folders in WORK, default /tmp/lgx/repro; caches and
#   splits in ROOT, default /tmp/lgx/work, shared with the other classifier benchmarks)
set -euo pipefail
WORK=${1:-/tmp/lgx/repro}
ROOT=${2:-/tmp/lgx/work}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
IMAGE=(--data breastmnist_28 --protocol official --space image --model resnet18 --pretrained false
       --epochs 3 --patience 3 --drw-epoch 2 --batch-size 64 --seed 0 --device cpu --root "$ROOT")
LATENT=(--data isic_skin8_64 --ae taef2 --space latent --model convnext_atto --noise-cond --fold 0 --pretrained false
        --epochs 3 --patience 3 --drw-epoch 2 --batch-size 64 --seed 0 --device cpu --root "$ROOT")
for case in image latent; do
  declare -n A=${case^^}
  for r in a b; do
    echo "$ latentgap train ${A[*]} --out $WORK/$case-$r"
    nice -n 5 latentgap train "${A[@]}" --out "$WORK/$case-$r"
  done
done
python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
w, out = Path(sys.argv[1]), {"command": "bash benchmarks/classifier_repro.sh", "cases": {}}
timing = {"train_seconds", "seconds_per_epoch"}
for case in ("image", "latent"):
    a, b = w / f"{case}-a", w / f"{case}-b"
    ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
    diff = {k: (ra[k], rb[k]) for k in ra if k not in timing and ra[k] != rb[k]}
    ma, mb = ([{k: v for k, v in json.loads(l).items() if k != "seconds"}
               for l in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b))
    pa, pb = np.load(a / "test_probs.npy"), np.load(b / "test_probs.npy")
    out["cases"][case] = {
        "fields_compared": len(ra) - len(timing), "row_differences": diff, "per_epoch_metrics_identical": ma == mb,
        "test_probs_bitwise_identical": bool(np.array_equal(pa, pb)), "test_probs_shape": list(pa.shape),
        "metrics": {k: ra.get(k) for k in ("dataset", "space", "variant", "model", "bacc", "auc", "mcc", "acc",
                                           "acc_q0", "acc_q3", "epochs", "best_epoch", "config_hash")},
        "train_seconds_a_b": [ra["train_seconds"], rb["train_seconds"]], "torch": ra["torch"]}
    assert not diff and ma == mb and out["cases"][case]["test_probs_bitwise_identical"], f"{case}: re-run differs"
Path("benchmarks/classifier_repro.json").write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps(out, indent=2))
PY
