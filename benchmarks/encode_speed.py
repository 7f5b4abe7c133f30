"""`latentgap encode` vs the bare autoencoder forward (encode + decode, same batch size, same AE, images already
in memory as float tensors). Issue 5 asks for >= 90 %: the rest is I/O (image generation / reading, pwrite,
fsync) and bookkeeping (uint8 conversion, PSNR/SSIM).

Both are timed in one process, interleaved (bare, encode, bare, encode, ...), on phantom data, one thread.
`--profile` adds a cProfile of one encode run, printed as the top functions by cumulative time.

    python benchmarks/encode_speed.py [--ae taef2] [--n 1024] [--size 64] [--batch-size 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from latentgap.autoencoders import adapt_images, create_autoencoder, restore_channels
from latentgap.data import open_dataset
from latentgap.storage import atomic_write_json
from latentgap.latents import encode_dataset


def bare_forward(ae, xs: list[torch.Tensor], channels: int) -> tuple[float, float]:
    """(wall, CPU) seconds for encode + decode of every in-memory batch (adapter range/channel handling included)."""
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for x in xs:
            restore_channels(ae.decode(ae.encode(x)).float().clamp(0, 1), channels)
    return time.perf_counter() - t0, time.process_time() - c0


class AETimer:
    """Wall seconds spent inside ``ae.encode`` / ``ae.decode`` while ``encode_dataset`` runs: the in-run share
    of the AE forward, which a shared machine's load changes far less than two separate wall-clock runs."""

    def __init__(self, ae):
        self.ae, self.seconds = ae, 0.0
        self._enc, self._dec = ae.encode, ae.decode

    def _wrap(self, fn):
        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t0
        return timed

    def __enter__(self):
        self.ae.encode, self.ae.decode = self._wrap(self._enc), self._wrap(self._dec)
        return self

    def __exit__(self, *exc):
        del self.ae.encode, self.ae.decode  # back to the class methods


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ae", default="taef2")
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("encode_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ds = open_dataset(f"phantom:n={args.n},size={args.size}")
    ae = create_autoencoder(args.ae, device="cpu")
    t0 = time.perf_counter()
    imgs = ds.load(np.arange(len(ds)))  # (N, C, H, W) in [0, 1]
    load_s = time.perf_counter() - t0
    xs = [adapt_images(imgs[s:s + args.batch_size], ae.info) for s in range(0, len(ds), args.batch_size)]
    bare_forward(ae, xs[:1], ds.channels)  # warm-up
    work = Path(tempfile.mkdtemp(prefix="lg-encspeed-"))
    bare, enc, bare_cpu, enc_cpu, share = [], [], [], [], []
    for r in range(args.repeats):
        w, c = bare_forward(ae, xs, ds.channels)
        bare.append(w), bare_cpu.append(c)
        t0, c0 = time.perf_counter(), time.process_time()
        with AETimer(ae) as tm:
            encode_dataset(ds, ae, work / f"c{r}", batch_size=args.batch_size, device="cpu", progress=False)
        enc.append(time.perf_counter() - t0), enc_cpu.append(time.process_time() - c0)
        share.append(tm.seconds / enc[-1])
        print(f"repeat {r}: bare {bare[-1]:.2f} s ({bare_cpu[-1]:.2f} CPU-s), encode {enc[-1]:.2f} s "
              f"({enc_cpu[-1]:.2f} CPU-s); wall ratio {bare[-1] / enc[-1]:.3f}, CPU ratio {bare_cpu[-1] / enc_cpu[-1]:.3f}, "
              f"AE share inside encode {share[-1]:.3f}", flush=True)
    prof_txt = None
    if args.profile:
        pr = cProfile.Profile()
        pr.enable()
        encode_dataset(ds, ae, work / "prof", batch_size=args.batch_size, device="cpu", progress=False)
        pr.disable()
        buf = io.StringIO()
        pstats.Stats(pr, stream=buf).sort_stats("cumulative").print_stats(25)
        prof_txt = buf.getvalue()
        print(prof_txt)
    ratios = [b / e for b, e in zip(bare, enc)]
    rec = {"command": "python benchmarks/encode_speed.py " + " ".join(sys.argv[1:]), "ae": args.ae,
           "dataset": ds.name, "n": args.n, "size": args.size, "batch_size": args.batch_size, "threads": args.threads,
           "image_load_seconds_all_n": load_s, "bare_seconds": bare, "encode_seconds": enc,
           "bare_images_per_s": [args.n / b for b in bare], "encode_images_per_s": [args.n / e for e in enc],
           "ratio_encode_over_bare": ratios, "ratio_median": statistics.median(ratios),
           "bare_cpu_seconds": bare_cpu, "encode_cpu_seconds": enc_cpu,
           "cpu_ratio": [b / e for b, e in zip(bare_cpu, enc_cpu)],
           "ae_share_inside_encode": share, "ae_share_median": statistics.median(share),
           "profile_top": prof_txt,
           "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__},
           "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(args.out, rec)
    print(json.dumps({k: v for k, v in rec.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
