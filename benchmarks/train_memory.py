"""Does a training run's memory stay flat with dataset size? (issue 5, item 5) -- 10k vs 100k phantom images.

Each size runs in a fresh process: open the dataset, make the 5-fold splits, build fold 0's train/val/test
`space_dataset`s exactly as `latentgap.train.run.open_inputs` does,
then one full pass over every batch of the three parts (the data path, which is what could grow with N),
then a few training steps (`train_one_epoch` on the first batches) and an evaluation pass (`evaluate` on the
first test batches). The child reports its peak RSS (ru_maxrss) after each stage. Image space is used because
it needs no cache; reconstructions and latents are read from the cache files the same way (positioned reads).

    python benchmarks/train_memory.py [--sizes 10000 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
from latentgap.data import make_splits, open_dataset
from latentgap.latents import space_dataset
from latentgap.models import create_classifier
from latentgap.train import Batches, evaluate, train_one_epoch
n = int(sys.argv[1])
t0 = time.perf_counter()
ds = open_dataset(f"phantom:n={n},size=64")
splits = make_splits(ds, k=5, seed=0)
rss_after_splits = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
parts = [space_dataset("image", ds, None, splits, 0, p) for p in ("train", "val", "test")]
rss_after_parts = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
# the data path over whole epochs: every batch of every part is read (this is what could grow with N)
seen = 0
for part in parts:
    for x, y in Batches(part, 256, shuffle=True, generator=torch.Generator().manual_seed(1)):
        seen += len(y)
rss_after_full_pass = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
model = create_classifier("resnet18", 1, ds.num_classes, 64, pretrained=False)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
g = torch.Generator().manual_seed(0)
first = lambda b, k: [x for _, x in zip(range(k), b)]
train_one_epoch(model, first(Batches(parts[0], 64, shuffle=True, generator=g), 3), opt, torch.nn.CrossEntropyLoss(),
                torch.device("cpu"), g)
evaluate(model, first(Batches(parts[2], 256), 3), torch.device("cpu"))
print("RESULT", json.dumps({"n": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "peak_rss_after_splits_mb": rss_after_splits / 1024, "peak_rss_after_space_datasets_mb": rss_after_parts / 1024,
      "peak_rss_after_full_data_pass_mb": rss_after_full_pass / 1024, "samples_read": seen, "n_train": len(parts[0]), "n_val": len(parts[1]), "n_test": len(parts[2]),
      "seconds": time.perf_counter() - t0}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("train_memory.json"))
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        p = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        if p.returncode != 0:
            sys.exit(p.stderr)
        rows.append(json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][-1][7:]))
        print(rows[-1], flush=True)
    from latentgap.storage import atomic_write_json

    atomic_write_json(args.out, {
        "rows": rows, "peak_ratio_largest_vs_smallest": rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"],
        "note": "SpaceDataset reads each batch from its source (dataset or cache file, positioned reads), so a full "
                "pass over every batch of every part holds one batch at a time; the model steps are independent of N.",
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/train_memory.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
