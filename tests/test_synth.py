"""The latent diffusion generator: objectives against hand-computed values and diffusers' SNR, the diffusers
backbones, and a killed ``train_generator`` resuming to bit-identical weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from latentgap.errors import UserError
from latentgap.runs import load_checkpoint, read_checkpoint_meta
from latentgap.synth.models import build_denoiser, dit_patch_size
from latentgap.synth.objectives import FlowMatching, VPrediction, weighted_mse
from latentgap.synth.train import SynthConfig, train_generator


def test_flow_matching_by_hand():
    x = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 1, 2, 2)
    eps = torch.tensor([0.5, 0.5, -1.0, 2.0]).view(1, 1, 2, 2)
    nb = FlowMatching().noisy(x, torch.tensor([0.25]), eps)
    assert torch.allclose(nb.z_t, 0.75 * x + 0.25 * eps)
    assert torch.allclose(nb.target, eps - x) and float(nb.model_time) == 250.0
    s = (0.75 ** 2 + 0.25 ** 2) ** 0.5
    assert float(nb.scale) == pytest.approx(s) and float(nb.sigma) == pytest.approx(0.25 / s)
    x0, e = FlowMatching.x0_eps(nb.z_t, nb.target, torch.tensor([0.25]))  # a perfect velocity recovers both
    assert torch.allclose(x0, x, atol=1e-6) and torch.allclose(e, eps, atol=1e-6)
    # loss: mean squared error of the velocity, unit weights
    pred = torch.zeros_like(x)
    assert float(weighted_mse(pred, nb)) == pytest.approx(float(((eps - x) ** 2).mean()))
    # logit-normal times: sigmoid of N(0, 1) has median 0.5 and lies in (0, 1)
    t = FlowMatching().draw(torch.zeros(4000, 1, 1, 1), torch.Generator().manual_seed(0)).model_time / 1000
    assert 0 < float(t.min()) and float(t.max()) < 1 and abs(float(t.median()) - 0.5) < 0.03


def test_v_prediction_and_min_snr_weights_against_diffusers():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    obj = VPrediction(min_snr_gamma=5.0)
    t = torch.tensor([0, 10, 300, 999])
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    nb = obj.noisy(x, t, eps)
    abar = sched.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(nb.z_t, sched.add_noise(x, eps, t), atol=1e-6)
    assert torch.allclose(nb.target, sched.get_velocity(x, eps, t), atol=1e-6)
    snr = compute_snr(sched, t)
    assert torch.allclose(nb.weight, torch.minimum(snr, torch.full_like(snr, 5.0)) / (snr + 1), rtol=1e-5)
    assert torch.allclose(nb.sigma, (1 - abar).sqrt().flatten(), atol=1e-6)
    x0, e = obj.x0_eps(nb.z_t, nb.target, t)
    assert torch.allclose(x0, x, atol=1e-5) and torch.allclose(e, eps, atol=1e-5)


@pytest.mark.parametrize("backbone", ["dit", "unet"])
def test_denoisers_take_the_null_class_and_do_not_drop_labels_themselves(backbone):
    torch.manual_seed(0)
    m = build_denoiser(backbone, "tiny", 8, 8, num_classes=3).train()
    z, t = torch.randn(4, 8, 8, 8), torch.tensor([1.0, 200.0, 500.0, 999.0])
    y = torch.tensor([0, 1, 2, 3])  # 3 = "no class"
    out = m(z, t, y)
    assert out.shape == z.shape
    torch.manual_seed(123)  # a model-internal label drop would use the global RNG: outputs would differ
    assert torch.equal(m(z, t, y), out)
    assert m.build["num_classes"] == 3 and m.build["parameters"] > 0


def test_dit_patch_size_rule():
    assert [dit_patch_size(g) for g in (4, 8, 16, 32, 64)] == [1, 1, 1, 2, 4]
    with pytest.raises(UserError, match="unknown generator size"):
        build_denoiser("dit", "huge", 4, 8, 2)


SCRIPT = """
import sys
from latentgap.synth.train import SynthConfig, train_generator
cfg = SynthConfig.model_validate_json(sys.argv[1])
train_generator(cfg, sys.argv[2], progress=False)
"""


def _cfg(tmp: Path, **kw) -> SynthConfig:
    return SynthConfig(**{"dataset": "phantom:n=48,size=32,classes=2,imbalance=1", "autoencoder": "taef2", "k": 3,
                          "steps": 300, "batch_size": 8, "checkpoint_every": 5, "log_every": 5, "device": "cpu",
                          "root": str(tmp / "root"), "dtype": "float32", "views": ["identity", "hflip"], **kw})


@pytest.mark.usefixtures("one_thread")
def test_killed_training_resumes_to_identical_weights(tmp_path):
    cfg = _cfg(tmp_path)
    ref = train_generator(cfg, tmp_path / "ref", progress=False)  # also builds the shared cache
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, cfg.model_dump_json(), str(tmp_path / "run")], env=env)
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt.exists() and read_checkpoint_meta(ckpt).get("step", 0) >= 10):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_checkpoint_meta(ckpt)["step"]
    assert 10 <= killed_at < cfg.steps and not (tmp_path / "run" / "result.json").exists()
    row = train_generator(cfg, tmp_path / "run", progress=False)
    a, _ = load_checkpoint(tmp_path / "ref" / "checkpoint.safetensors")
    b, _ = load_checkpoint(ckpt)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "ema.")))
    assert row["final_loss"] == ref["final_loss"] and row["config_hash"] == ref["config_hash"]


def test_run_folder_of_other_settings_is_refused(tmp_path):
    cfg = _cfg(tmp_path, steps=2, checkpoint_every=1)
    train_generator(cfg, tmp_path / "run", progress=False)
    with pytest.raises(UserError, match="another generator configuration"):
        train_generator(_cfg(tmp_path, steps=3), tmp_path / "run", progress=False)
    row = train_generator(cfg, tmp_path / "run", progress=False)  # finished: returned, not retrained
    assert row["steps"] == 2 and row["n_train"] > 0 and row["views"] == ["identity", "hflip"]
    rec = __import__("json").loads((tmp_path / "run" / "inputs.json").read_text())
    assert rec["fold"] == 0 and len(rec["normalisation"]["mean"]) == rec["latent_shape"][0]
