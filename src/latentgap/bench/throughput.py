"""Latent classifier vs decode-then-classify: throughput and peak memory side by side (the paper's Table 3).

The learnability-gap paper (Efficiency) reports 3.2k vs 50 samples/s and 166 MB vs 20 GB on one GH200
(64x throughput, 120x memory) for a latent ConvNeXt-Tiny against an image ResNet-50 that must decode
the latents first. :func:`run_bench` measures the same four steps on the user's hardware, in one
process, with warm-up, ``synchronize`` before every clock read (timm ``benchmark.py``, DiT steps/sec),
and the steps interleaved round by round so that a shared machine's load hits every path alike:

* ``latent_infer``            ConvNeXt-Tiny on latents                  (B, c, H/f, W/f)
* ``decode_classify_infer``   AE decoder, then ResNet-50 on the image   (B, c, H/f, W/f) -> (B, 3, H, W)
* ``latent_train``            one AdamW step of the ConvNeXt on latents
* ``decode_classify_train``   decoder (no grad), then one AdamW step of the ResNet-50

Weights are random (timing does not depend on their values); every row says so. Peak memory is
defined in :mod:`latentgap.bench.memory`.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..device import resolve_device, synchronize
from ..errors import UserError
from .memory import measure_step_memory, module_state_tensors

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SD_RANDOM = "sd-vae-random"
WEIGHTS_NOTE = "random weights (timing and memory do not depend on weight values)"


@dataclass
class BenchConfig:
    """Settings of one bench run.

    Args:
        resolution: image side H = W in pixels (a multiple of the AE's downsampling factor).
        batch_size: samples per step, the same for both paths.
        dtype: "float32", "bfloat16" or "float16"; inference casts the models, training uses autocast
            with float32 master weights.
        device: "auto", "cpu", "cuda", "cuda:1", "mps".
        iters: timed steps per case and round (at least; see min_time); warmup: untimed steps per case first.
        min_time: each timed block lasts at least this many seconds (more steps for fast cases, as
            estimated from the last warm-up step), so that short steps are not timed at clock resolution.
        rounds: interleaved timing rounds (the spread across rounds is the noise estimate).
        ae: ``sd-vae-random`` (diffusers ``AutoencoderKL`` with Stable Diffusion's sizes: blocks
            (128, 256, 512, 512), 2 layers per block, 4 latent channels, x8, random weights) or any
            ``create_autoencoder`` spec (registry name, path, hub id).
        latent_model / image_model: registered classifier names.
        num_classes: K of both heads.
        train: also time one training step of each path.
        memory: also measure peak memory (one extra step per case and measure).
        channels_last: NHWC memory format for classifiers and inputs.
        seed: torch seed for weights and inputs.
    """

    resolution: int = 256
    batch_size: int = 2
    dtype: str = "float32"
    device: str = "auto"
    iters: int = 2
    min_time: float = 1.0
    warmup: int = 1
    rounds: int = 2
    ae: str = SD_RANDOM
    latent_model: str = "convnext_tiny"
    image_model: str = "resnet50"
    num_classes: int = 2
    train: bool = True
    memory: bool = True
    channels_last: bool = False
    seed: int = 0

    def check(self) -> None:
        if self.dtype not in DTYPES:
            raise UserError(f"unknown dtype '{self.dtype}'", f"use one of: {', '.join(DTYPES)}")
        for key in ("resolution", "batch_size", "iters", "rounds", "num_classes"):
            if getattr(self, key) < 1:
                raise UserError(f"--{key.replace('_', '-')} must be >= 1 (got {getattr(self, key)})",
                                f"pass a positive --{key.replace('_', '-')}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be >= 0 (got {self.warmup})", "pass --warmup 0 or more")


@dataclass
class Case:
    """One measured step: ``step()`` processes ``batch`` samples; ``resident()`` lists what it owns."""

    name: str
    path: str
    mode: str
    models: str
    step: Callable[[], object]
    resident: Callable[[], list]
    gflops_per_sample: float | None = None
    prepare: Callable[[], object] | None = None
    samples_per_s: list[float] = field(default_factory=list)
    samples_per_cpu_s: list[float] = field(default_factory=list)
    iters: int = 1


# ----------------------------------------------------------------------------- decoders


class _Decode(nn.Module):
    """``forward(z) -> image`` in [0, 1] for the decode-then-classify path: the autoencoder adapter's own
    ``decode`` (the one place that knows the backend's scaling), so the timed path is the real one."""

    def __init__(self, ae: nn.Module):
        super().__init__()
        self.ae = ae

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, c, h, w) -> (B, C, H, W)
        return self.ae.decode(z)


def sd_vae_config() -> dict:
    """Stable Diffusion 1.x VAE sizes (CompVis/stable-diffusion-v1-4 ``vae/config.json``)."""
    return dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=256)


def build_decoder(spec: str, resolution: int, device: torch.device) -> tuple[_Decode, tuple[int, int, int], int, str]:
    """(decoder, latent shape (c, h, w), image channels, description) for ``spec`` at ``resolution`` px."""
    if spec == SD_RANDOM:
        from diffusers import AutoencoderKL

        from ..autoencoders.diffusers_kl import DiffusersKL

        vae = AutoencoderKL(**sd_vae_config())
        vae.encoder, vae.quant_conv = None, None  # only the decoder is timed; do not count the encoder's weights
        if resolution % 8:
            raise UserError(f"--resolution {resolution} is not a multiple of the SD-VAE's factor 8",
                            f"use e.g. --resolution {max(8, resolution // 8 * 8)}")
        ae = DiffusersKL(vae, name="sd-vae-random", weights_id="random", weights_sha256="", convention="sd")
        return (_Decode(ae).to(device).eval(), (4, resolution // 8, resolution // 8), 3,
                "diffusers AutoencoderKL, SD-VAE sizes, random weights")
    from ..autoencoders import create_autoencoder

    ae = create_autoencoder(spec, device=str(device))
    f = ae.info.downsample
    if resolution % f:
        raise UserError(f"--resolution {resolution} is not a multiple of {spec}'s downsampling factor {f}",
                        f"use a multiple of {f}")
    with torch.inference_mode():  # the exact latent shape, after any patching the adapter does
        z = ae.encode(torch.zeros(1, ae.info.in_channels, resolution, resolution, device=device))
    return _Decode(ae).eval(), tuple(z.shape[1:]), ae.info.in_channels, f"{ae.info.name} ({ae.info.weights_id})"


# ----------------------------------------------------------------------------- cases


def _count_gflops(fn: Callable[[], object]) -> float | None:
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops() / 1e9
    except Exception:  # an op without a meta kernel: leave the column empty rather than guess
        return None


def _flops_per_sample(decoder: nn.Module | None, clf: nn.Module, z_shape, train: bool) -> float | None:
    """GFLOPs of one sample, counted on meta-device copies (no compute, no memory)."""
    meta = torch.device("meta")
    clf_m = copy.deepcopy(clf).to(meta).float()
    dec_m = copy.deepcopy(decoder).to(meta).float() if decoder is not None else None

    def run():
        x = torch.randn(1, *z_shape, device=meta)
        with torch.no_grad():
            x = dec_m(x) if dec_m is not None else x
        if train:
            clf_m(x).sum().backward()
        else:
            with torch.no_grad():
                clf_m(x)

    return _count_gflops(run)


def build_cases(cfg: BenchConfig, device: torch.device) -> tuple[list[Case], dict]:
    """The four steps of the comparison (two without ``cfg.train``) and a description of the setup."""
    from ..models import create_classifier

    dtype = DTYPES[cfg.dtype]
    torch.manual_seed(cfg.seed)
    decoder, (c, h, w), img_ch, ae_desc = build_decoder(cfg.ae, cfg.resolution, device)
    decoder = decoder.to(dtype)
    mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
    lat = create_classifier(cfg.latent_model, c, cfg.num_classes, (h, w), pretrained=False).to(device, memory_format=mf)
    img = create_classifier(cfg.image_model, img_ch, cfg.num_classes, cfg.resolution, pretrained=False).to(device, memory_format=mf)
    b = cfg.batch_size
    z = torch.randn(b, c, h, w, device=device).to(dtype).contiguous(memory_format=mf)
    y = torch.randint(0, cfg.num_classes, (b,), device=device)
    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    lat_inf, img_inf = copy.deepcopy(lat).to(dtype).eval(), copy.deepcopy(img).to(dtype).eval()

    def decode() -> torch.Tensor:
        return decoder(z).contiguous(memory_format=mf)

    def latent_infer():
        with torch.inference_mode():
            return lat_inf(z)

    def decode_classify_infer():
        with torch.inference_mode():
            return img_inf(decode())

    cases = [
        Case("latent_infer", "latent", "inference", cfg.latent_model, latent_infer,
             lambda: list(module_state_tensors(lat_inf)) + [z], _flops_per_sample(None, lat, (c, h, w), False)),
        Case("decode_classify_infer", "decode+classify", "inference", f"decoder+{cfg.image_model}",
             decode_classify_infer, lambda: list(module_state_tensors(decoder, img_inf)) + [z],
             _flops_per_sample(decoder, img, (c, h, w), False)),
    ]
    if cfg.train:
        lat.train(), img.train()
        opt_l = torch.optim.AdamW(lat.parameters(), lr=1e-5)
        opt_i = torch.optim.AdamW(img.parameters(), lr=1e-5)

        def train_step(model, opt, x):
            opt.zero_grad(set_to_none=True)  # first, so last step's gradients are gone before the forward
            with amp:
                loss = F.cross_entropy(model(x).float(), y)
            loss.backward()
            opt.step()
            return loss

        # float32 inputs as a training loader delivers them; autocast lowers them where it pays
        def latent_train():
            return train_step(lat, opt_l, z.float())

        def decode_classify_train():
            with torch.no_grad():
                x = decode().float()
            return train_step(img, opt_i, x)

        cases += [
            Case("latent_train", "latent", "train", cfg.latent_model, latent_train,
                 lambda: list(module_state_tensors(lat, optimizer=opt_l)) + [z],
                 _flops_per_sample(None, lat, (c, h, w), True), lambda: opt_l.zero_grad(set_to_none=True)),
            Case("decode_classify_train", "decode+classify", "train", f"decoder+{cfg.image_model}",
                 decode_classify_train, lambda: list(module_state_tensors(decoder, img, optimizer=opt_i)) + [z],
                 _flops_per_sample(decoder, img, (c, h, w), True), lambda: opt_i.zero_grad(set_to_none=True)),
        ]
    setup = {"autoencoder": ae_desc, "latent_shape": [c, h, w], "image_shape": [img_ch, cfg.resolution, cfg.resolution],
             "weights": WEIGHTS_NOTE}
    return cases, setup


# ----------------------------------------------------------------------------- measuring


def _seconds_per_step(step: Callable[[], object], iters: int, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per step. On a shared CPU the wall clock includes time the
    scheduler gave to other processes; CPU seconds do not (with one thread they are the step's own cost)."""
    synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        step()
    synchronize(device)
    return (time.perf_counter() - t0) / iters, (time.process_time() - c0) / iters


def environment(device: torch.device) -> dict:
    """Hardware and versions for every row (timm names its benchmark CSVs by device and precision):
    ``latentgap.runs.environment`` plus the core count and the date."""
    from ..runs import environment as run_environment

    return {**run_environment(device), "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%dT%H:%M:%S")}


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run_bench(cfg: BenchConfig, *, progress: Callable[[str], None] | None = None) -> dict:
    """Measure every case of :func:`build_cases`; returns ``{"rows": [...], "ratios": {...}, "setup": {...}}``.

    Rows carry samples/s (median, min, max over rounds, and each round), GFLOPs per sample, peak tensor
    bytes, resident bytes and RSS growth, plus hardware, versions and settings. Ratios are latent over
    decode-then-classify for throughput and decode-then-classify over latent for memory, computed per
    round (paired) for throughput.
    """
    cfg.check()
    say = progress or (lambda msg: None)
    device = resolve_device(cfg.device)
    cases, setup = build_cases(cfg, device)
    for case in cases:
        say(f"warm-up {case.name}")
        for _ in range(cfg.warmup):
            case.step()
        wall, _ = _seconds_per_step(case.step, 1, device) if cfg.min_time > 0 else (1.0, 0.0)
        case.iters = max(cfg.iters, math.ceil(cfg.min_time / max(wall, 1e-6)))
    for r in range(cfg.rounds):
        for case in cases:  # interleaved: load changes on a shared machine hit every case alike
            say(f"round {r + 1}/{cfg.rounds}: {case.name} x{case.iters}")
            wall, cpu = _seconds_per_step(case.step, case.iters, device)
            case.samples_per_s.append(cfg.batch_size / wall)
            case.samples_per_cpu_s.append(cfg.batch_size / cpu if cpu > 0 else float("nan"))
    mem = {}
    if cfg.memory:
        for case in cases:
            say(f"memory {case.name}")
            mem[case.name] = measure_step_memory(case.step, device, case.resident, case.prepare)
    env = environment(device)
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("train", "memory")}
    rows = []
    for case in cases:
        sps = _spread(case.samples_per_s)
        m = mem.get(case.name, {})
        rows.append({"case": case.name, "path": case.path, "mode": case.mode, "models": case.models,
                     "samples_per_s": sps["median"], "samples_per_s_min": sps["min"], "samples_per_s_max": sps["max"],
                     "samples_per_s_rounds": case.samples_per_s,
                     "samples_per_cpu_s": statistics.median(case.samples_per_cpu_s),
                     "samples_per_cpu_s_rounds": case.samples_per_cpu_s, "timed_iters": case.iters,
                     "gflops_per_sample": case.gflops_per_sample,
                     **{k.replace("_bytes", "_mb"): (None if v is None else v / 2**20) for k, v in m.items()},
                     **setup, **settings, **env})
    return {"rows": rows, "ratios": _ratios(cases, mem), "setup": {**setup, **settings, **env}}


def _ratios(cases: list[Case], mem: dict) -> dict:
    by = {c.name: c for c in cases}
    out = {}
    for mode in ("infer", "train"):
        lat, dec = by.get(f"latent_{mode}"), by.get(f"decode_classify_{mode}")
        if lat is None or dec is None:
            continue
        per_round = [a / b for a, b in zip(lat.samples_per_s, dec.samples_per_s)]
        out[f"throughput_{mode}"] = {**_spread(per_round), "rounds": per_round}
        per_round = [a / b for a, b in zip(lat.samples_per_cpu_s, dec.samples_per_cpu_s)]
        out[f"throughput_cpu_time_{mode}"] = {**_spread(per_round), "rounds": per_round}
        if lat.gflops_per_sample and dec.gflops_per_sample:
            out[f"flops_{mode}"] = dec.gflops_per_sample / lat.gflops_per_sample
        ml, md = mem.get(lat.name, {}).get("peak_tensor_bytes"), mem.get(dec.name, {}).get("peak_tensor_bytes")
        if ml and md:
            out[f"memory_{mode}"] = md / ml
    return out


def paper_reference() -> dict:
    """The paper's Table 3 figures (one GH200), for side-by-side printing."""
    return {"latent_samples_per_s": 3200, "decode_samples_per_s": 50, "throughput_ratio": 64,
            "latent_memory_mb": 166, "decode_memory_mb": 20_000, "memory_ratio": 120}


def fmt_ratio(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:,.1f}x"
