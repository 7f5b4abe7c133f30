"""Training speed of the classifier loop (issue 5, item 4), with the real loop of `latentgap.train`.

Part A -- data wait. `train_one_epoch` over `Batches(space_dataset("latent", ...))` from a real latent cache
(phantom, built-in KL autoencoder, random weights) vs the same loop over the same batches already in memory
as tensors. Data wait = (cache loop - in-memory loop) / cache loop; the batch-fetch time measured directly
(`Batches` iteration alone) is the second estimate. Issue 5 asks for <= 10 %.

Part B -- CPU options. Seconds per training step (forward, backward, AdamW) of the latent ConvNeXt-Tiny
(4 x 8 x 8 latents) and the image ResNet-50 (64 px) with: float32, channels_last, bf16 autocast,
channels_last + bf16, and torch.compile (inductor), steps interleaved per round.

    python benchmarks/train_speed.py [--n 1024] [--repeats 2] [--rounds 3] [--skip-compile]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from latentgap.autoencoders.builtin import build_builtin
from latentgap.data import make_splits, open_dataset
from latentgap.storage import atomic_write_json
from latentgap.latents import ensure_cache, space_dataset
from latentgap.models import create_classifier
from latentgap.train import Batches, train_one_epoch


def part_a(n: int, repeats: int, batch_size: int) -> dict:
    ds = open_dataset(f"phantom:n={n},size=64")
    torch.manual_seed(0)
    ae = build_builtin(width=8, downsample=8, latent_channels=4)
    cache = ensure_cache(ds, ae, Path(tempfile.mkdtemp(prefix="lg-trainspeed-")), device="cpu", progress=False)
    splits = make_splits(ds, k=5, seed=0)
    train = space_dataset("latent", ds, cache, splits, 0, "train")
    device = torch.device("cpu")
    model = create_classifier("convnext_tiny", 4, ds.num_classes, 8, pretrained=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss = torch.nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(0)
    batches = Batches(train, batch_size, shuffle=True, generator=g, drop_last_single=True)
    in_memory = list(batches)  # the same kind of batches, materialised once

    def fetch_only() -> float:
        t0 = time.perf_counter()
        for _ in batches:
            pass
        return time.perf_counter() - t0

    train_one_epoch(model, in_memory[:2], opt, loss, device, g)  # warm-up
    cache_s, mem_s, fetch_s = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        train_one_epoch(model, batches, opt, loss, device, g)
        cache_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        train_one_epoch(model, in_memory, opt, loss, device, g)
        mem_s.append(time.perf_counter() - t0)
        fetch_s.append(fetch_only())
        print(f"A: cache loop {cache_s[-1]:.2f} s, in-memory loop {mem_s[-1]:.2f} s, fetch only {fetch_s[-1]:.4f} s",
              flush=True)
    return {"n_train": len(train), "batch_size": batch_size, "latent_shape": list(cache.latent_shape),
            "cache_loop_seconds": cache_s, "in_memory_loop_seconds": mem_s, "fetch_only_seconds": fetch_s,
            "data_wait_fraction_by_difference": [(c - m) / c for c, m in zip(cache_s, mem_s)],
            "data_wait_fraction_by_fetch_time": [f / c for f, c in zip(fetch_s, cache_s)]}


def part_b(rounds: int, steps: int, compile_: bool) -> dict:
    setups = {"latent convnext_tiny 4x8x8 b64": ("convnext_tiny", 4, 8, 64),
              "image resnet50 1x64x64 b16": ("resnet50", 1, 64, 16)}
    variants = ["fp32", "channels_last", "bf16", "channels_last+bf16"] + (["compile"] if compile_ else [])
    out = {}
    for label, (name, c, side, b) in setups.items():
        runs = {}
        for v in variants:
            torch.manual_seed(0)
            m = create_classifier(name, c, 5, side, pretrained=False)
            cl = "channels_last" in v
            if cl:
                m = m.to(memory_format=torch.channels_last)
            fwd = torch.compile(m) if v == "compile" else m
            opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
            x = torch.randn(b, c, side, side)
            x = x.contiguous(memory_format=torch.channels_last) if cl else x
            y = torch.randint(0, 5, (b,))
            amp = torch.autocast("cpu", dtype=torch.bfloat16) if "bf16" in v else nullcontext()

            def step(fwd=fwd, opt=opt, x=x, y=y, amp=amp):
                opt.zero_grad(set_to_none=True)
                with amp:
                    lo = F.cross_entropy(fwd(x).float(), y)
                lo.backward()
                opt.step()

            t0 = time.perf_counter()
            step(), step()  # warm-up (compilation happens here)
            runs[v] = {"step": step, "warmup_seconds": time.perf_counter() - t0, "per_step": []}
        for _ in range(rounds):
            for v, r in runs.items():
                t0 = time.perf_counter()
                for _ in range(steps):
                    r["step"]()
                r["per_step"].append((time.perf_counter() - t0) / steps)
        out[label] = {v: {"seconds_per_step_median": statistics.median(r["per_step"]), "rounds": r["per_step"],
                          "warmup_seconds": r["warmup_seconds"]} for v, r in runs.items()}
        base = out[label]["fp32"]["seconds_per_step_median"]
        for v in out[label]:
            out[label][v]["speedup_vs_fp32"] = base / out[label][v]["seconds_per_step_median"]
        print(label, json.dumps({v: round(d["speedup_vs_fp32"], 2) for v, d in out[label].items()}), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--parts", default="ab")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("train_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rec = {"command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]), "threads": args.threads,
           "machine": {"platform": platform.platform(), "torch": torch.__version__}, "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if "a" in args.parts:
        rec["data_wait"] = part_a(args.n, args.repeats, args.batch_size)
    if "b" in args.parts:
        rec["cpu_options"] = part_b(args.rounds, args.steps, not args.skip_compile)
    atomic_write_json(args.out, rec)
    print(json.dumps(rec, indent=1, default=str)[:3000])


if __name__ == "__main__":
    main()
