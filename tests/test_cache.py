"""Latent cache: contents, fidelity against scikit-image, refusal of mismatches, kill-and-resume."""

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
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from latentgap.autoencoders import adapt_images, create_autoencoder, restore_channels
from latentgap.cli import main
from latentgap.data import make_splits, open_dataset, to_uint8
from latentgap.errors import UserError
from latentgap.latents import ensure_cache, input_spec, open_cache, psnr, space_dataset, ssim

PHANTOM = "phantom:n=96,size=32,classes=3,imbalance=8"


@pytest.fixture(scope="module")
def taef2():
    return create_autoencoder("taef2")


@pytest.fixture(scope="module")
def built(tmp_path_factory, taef2):
    ds = open_dataset(PHANTOM)
    cache = ensure_cache(ds, taef2, tmp_path_factory.mktemp("root"), batch_size=16, chunk_size=32, dtype="float32",
                         device="cpu")
    return ds, cache


def test_metrics_match_scikit_image():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 24, 20, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    for i in range(4):
        a, b = x[i].permute(1, 2, 0).numpy(), y[i].permute(1, 2, 0).numpy()
        assert psnr(x, y)[i].item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1), abs=1e-6)
        assert ssim(x, y)[i].item() == pytest.approx(structural_similarity(a, b, data_range=1, channel_axis=2), abs=1e-5)
    grey = x[:, :1]
    noisy = y[:, :1]
    assert ssim(grey, noisy)[0].item() == pytest.approx(
        structural_similarity(grey[0, 0].numpy(), noisy[0, 0].numpy(), data_range=1), abs=1e-5)


def test_cache_holds_the_autoencoder_outputs(built, taef2):
    ds, cache = built
    assert cache.manifest["status"] == "complete" and len(cache) == len(ds) == 96
    idx = np.arange(40, 56)
    x = ds.load(idx)
    with torch.no_grad():
        z = taef2.encode(adapt_images(x, taef2.info))
        xr = restore_channels(taef2.decode(z).clamp(0, 1), ds.channels)
    np.testing.assert_allclose(cache.latents[idx], z.numpy(), rtol=0, atol=1e-4)
    assert np.abs(cache.recon[idx].astype(int) - to_uint8(xr).astype(int)).max() <= 1
    ref = [peak_signal_noise_ratio(x[i].numpy(), xr[i].numpy(), data_range=1) for i in range(len(idx))]
    np.testing.assert_allclose(cache.fidelity()["psnr"][idx], ref, atol=1e-3)
    assert cache.recon.shape == (96, 32, 32, 1)  # grey data: RGB reconstructions mapped back to 1 channel
    assert cache.manifest["grey_to_rgb"] is True


def test_fold_stats_are_training_part_statistics(built):
    ds, cache = built
    splits = make_splits(ds, k=3, seed=0)
    mean, std = cache.fold_stats(splits, 1)
    z = np.asarray(cache.latents[np.sort(splits.folds[1].train)], dtype=np.float64)
    np.testing.assert_allclose(mean, z.mean(axis=(0, 2, 3)), rtol=1e-9)
    np.testing.assert_allclose(std, z.std(axis=(0, 2, 3)), rtol=1e-6)
    # saved once, re-read identically
    m2, s2 = cache.fold_stats(splits, 1)
    np.testing.assert_array_equal(mean, m2)
    # the latent space is normalised with exactly these statistics
    lat = space_dataset("latent", ds, cache, splits, 1, "train")
    z, _ = lat.get_batch(np.arange(len(lat)))
    assert z.shape[1:] == input_spec("latent", ds, cache) == (32, 4, 4)
    flat = z.double().permute(1, 0, 2, 3).reshape(32, -1)
    np.testing.assert_allclose(flat.mean(1).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(flat.std(1, unbiased=False).numpy(), 1, atol=1e-3)


def test_spaces_share_indices_and_labels(built):
    ds, cache = built
    splits = make_splits(ds, k=3, seed=0)
    img = space_dataset("image", ds, None, splits, 0, "test")
    rec = space_dataset("recon", ds, cache, splits, 0, "test")
    lat = space_dataset("latent", ds, cache, splits, 0, "test")
    np.testing.assert_array_equal(img.indices, splits.folds[0].test)
    assert torch.equal(img.targets, rec.targets) and torch.equal(img.targets, lat.targets)
    x, y = img[3]
    assert torch.equal(x, ds.load(img.indices[3:4])[0]) and y.item() == ds.labels[img.indices[3]]
    # positioned reads return exactly the cached rows, in the requested order (repeats allowed)
    pos = np.array([5, 0, 5, 2])
    xr, _ = rec.get_batch(pos)
    assert torch.equal(xr, torch.from_numpy(np.asarray(cache.recon[rec.indices[pos]])).permute(0, 3, 1, 2) / 255.0)
    xb, _ = rec.get_batch([0, 1])
    assert xb.shape == (2, 1, 32, 32) and xb.dtype == torch.float32 and 0 <= xb.min() and xb.max() <= 1
    with pytest.raises(UserError, match="unknown space"):
        space_dataset("pixels", ds, cache, splits, 0, "test")


def test_reuse_and_refusal(built, tmp_path):
    ds, cache = built
    again = ensure_cache(ds, "taef2", tmp_path, cache=cache.path, batch_size=16, dtype="float32", device="cpu")
    assert again.path == cache.path  # reused, not rebuilt
    other = create_autoencoder("kl-builtin")
    with pytest.raises(UserError, match="was made by autoencoder taef2"):
        ensure_cache(ds, other, tmp_path, cache=cache.path, dtype="float32", device="cpu")
    with pytest.raises(UserError, match="dtype"):
        ensure_cache(ds, "taef2", tmp_path, cache=cache.path, dtype="float16", device="cpu")


def test_cli_refuses_cache_of_other_autoencoder(built, tmp_path, capsys):
    _, cache = built
    with pytest.raises(SystemExit) as e:
        main(["encode", "--data", PHANTOM, "--ae", "kl-builtin", "--cache", str(cache.path), "--dtype", "float32",
              "--root", str(tmp_path), "--device", "cpu"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "made by autoencoder taef2" in err and "Fix:" in err


def _encode_cmd(root: Path) -> list[str]:
    return [sys.executable, "-c", "from latentgap.cli import main; main()", "encode", "--data",
            "phantom:n=320,size=32,classes=3,imbalance=8", "--ae", "taef2", "--root", str(root), "--batch-size", "16",
            "--chunk-size", "32", "--device", "cpu"]


@pytest.mark.slow
def test_killed_encode_resumes_without_redoing_chunks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_encode_cmd(tmp_path / "ref"), env=env, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr
    proc = subprocess.Popen(_encode_cmd(tmp_path / "run"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    chunks = None
    deadline = time.time() + 300
    while time.time() < deadline:
        found = list((tmp_path / "run" / "caches").glob("*.partial/chunks/*.json"))
        if len(found) >= 3:
            chunks = found
            break
        time.sleep(0.05)
    assert chunks is not None, "encoding never got three chunks done"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = chunks[0].parent.parent
    done_before = {p.name: p.stat().st_mtime_ns for p in partial.glob("chunks/*.json")}
    assert 3 <= len(done_before) < 10  # killed midway (10 chunks in all)
    res = subprocess.run(_encode_cmd(tmp_path / "run"), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    final = partial.with_name(partial.name[: -len(".partial")])
    assert final.is_dir() and not partial.exists()
    for name, mtime in done_before.items():  # finished chunks were not redone
        assert (final / "chunks" / name).stat().st_mtime_ns == mtime
    ref_cache = next((tmp_path / "ref" / "caches").iterdir())
    for f in ("latents.npy", "recon.npy", "psnr.npy", "ssim.npy"):
        assert (final / f).read_bytes() == (ref_cache / f).read_bytes(), f
    assert open_cache(final).manifest["status"] == "complete"


def test_fidelity_cli_matches_independent_computation(shared_data, tmp_path, capsys, taef2):
    """TAEF2 on the ISIC-8 test split: the README's reference (~30.8 dB) and an independent skimage computation."""
    src = np.load(shared_data / "datasets" / "isic_skin8_64.npz")
    small = tmp_path / "isic_test.npz"
    np.savez(small, train_images=src["train_images"][:8], train_labels=src["train_labels"][:8],
             val_images=src["val_images"][:8], val_labels=src["val_labels"][:8],
             test_images=src["test_images"], test_labels=src["test_labels"])
    csv = tmp_path / "fid.csv"
    main(["fidelity", "--data", str(small), "--ae", "taef2", "--split", "test", "--root", str(tmp_path / "r"),
          "--csv", str(csv), "--device", "cpu"])
    import pandas as pd

    row = pd.read_csv(csv).iloc[0]
    x = torch.from_numpy(src["test_images"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        xr = taef2.decode(taef2.encode(x)).clamp(0, 1)
    ref = np.mean([peak_signal_noise_ratio(x[i].numpy(), xr[i].numpy(), data_range=1) for i in range(len(x))])
    assert row["n"] == 113
    assert abs(row["psnr_mean"] - ref) < 0.01
    assert abs(row["psnr_mean"] - 30.8) < 0.2
    assert 0.85 < row["ssim_mean"] < 0.95
