"""Peak memory of `latentgap encode` for 10k vs 100k phantom images at 64 px (issue: memory must not grow
with dataset size; the requirement is peak(100k) <= 1.5 x peak(10k)).

Each size runs the real command (`latentgap encode`, with reconstructions, fidelity, fold file and fold
statistics) in a fresh process; the child's peak resident set size (ru_maxrss) is read after it exits.
The autoencoder is a small built-in KL model (width 8, x8, 4 latent channels, random weights) saved with
save_pretrained and loaded by path: its size does not change how memory scales with N, and it keeps the
100k run to minutes on a 2-core CPU.

    python benchmarks/encode_memory.py [--sizes 10000 100000] [--no-recon] [--out benchmarks/encode_memory.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import resource, sys, time
from latentgap.cli import main
t = time.perf_counter()
try:
    main(sys.argv[1:])
finally:
    print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "SECONDS", time.perf_counter() - t,
          file=sys.stderr)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("encode_memory.json"))
    ap.add_argument("--no-recon", action="store_true", help="latents only (skips decoding; ~3x faster)")
    args = ap.parse_args()

    import torch

    from latentgap.autoencoders.builtin import build_builtin

    work = Path(tempfile.mkdtemp(prefix="lg-encmem-"))
    torch.manual_seed(0)
    ae_dir = work / "ae"
    build_builtin(width=8, downsample=8, latent_channels=4).vae.save_pretrained(ae_dir)
    rows = []
    for n in args.sizes:
        cmd = ["encode", "--data", f"phantom:n={n},size={args.side}", "--ae", str(ae_dir),
               "--root", str(work / f"root{n}"), "--batch-size", "64", "--chunk-size", "4096", "--device", "cpu"]
        if args.no_recon:
            cmd.append("--no-recon")
        p = subprocess.run([sys.executable, "-c", CHILD, *cmd], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "2"})
        if p.returncode != 0:
            sys.exit(p.stderr)
        line = [l for l in p.stderr.splitlines() if l.startswith("MAXRSS_KB")][-1].split()
        cache = next((work / f"root{n}" / "caches").iterdir())
        size_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
        rows.append({"n": n, "side": args.side, "peak_rss_mb": int(line[1]) / 1024, "seconds": float(line[3]),
                     "cache_mb_on_disk": round(size_mb, 1), "command": "latentgap " + " ".join(cmd)})
        print(rows[-1], flush=True)
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    record = {"rows": rows, "peak_ratio_largest_vs_smallest": round(ratio, 3),
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__},
              "date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/encode_memory.py " + " ".join(sys.argv[1:])}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"peak RSS ratio {rows[-1]['n']} vs {rows[0]['n']}: {ratio:.2f}x  -> {args.out}")


if __name__ == "__main__":
    main()
