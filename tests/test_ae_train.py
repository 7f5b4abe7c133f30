"""Training the built-in autoencoder and fine-tuning backends: loss goes down, the SD scaling factor is
1/std of the training latents, interrupted runs resume to identical weights, results load back by path."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderKLFlux2
from safetensors.torch import load_file
from skimage.metrics import peak_signal_noise_ratio

from latentgap.autoencoders import create_autoencoder
from latentgap.autoencoders.diffusers_kl import DiffusersKL
from latentgap.autoencoders.flux2 import Flux2KL
from latentgap.autoencoders.tiny import TinyAE
from latentgap.autoencoders.train import batch_indices, finetune_autoencoder, train_autoencoder
from latentgap.cli import main
from latentgap.data import open_dataset
from latentgap.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


TINY = dict(width=8, depth=1, downsample=2, latent_channels=4, perceptual_weight=0.0)


@pytest.fixture(scope="module")
def ds():
    return open_dataset("phantom:n=48,size=16,classes=2,imbalance=2")


def test_batches_are_a_pure_function_of_step():
    a = [batch_indices(10, 4, s, seed=3) for s in range(6)]
    assert all(np.array_equal(x, batch_indices(10, 4, s, seed=3)) for s, x in enumerate(a))
    assert not np.array_equal(a[0], batch_indices(10, 4, 0, seed=4))
    first_epoch = np.concatenate(a)[:10]
    assert sorted(first_epoch.tolist()) == list(range(10))  # each epoch is a permutation


def test_train_lowers_loss_sets_scaling_and_loads(ds, tmp_path):
    out = train_autoencoder(ds, tmp_path / "run", steps=40, batch_size=8, lr=3e-3, checkpoint_every=20,
                            device="cpu", **TINY)
    rec = json.loads((out / "training.json").read_text())
    losses = [h[1] for h in rec["history"]]
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    ae = create_autoencoder(str(out))  # the run folder resolves to out/model
    assert isinstance(ae, DiffusersKL) and ae.info.in_channels == 1 and ae.info.downsample == 2
    x = ds.load(np.arange(len(ds)))  # 48 images: the whole scaling sample
    z = ae.encode(x)
    assert abs(z.std().item() - 1.0) < 1e-3  # scaling_factor = 1 / std of training latents
    assert ae.scale == pytest.approx(rec["scaling_factor"])
    r = ae.decode(z).double().numpy()
    psnr = np.mean([peak_signal_noise_ratio(x[i].double().numpy(), r[i], data_range=1.0) for i in range(len(x))])
    assert psnr == pytest.approx(rec["train_sample_psnr_db"], abs=0.05)
    with pytest.raises(UserError, match="never overwritten"):
        train_autoencoder(ds, out, steps=40, batch_size=8, device="cpu", **TINY)


def test_resume_gives_identical_weights(ds, tmp_path):
    kw = dict(steps=6, batch_size=4, lr=3e-3, checkpoint_every=2, device="cpu", **TINY)
    full = train_autoencoder(ds, tmp_path / "full", **kw)

    def crash(step, loss):
        if step == 5:
            raise KeyboardInterrupt  # killed after the step-4 checkpoint, mid-way to step 6

    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(ds, tmp_path / "cut", callback=crash, **kw)
    assert not (tmp_path / "cut/model").exists()
    resumed = train_autoencoder(ds, tmp_path / "cut", **kw)
    a = load_file(str(full / "model/diffusion_pytorch_model.safetensors"))
    b = load_file(str(resumed / "model/diffusion_pytorch_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((full / "training.json").read_text())["history"]
    hb = json.loads((resumed / "training.json").read_text())["history"]
    assert ha == hb


def test_resume_with_other_settings_is_refused(ds, tmp_path):
    kw = dict(steps=6, batch_size=4, lr=3e-3, checkpoint_every=2, device="cpu", **TINY)

    def crash(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(ds, tmp_path / "run", callback=crash, **kw)
    with pytest.raises(UserError, match="other settings"):
        train_autoencoder(ds, tmp_path / "run", **{**kw, "lr": 1e-3})


def test_perceptual_warning_recorded(ds, tmp_path):
    out = train_autoencoder(ds, tmp_path / "p", steps=1, batch_size=4, device="cpu",
                            **{**TINY, "perceptual_weight": 0.1})
    rec = json.loads((out / "training.json").read_text())
    available = (importlib.util.find_spec("lpips") is not None and
                 (Path(torch.hub.get_dir()) / "checkpoints/vgg16-397923af.pth").is_file())
    assert rec["perceptual"]["used"] is available
    assert bool(rec["warnings"]) is (not available)
    if not available:
        assert "perceptual loss requested" in rec["warnings"][0]


def test_finetune_tiny_sd_and_flux2_keep_conventions(ds, tmp_path, shared_data):
    # TAEF2 (real weights) on grey phantom images, replicated to RGB
    out = finetune_autoencoder("taef2", ds, tmp_path / "ft-taef2", steps=2, batch_size=4, lr=1e-4,
                               perceptual_weight=0.0, device="cpu")
    ft, base = create_autoencoder(str(out)), create_autoencoder("taef2")
    assert isinstance(ft, TinyAE) and ft.info.latent_channels == 32
    assert not torch.equal(ft.encoder[0].weight, base.encoder[0].weight)
    # SD-convention KL: scaling factor kept
    torch.manual_seed(0)
    kl = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                       up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, in_channels=1, out_channels=1)
    kl.save_pretrained(str(tmp_path / "kl"))
    out = finetune_autoencoder(str(tmp_path / "kl"), ds, tmp_path / "ft-kl", steps=2, batch_size=4, lr=1e-3,
                               perceptual_weight=0.0, device="cpu")
    ft = create_autoencoder(str(out))
    assert isinstance(ft, DiffusersKL) and ft.scale == pytest.approx(0.18215)
    # FLUX.2: BatchNorm latent statistics kept
    f2 = AutoencoderKLFlux2(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                            layers_per_block=1)
    f2.bn.running_var.fill_(2.5)
    f2.save_pretrained(str(tmp_path / "f2"))
    out = finetune_autoencoder(str(tmp_path / "f2"), ds, tmp_path / "ft-f2", steps=2, batch_size=4, lr=1e-3,
                               perceptual_weight=0.0, device="cpu")
    ft = create_autoencoder(str(out))
    assert isinstance(ft, Flux2KL) and torch.all(ft.vae.bn.running_var == 2.5)


def test_cli_train_and_info(tmp_path, capsys):
    out = tmp_path / "cli"
    main(["ae", "train", "--data", "phantom:n=16,size=16,classes=2,imbalance=2", "--out", str(out), "--steps", "2",
          "--batch-size", "4", "--width", "8", "--downsample", "2", "--perceptual-weight", "0", "--device", "cpu"])
    assert (out / "model/config.json").is_file()
    capsys.readouterr()
    main(["ae", "info", str(out), "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["backend"] == "diffusers-kl" and printed["in_channels"] == 1 and printed["downsample"] == 2


def test_crop_training_sees_windows_and_encodes_whole_images(ds, tmp_path, monkeypatch):
    """--crop: every step trains on crop x crop windows of the images (recorded in the settings), the saved
    model still encodes the full 16 px images; a crop that the factor does not divide is refused."""
    import latentgap.autoencoders.train as tr

    seen = []
    real = tr._random_crops
    monkeypatch.setattr(tr, "_random_crops", lambda x, s, g: seen.append(tuple(real(x, s, g).shape)) or real(x, s, g))
    out = train_autoencoder(ds, tmp_path / "crop", steps=3, batch_size=4, checkpoint_every=3, device="cpu",
                            crop=8, **TINY)
    assert seen == [(4, 1, 8, 8)] * 3
    rec = json.loads((out / "training.json").read_text())
    assert rec["settings"]["crop"] == 8
    assert create_autoencoder(str(out)).encode(ds.load(np.arange(2))).shape == (2, 4, 8, 8)
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    c = real(x, 8, torch.Generator().manual_seed(0))
    for img, win in zip(x, c):  # each window is a contiguous block of its own image
        y0, x0 = divmod(int(win[0, 0, 0]) % 256, 16)
        assert torch.equal(win, img[:, y0:y0 + 8, x0:x0 + 8])
    with pytest.raises(UserError, match="--crop 7"):
        train_autoencoder(ds, tmp_path / "bad", steps=1, device="cpu", crop=7, **TINY)
