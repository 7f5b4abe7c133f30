"""The paper's Table 3 on this machine: latent ConvNeXt-Tiny vs SD-VAE decoder + ResNet-50, at 64, 128 and
256 px, each run twice (the second run is the reproducibility check), rows saved beside this script.

Every run is the library call behind `latentgap bench` (random weights, SD-VAE-sized decoder), with the
four steps interleaved round by round. Writes benchmarks/bench_table3/<stem>-run<k>.{json,csv} and
benchmarks/bench_table3.json (ratios per resolution and run).

    python benchmarks/bench_table3.py [--resolutions 64 128 256] [--runs 2] [--batch-size 2] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from latentgap.bench import BenchConfig, run_bench, save_results
from latentgap.bench.output import result_stem
from latentgap.storage import atomic_write_json

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="1 by default: on a shared 2-core machine two OpenMP threads spin-wait on each other")
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--tag", default="", help="suffix of the summary file name (e.g. -bf16)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = HERE / "bench_table3"
    summary = []
    for res in args.resolutions:
        for run in range(1, args.runs + 1):
            cfg = BenchConfig(resolution=res, batch_size=args.batch_size, dtype=args.dtype, device="cpu",
                              iters=args.iters, rounds=args.rounds, min_time=args.min_time)
            result = run_bench(cfg, progress=lambda m, r=res, k=run: print(f"[{r}px run {k}] {m}", flush=True))
            stem = f"{result_stem(result)}-run{run}"
            save_results(result, out_dir, stem)
            rows = {r["case"]: r for r in result["rows"]}
            summary.append({"resolution": res, "run": run, "stem": stem, "ratios": result["ratios"],
                            "samples_per_s": {k: r["samples_per_s"] for k, r in rows.items()},
                            "samples_per_cpu_s": {k: r["samples_per_cpu_s"] for k, r in rows.items()},
                            "peak_tensor_mb": {k: r["peak_tensor_mb"] for k, r in rows.items()},
                            "resident_mb": {k: r["resident_mb"] for k, r in rows.items()},
                            "rss_growth_mb": {k: r["rss_growth_mb"] for k, r in rows.items()},
                            "gflops_per_sample": {k: r["gflops_per_sample"] for k, r in rows.items()}})
            print(json.dumps(summary[-1], indent=1), flush=True)
    atomic_write_json(HERE / f"bench_table3{args.tag}.json",
                      {"command": "python benchmarks/bench_table3.py " + " ".join(sys.argv[1:]),
                       "setup": result["setup"], "runs": summary})


if __name__ == "__main__":
    main()
