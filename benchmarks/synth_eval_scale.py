"""Scale of synthetic-data fidelity and privacy: N synthetic vs N real 64-px images, N = 1k and 10k.

Each N runs in a fresh process (peak RSS is that process's): random-conv features of both sets, fidelity (FD, KID,
chunked precision / recall / density / coverage) against the real set, and copies (nearest-neighbour distances to
the real set with a held-out reference of N/2 real images) in pixel L2 (12 288 values per image) and feature
cosine. Images: phantom 64 px grey (real: seed 0; "synthetic": seed 1; held-out: seed 2) — the cost does not
depend on what the images show. Target: 10k x 10k within 10 minutes on this CPU, memory not quadratic in N.

    OMP_NUM_THREADS=1 python benchmarks/synth_eval_scale.py

Writes benchmarks/synth_eval_scale.json and .md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402

HERE = Path(__file__).parent

CHILD = r"""
def peak_mb():  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's RSS across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from latentgap.data import open_dataset
from latentgap.synth.fidelity import RandomConvFeatures, extract, fidelity
from latentgap.synth.privacy import copies
n = int(sys.argv[1])
t = {}
t0 = time.perf_counter()
sets = [open_dataset(f"phantom:n={m},size=64,classes=3,seed={s}").load_uint8(np.arange(m))
        for m, s in ((n, 0), (n, 1), (n // 2, 2))]
t["load_images"] = time.perf_counter() - t0
t0 = time.perf_counter()
feats = [extract(RandomConvFeatures(1, seed=0), x) for x in sets]
t["features"] = time.perf_counter() - t0
t0 = time.perf_counter()
f = fidelity(feats[0], feats[1], kid_subsets=100, kid_subset_size=1000)
t["fidelity"] = time.perf_counter() - t0
t0 = time.perf_counter()
px = copies(*(x.reshape(len(x), -1).astype(np.float32) / 255 for x in (sets[1], sets[0], sets[2])), metric="l2")
t["copies_pixel_l2"] = time.perf_counter() - t0
t0 = time.perf_counter()
fc = copies(feats[1], feats[0], feats[2], metric="cosine")
t["copies_feature_cosine"] = time.perf_counter() - t0
print(json.dumps({"n": n, "seconds": {k: round(v, 1) for k, v in t.items()},
                  "total_seconds_excluding_image_generation": round(sum(v for k, v in t.items() if k != "load_images"), 1),
                  "peak_rss_mb": round(peak_mb(), 1),
                  "fd": f["fd"], "kid_mean": f["kid_mean"], "precision": f["precision"], "recall": f["recall"],
                  "copy_rate_pixel": px["copy_rate"], "copy_rate_feature": fc["copy_rate"]}))
"""


def main() -> None:
    rec = {"command": "python benchmarks/synth_eval_scale.py", "machine_at_start": machine(), "versions": versions(),
           "runs": []}
    for n in (1000, 10000):
        r = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        rec["runs"].append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rec["runs"][-1]), flush=True)
    rec["machine_at_end"] = machine()
    (HERE / "synth_eval_scale.json").write_text(json.dumps(rec, indent=1) + "\n")
    a, b = rec["runs"]
    lines = ["# Synthetic-data fidelity and privacy at scale (64 px grey, 1 thread)", "",
             f"Command: `{rec['command']}`; {rec['machine_at_start']['cpu']}, load {rec['machine_at_start']['loadavg']} -> "
             f"{rec['machine_at_end']['loadavg']} (shared machine: wall times inflated).", "",
             "| N synthetic = N real | features | fidelity | copies (pixel L2) | copies (feature cosine) | total | peak RSS |",
             "|---|---|---|---|---|---|---|"]
    for r in (a, b):
        s = r["seconds"]
        lines.append(f"| {r['n']:,} | {s['features']} s | {s['fidelity']} s | {s['copies_pixel_l2']} s | "
                     f"{s['copies_feature_cosine']} s | {r['total_seconds_excluding_image_generation']} s | {r['peak_rss_mb']} MB |")
    lines += ["", f"10x the samples: {b['total_seconds_excluding_image_generation'] / a['total_seconds_excluding_image_generation']:.1f}x "
              f"the time (the nearest-neighbour parts are O(N^2) compute by nature) and "
              f"{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x the peak memory (chunked: not quadratic; the 10k images "
              "themselves are 3 x 10k x 4 kB)."]
    (HERE / "synth_eval_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
