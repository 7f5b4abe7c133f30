"""Speed of the latent diffusion generator, side by side in one process (ratios are the result).

1. Sampler throughput: samples/s of the tiny DiT with the flow Euler sampler (50 steps) and of the v-prediction
   DDIM / DPM-Solver++ samplers, on ISIC-8-shaped TAEF2 latents (32 x 8 x 8), batch 64.
2. Guided vs unguided cost per sampler step: the same Euler step with classifier guidance by a FiLM
   noise-conditioned ConvNeXt-Atto (one forward + backward of the guide per step); target <= 3x. And CFG
   (two denoiser passes per step).
3. One training step of the latent generator (32 x 8 x 8 latents, TAEF2's x8 grid) against a pixel-space
   generator of the same backbone, size and width on the 64 x 64 x 3 images themselves (the DiT patch size
   follows the same <= 256-token rule; the UNet gets one more level per factor 2) — the reason latent diffusion
   exists.
4. Generator-training memory against cache size: peak RSS of ``train_generator`` (50 steps, fresh process each)
   on caches of 10 000 and 100 000 latents (a phantom dataset at 16 px encoded by TAEF2, 32 x 2 x 2 latents):
   the loop reads batches by positioned reads, so memory should not grow with the cache.

    OMP_NUM_THREADS=1 python benchmarks/synth_speed.py --work /tmp/lgx/synth_speed

Writes benchmarks/synth_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402

HERE = Path(__file__).parent


def _timeit(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def sampler_and_guidance(batch: int, steps: int) -> dict:
    from types import SimpleNamespace

    from latentgap.models import NoiseConditioned, create_classifier
    from latentgap.synth.models import build_denoiser
    from latentgap.diffusion.objectives import build_objective
    from latentgap.synth.sample import Generator, sample

    out = {}
    torch.manual_seed(0)
    for obj, samplers in (("flow", ["euler"]), ("vpred", ["ddim", "dpm++"])):
        model = build_denoiser("dit", "tiny", 32, 8, 8).eval()
        cfg = SimpleNamespace(objective=obj, label_dropout=0.1)
        gen = Generator(model, cfg, {"latent_shape": [32, 8, 8], "num_classes": 8}, Path("."), build_objective(obj))
        y = torch.arange(batch) % 8
        for s in samplers:
            sec = _timeit(lambda: sample(gen, y, steps=steps, sampler=s, generator=torch.Generator().manual_seed(0)), 2)
            out[f"{obj}/{s}"] = {"samples_per_s": batch / sec, "seconds": sec, "steps": steps, "batch": batch}
        if obj == "flow":
            guide_model = NoiseConditioned(create_classifier("convnext_atto", 32, 8, 8, pretrained=False,
                                                             image_input=False), 256).eval()
            guide = SimpleNamespace(model=guide_model, config=SimpleNamespace(noise_cond=True, dataset="speed"),
                                    inputs={"space": "latent"})
            import latentgap.synth.sample as S

            S_check = S.check_classifier
            S.check_classifier = lambda *a, **k: None  # speed only: the stand-in guide has no run folder
            try:
                g_sec = _timeit(lambda: sample(gen, y, steps=steps, guide=guide, guide_scale=1.0,
                                               generator=torch.Generator().manual_seed(0)), 2)
                c_sec = _timeit(lambda: sample(gen, y, steps=steps, cfg_scale=3.0,
                                               generator=torch.Generator().manual_seed(0)), 2)
            finally:
                S.check_classifier = S_check
            base = out["flow/euler"]["seconds"]
            out["guided_vs_unguided_per_step"] = g_sec / base
            out["cfg_vs_unguided_per_step"] = c_sec / base
            out["guide"] = "FiLM ConvNeXt-Atto (forward + backward per step)"
    return out


def latent_vs_pixel(batch: int) -> dict:
    from latentgap.synth.models import build_denoiser

    res = {}
    for backbone in ("dit", "unet"):
        for name, (c, side) in {"latent 32x8x8": (32, 8), "pixel 3x64x64": (3, 64)}.items():
            torch.manual_seed(0)
            m = build_denoiser(backbone, "tiny", c, side, 8)
            opt = torch.optim.AdamW(m.parameters(), 1e-4)
            z, t, y = torch.randn(batch, c, side, side), torch.rand(batch) * 1000, torch.randint(0, 8, (batch,))

            def step():
                loss = (m(z, t, y) - z).pow(2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()

            res[f"{backbone} {name}"] = {"seconds_per_step": _timeit(step), "parameters": m.build["parameters"],
                                         "patch_size": m.build.get("patch_size")}
        res[f"{backbone} pixel / latent"] = (res[f"{backbone} pixel 3x64x64"]["seconds_per_step"]
                                             / res[f"{backbone} latent 32x8x8"]["seconds_per_step"])
    return res


CHILD = """
def peak_mb():  # VmHWM: this process's own peak (ru_maxrss keeps the forking parent's RSS across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import json, sys
from latentgap.synth.train import SynthConfig, train_generator
cfg = SynthConfig.model_validate_json(sys.argv[1])
row = train_generator(cfg, sys.argv[2], progress=False)
print(json.dumps({"peak_rss_mb": peak_mb(), "n_train": row["n_train"]}))
"""


def memory(work: Path) -> dict:
    from latentgap.synth.train import SynthConfig, open_synth_inputs

    out = {}
    for n in (10_000, 100_000):
        cfg = SynthConfig(dataset=f"phantom:n={n},size=16,classes=2,imbalance=1", autoencoder="taef2", k=3, steps=50,
                          batch_size=64, checkpoint_every=50, device="cpu", root=str(work / "root"), size="tiny")
        open_synth_inputs(cfg)  # build the cache first (not measured)
        r = subprocess.run([sys.executable, "-c", CHILD, cfg.model_dump_json(), str(work / f"mem-{n}")],
                           capture_output=True, text=True, check=True)
        out[str(n)] = json.loads(r.stdout.strip().splitlines()[-1])
    out["ratio_100k_vs_10k"] = out["100000"]["peak_rss_mb"] / out["10000"]["peak_rss_mb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/lgx/synth_speed")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rec = {"command": "python benchmarks/synth_speed.py " + " ".join(sys.argv[1:]), "machine_at_start": machine(),
           "versions": versions(), "threads": torch.get_num_threads()}
    partial = work / "record.partial.json"  # each part is kept as soon as it is measured
    done = json.loads(partial.read_text()) if partial.exists() else {}
    for key, fn in (("sampling", lambda: sampler_and_guidance(args.batch, args.steps)),
                    ("train_step", lambda: latent_vs_pixel(args.batch)),
                    ("memory", lambda: None if args.skip_memory else memory(work))):
        rec[key] = done.get(key) or fn()
        done[key] = rec[key]
        partial.write_text(json.dumps(done))
    if rec["memory"] is None:
        rec.pop("memory")
    rec["machine_at_end"] = machine()
    (HERE / "synth_speed.json").write_text(json.dumps(rec, indent=1) + "\n")
    s, t = rec["sampling"], rec["train_step"]
    lines = ["# Latent diffusion generator: speed (one process, side by side)", "",
             f"Command: `{rec['command']}`; {rec['machine_at_start']['cpu']}, {rec['threads']} thread, load "
             f"{rec['machine_at_start']['loadavg']} -> {rec['machine_at_end']['loadavg']}.", "",
             "| what | figure |", "|---|---|"]
    for k in ("flow/euler", "vpred/ddim", "vpred/dpm++"):
        lines.append(f"| sampler {k}, tiny DiT, {s[k]['steps']} steps, batch {s[k]['batch']} | {s[k]['samples_per_s']:.1f} samples/s |")
    lines.append(f"| classifier-guided vs unguided Euler, per step | {s['guided_vs_unguided_per_step']:.2f}x (target <= 3x) |")
    lines.append(f"| CFG vs unguided Euler, per step | {s['cfg_vs_unguided_per_step']:.2f}x |")
    for b in ("dit", "unet"):
        lat, pix = t[f"{b} latent 32x8x8"], t[f"{b} pixel 3x64x64"]
        lines.append(f"| one training step, {b} tiny, batch {args.batch}: latent 32x8x8 vs pixel 3x64x64 | "
                     f"{lat['seconds_per_step'] * 1000:.0f} ms vs {pix['seconds_per_step'] * 1000:.0f} ms "
                     f"(pixel {t[f'{b} pixel / latent']:.1f}x slower) |")
    if "memory" in rec:
        m = rec["memory"]
        lines.append(f"| generator training peak RSS, 10k vs 100k cached latents | {m['10000']['peak_rss_mb']:.0f} MB vs "
                     f"{m['100000']['peak_rss_mb']:.0f} MB ({m['ratio_100k_vs_10k']:.2f}x) |")
    (HERE / "synth_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
