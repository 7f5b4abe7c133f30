"""Why diffuse in latent space: seconds and memory per 128-px image of the latent diffusion segmenter vs a pixel-space
diffusion segmenter of the same denoiser width, and vs the U-Net baseline, side by side in one run.

Both diffusion paths use the same ``SegDenoiser`` (diffusers UNet2DModel, width 64, 3 levels, a trainable image
encoder as condition; the latent path adds TAEF2 image latents and decodes with the mask autoencoder of
``benchmarks/seg_real.py``'s settings). Timing does not depend on the weights, so the models are freshly built.
For each N samples x S steps: seconds per image (median of repeats, batch of 4 images) and peak resident memory
per image (each path in a fresh process: (peak RSS with 4 images - peak RSS with 1 image) / 3).

    OMP_NUM_THREADS=1 python benchmarks/seg_speed.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402

HERE = Path(__file__).parent
GRID = [(1, 1), (5, 1), (1, 10), (5, 10)]  # (samples, steps)
N_IMAGES = 4


def build(path: str):
    import torch

    from latentgap.seg.mask_ae import MaskAEConfig, MaskCodec, build_mask_ae
    from latentgap.seg.segmenter import SegDenoiser, Segmenter, SegmenterConfig

    if path == "unet":
        from latentgap.seg.baseline import UNetConfig, build_unet

        return build_unet(UNetConfig(dataset="x"), 3).eval()
    if path == "latent":
        from latentgap.autoencoders import create_autoencoder

        cfg = SegmenterConfig(dataset="x", condition=["latent", "encoder"], sampler="ddim")
        mcfg = MaskAEConfig(dataset="x", downsample=8, latent_channels=4, width=16)
        codec = MaskCodec(build_mask_ae(mcfg), torch.zeros(1, 4, 1, 1), torch.ones(1, 4, 1, 1),
                          {"downsample": 8, "latent_channels": 4})
        image_ae = create_autoencoder("taef2")
        model = SegDenoiser(cfg, 4, (16, 16), 3, image_ae.info.latent_channels, 8)
        rec = {"config": cfg.model_dump(), "target_shape": [4, 16, 16], "image_size": [128, 128]}
        return Segmenter(model, codec, image_ae, rec)
    cfg = SegmenterConfig(dataset="x", space="pixel", condition=["encoder"], sampler="ddim")
    model = SegDenoiser(cfg, 1, (128, 128), 3, 0, 1)
    return Segmenter(model, None, None, {"config": cfg.model_dump(), "target_shape": [1, 128, 128], "image_size": [128, 128]})


def run_path(path: str, samples: int, steps: int, n_images: int, repeats: int) -> dict:
    import resource
    import time

    import numpy as np
    import torch

    torch.set_num_threads(1)
    m = build(path)
    x = torch.rand(n_images, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.no_grad():
        for _ in range(repeats):
            t0 = time.perf_counter()
            if path == "unet":
                m(x)
            else:
                m.predict(x, samples=samples, steps=steps, batch_size=n_images)
            times.append(time.perf_counter() - t0)
    return {"seconds_per_image": float(np.median(times)) / n_images,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child() -> None:
    path, samples, steps, n, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    print(json.dumps(run_path(path, samples, steps, n, repeats)))


def measure(path, samples, steps, n, repeats) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", path, str(samples), str(steps), str(n), str(repeats)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child()
    res = {"command": "python benchmarks/seg_speed.py", "machine_at_start": machine(), "versions": versions(), "rows": []}
    for samples, steps in GRID:
        for path in ("latent", "pixel"):
            reps = 3 if samples * steps <= 5 else 1
            big, small = measure(path, samples, steps, N_IMAGES, reps), measure(path, samples, steps, 1, 1)
            row = {"path": path, "samples": samples, "steps": steps, "steps_x_samples": samples * steps,
                   "seconds_per_image": big["seconds_per_image"],
                   "memory_mb_per_image": (big["peak_rss_mb"] - small["peak_rss_mb"]) / (N_IMAGES - 1),
                   "peak_rss_mb": big["peak_rss_mb"], "repeats": reps}
            res["rows"].append(row)
            print(json.dumps(row), flush=True)
    u = measure("unet", 1, 1, N_IMAGES, 3)
    res["rows"].append({"path": "unet", "samples": 1, "steps": 1, "steps_x_samples": 1, **u})
    res["machine_at_end"] = machine()
    (HERE / "seg_speed.json").write_text(json.dumps(res, indent=1) + "\n")
    by = {(r["path"], r["samples"], r["steps"]): r for r in res["rows"]}
    lines = ["# Segmentation speed: latent vs pixel-space diffusion vs U-Net (128 px, CPU, one thread)", "",
             f"Command: `{res['command']}`. Same denoiser (UNet2DModel width 64, 3 levels, trainable image encoder); the "
             "latent path diffuses a 4x16x16 mask latent (TAEF2 image latents as extra condition, mask autoencoder "
             "decoder at the end), the pixel path a 1x128x128 mask. Median of 3 repeats (1 above 5 network evaluations) on a "
             "batch of 4 images; memory = (peak RSS with 4 images − with 1 image) / 3, each in a fresh process.", "",
             "| samples x steps | latent s/image | pixel s/image | pixel / latent | latent MB/image | pixel MB/image |",
             "|---|---|---|---|---|---|"]
    for samples, steps in GRID:
        a, b = by[("latent", samples, steps)], by[("pixel", samples, steps)]
        lines.append(f"| {samples} x {steps} | {a['seconds_per_image']:.3f} | {b['seconds_per_image']:.3f} "
                     f"| {b['seconds_per_image'] / a['seconds_per_image']:.1f}x | {a['memory_mb_per_image']:.1f} "
                     f"| {b['memory_mb_per_image']:.1f} |")
    lines += ["", f"U-Net baseline (smp ResNet-18, one forward pass): {u['seconds_per_image']:.4f} s/image.", "",
              f"Machine: {res['machine_at_start']}."]
    (HERE / "seg_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
