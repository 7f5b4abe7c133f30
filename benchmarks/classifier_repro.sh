#!/usr/bin/env bash
# Same seed, same data, same CPU -> identical metrics on a re-run (issue 3, "Done means").
# Runs one small real training twice into two folders and compares every metric of result.json,
# metrics.jsonl (per-epoch, minus wall seconds) and the saved test probabilities bit for bit.
#   bash benchmarks/classifier_repro.sh [WORK]
set -euo pipefail
WORK=${1:-/tmp/lgx/repro}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
ARGS=(--data breastmnist_28 --protocol official --space image --model resnet18 --pretrained false
      --epochs 3 --patience 3 --drw-epoch 2 --batch-size 64 --seed 0 --device cpu --root "$WORK")
for r in a b; do
  echo "$ latentgap train ${ARGS[*]} --out $WORK/run-$r"
  nice -n 5 latentgap train "${ARGS[@]}" --out "$WORK/run-$r"
done
python - "$WORK" <<'PY'
import json, sys
from pathlib import Path
import numpy as np
w = Path(sys.argv[1]); a, b = w / "run-a", w / "run-b"
ra, rb = (json.loads((d / "result.json").read_text()) for d in (a, b))
timing = {"train_seconds", "seconds_per_epoch"}
diff = {k: (ra[k], rb[k]) for k in ra if k not in timing and ra[k] != rb[k]}
ma, mb = ([{k: v for k, v in json.loads(l).items() if k != "seconds"} for l in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b))
pa, pb = np.load(a / "test_probs.npy"), np.load(b / "test_probs.npy")
out = {"command": "bash benchmarks/classifier_repro.sh", "fields_compared": len(ra) - len(timing),
       "row_differences": diff, "per_epoch_metrics_identical": ma == mb,
       "test_probs_bitwise_identical": bool(np.array_equal(pa, pb)), "test_probs_shape": list(pa.shape),
       "metrics": {k: ra[k] for k in ("bacc", "auc", "mcc", "acc", "epochs", "best_epoch", "config_hash")},
       "train_seconds": [ra["train_seconds"], rb["train_seconds"]], "device_name": ra["device_name"], "torch": ra["torch"]}
Path("benchmarks/classifier_repro.json").write_text(json.dumps(out, indent=2) + "\n")
print(json.dumps(out, indent=2))
assert not diff and ma == mb and out["test_probs_bitwise_identical"], "re-run differs"
PY
