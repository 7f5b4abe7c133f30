"""Channels-last vs contiguous (NCHW) training steps on CPU, side by side, for the classifiers latentgap trains.

One thread, CPU time per training step (forward + backward + AdamW) of the real ``create_classifier`` models,
the two memory formats interleaved round by round so that machine load hits both alike. Writes
``benchmarks/channels_last.json``; the policy it supports is ``latentgap.device.prefers_channels_last``.

    python benchmarks/channels_last.py --rounds 3 --steps 3 [--models resnet50] [--out other.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402

from latentgap.models import create_classifier  # noqa: E402

SETUPS = [  # (label, model, input channels, side, batch)
    ("latent ConvNeXt-T, TAEF2 latent of 64 px (32x8x8)", "convnext_tiny", 32, 8, 64),
    ("latent ConvNeXt-T, TAEF2 latent of 128 px (32x16x16)", "convnext_tiny", 32, 16, 64),
    ("image ResNet-18, 64 px RGB", "resnet18", 3, 64, 64),
    ("image ResNet-50, 128 px grey", "resnet50", 1, 128, 32),
]


def step_seconds(model_name: str, c: int, side: int, batch: int, channels_last: bool, steps: int) -> float:
    torch.manual_seed(0)
    model = create_classifier(model_name, c, 3, side, pretrained=False, cosine_head=True)
    x, y = torch.randn(batch, c, side, side), torch.randint(0, 3, (batch,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    times = []
    for i in range(steps + 1):  # the first step warms up allocators and kernels
        t0 = time.process_time()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.process_time() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--models", nargs="+", help="only these models (default: all setups)")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = machine()
    rows = []
    for label, name, c, side, batch in SETUPS:
        if args.models and name not in args.models:
            continue
        got = {"nchw": [], "channels_last": []}
        for _ in range(args.rounds):
            for fmt in ("nchw", "channels_last"):
                got[fmt].append(step_seconds(name, c, side, batch, fmt == "channels_last", args.steps))
        nchw, cl = statistics.median(got["nchw"]), statistics.median(got["channels_last"])
        rows.append({"setup": label, "model": name, "input": [c, side, side], "batch": batch,
                     "nchw_s_per_step": got["nchw"], "channels_last_s_per_step": got["channels_last"],
                     "speedup_median": nchw / cl})
        print(f"{label}: NCHW {nchw:.3f} s, channels-last {cl:.3f} s per step -> {nchw / cl:.2f}x", flush=True)
    record = {"command": "python benchmarks/channels_last.py " + " ".join(sys.argv[1:]), "threads": 1,
              "machine_before": start, "machine_after": machine(), "versions": versions(), "rows": rows}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
