"""Autoencoder backends against their conventions: real TAEF2 weights, tiny diffusers models saved locally
and loaded by path, hand formulas for every scaling / normalisation, and the user-error paths."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from skimage.metrics import peak_signal_noise_ratio

from latentgap.autoencoders import AUTOENCODERS, adapt_images, create_autoencoder, restore_channels
from latentgap.autoencoders.diffusers_kl import DiffusersKL, load_kl
from latentgap.autoencoders.flux2 import Flux2KL, patchify, unpatchify
from latentgap.autoencoders.tiny import DiffusersTiny, TinyAE
from latentgap.cli import main
from latentgap.errors import UserError

# sha256 of the staged files, from the shared data README
TAEF2_SHA = {"taef2_encoder.pth": "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
             "taef2_decoder.pth": "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5"}

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


TINY_KL = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
               up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, layers_per_block=1)


def _x(b=2, c=3, s=16, seed=0):
    return torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- TAEF2, real weights


@pytest.fixture(scope="module")
def taef2():
    return create_autoencoder("taef2")


def test_taef2_layout_and_provenance(taef2, shared_data):
    info = taef2.info
    assert (info.backend, info.in_channels, info.latent_channels, info.downsample) == ("tiny", 3, 32, 8)
    assert info.image_range == (0.0, 1.0) and info.deterministic
    # both files, hashed independently: sorted "name:digest" lines
    lines = "\n".join(f"{n}:{TAEF2_SHA[n]}" for n in sorted(TAEF2_SHA))
    assert info.weights_sha256 == hashlib.sha256(lines.encode()).hexdigest()
    enc = torch.load(shared_data / "weights/taef2_encoder.pth", map_location="cpu", weights_only=True)
    assert sum(v.numel() for v in enc.values()) == 1_338_528 == sum(p.numel() for p in taef2.encoder.parameters())
    assert {i for i, m in enumerate(taef2.encoder) if getattr(m, "pool", None) is not None} == {11, 12, 13}
    assert {i for i, m in enumerate(taef2.decoder) if getattr(m, "pool", None) is not None} == {3, 4, 5}
    assert all(p.dtype == torch.float32 for p in taef2.parameters())
    z = taef2.encode(_x(s=32))
    assert z.shape == (2, 32, 4, 4) and taef2.decode(z).shape == (2, 3, 32, 32)


def test_taef2_isic_latents_and_psnr(taef2, shared_data):
    d = np.load(shared_data / "datasets/isic_skin8_64.npz")
    ref = d["test_images"]  # (113, 64, 64, 3) uint8
    x = torch.from_numpy(ref).permute(0, 3, 1, 2).float() / 255
    z = taef2.encode(x)
    rec = taef2.decode(z).permute(0, 2, 3, 1).double().numpy()  # clamped to [0, 1] by decode
    assert rec.min() >= 0 and rec.max() <= 1
    psnr = np.mean([peak_signal_noise_ratio(ref[i] / 255.0, rec[i], data_range=1.0) for i in range(len(ref))])
    assert abs(psnr - 30.8) <= 0.2, psnr
    assert abs(z.mean().item()) < 0.05
    assert 0.75 <= round(z.std().item(), 2) <= 0.80, z.std().item()  # measured 0.802
    assert torch.equal(z, taef2.encode(x))  # deterministic


def test_taef2_hub_safetensors_layout_matches_pth(taef2, tmp_path):
    """The hub ships one taef2.safetensors with ``encoder.layers.i`` / ``decoder.layers.(i-1)`` keys."""
    from safetensors.torch import save_file

    sd = {f"encoder.layers.{k}": v for k, v in taef2.encoder.state_dict().items()}
    for k, v in taef2.decoder.state_dict().items():
        i, rest = k.split(".", 1)
        sd[f"decoder.layers.{int(i) - 1}.{rest}"] = v
    save_file(sd, str(tmp_path / "taef2.safetensors"))
    other = create_autoencoder(str(tmp_path / "taef2.safetensors"))
    x = _x(s=16)
    assert torch.equal(other.encode(x), taef2.encode(x))
    assert torch.equal(other.decode(taef2.encode(x)), taef2.decode(taef2.encode(x)))


def test_tiny_key_mismatch_is_one_line_cli_error(taef2, tmp_path, capsys):
    enc = taef2.encoder.state_dict()
    enc["99.weight"] = enc.pop("14.weight")  # a renamed key: one missing, one unexpected
    enc["0.bias"] = torch.zeros(5)  # wrong shape
    torch.save(enc, tmp_path / "bad_encoder.pth")
    torch.save(taef2.decoder.state_dict(), tmp_path / "bad_decoder.pth")
    with pytest.raises(SystemExit) as e:
        main(["ae", "info", str(tmp_path / "bad_encoder.pth")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith("error:") and "14.weight" in err and "99.weight" in err and "0.bias" in err
    assert "Fix:" in err


# ---------------------------------------------------------------- diffusers AutoencoderKL: SD and FLUX.1


def _save(model, path):
    model.save_pretrained(str(path))
    return str(path)


def test_sd_convention_by_path(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_KL).eval()  # class default scaling_factor 0.18215, no shift
    ae = create_autoencoder(_save(vae, tmp_path / "sd"))
    assert isinstance(ae, DiffusersKL)
    assert (ae.info.notes["convention"], ae.info.downsample, ae.info.latent_channels) == ("sd", 2, 4)
    x = _x()
    with torch.no_grad():
        mode = vae.encode(x * 2 - 1).latent_dist.mode()
        z = ae.encode(x)
        torch.testing.assert_close(z, mode * 0.18215)
        want = ((vae.decode(z / 0.18215).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(ae.decode(z), want)
    assert torch.equal(ae.encode(x), z)  # posterior mode, not a sample
    assert ae.info.weights_sha256 == hashlib.sha256(
        (tmp_path / "sd/diffusion_pytorch_model.safetensors").read_bytes()).hexdigest()


def test_flux1_convention_from_config_and_fallback(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderKL(**TINY_KL, scaling_factor=0.3611, shift_factor=0.1159).eval()
    ae = create_autoencoder(_save(vae, tmp_path / "f1"))
    assert ae.info.notes["convention"] == "flux1" and ae.info.scaling == "(mode - 0.1159) * 0.3611"
    x = _x()
    with torch.no_grad():
        mode = vae.encode(x * 2 - 1).latent_dist.mode()
        torch.testing.assert_close(ae.encode(x), (mode - 0.1159) * 0.3611)
        z = ae.encode(x)
        torch.testing.assert_close(ae.decode(z), ((vae.decode(z / 0.3611 + 0.1159).sample + 1) / 2).clamp(0, 1))
    # a config without FLUX.1 factors, forced to the flux1 convention: documented values are the fallback
    plain = load_kl(_save(AutoencoderKL(**TINY_KL), tmp_path / "plain"), convention="flux1")
    assert (plain.scale, plain.shift) == (0.3611, 0.1159)


# ---------------------------------------------------------------- FLUX.2: patchify + BatchNorm statistics


def test_patchify_order_by_hand():
    z = torch.randn(2, 3, 4, 6)
    p = patchify(z)
    assert p.shape == (2, 12, 2, 3)
    for c in range(3):
        for i in range(2):
            for j in range(2):
                assert torch.equal(p[:, c * 4 + i * 2 + j], z[:, c, i::2, j::2])
    assert torch.equal(unpatchify(p), z)


def test_flux2_normalisation_by_path(tmp_path):
    from conftest import tiny_flux2_vae

    vae = tiny_flux2_vae()
    ae = create_autoencoder(_save(vae, tmp_path / "f2"))
    assert isinstance(ae, Flux2KL)
    assert (ae.info.latent_channels, ae.info.downsample) == (16, 4)
    x = _x()
    eps = vae.config.batch_norm_eps
    assert eps == 1e-4
    with torch.no_grad():
        mode = vae.encode(x * 2 - 1).latent_dist.mode()  # (2, 4, 8, 8)
        z = ae.encode(x)
        assert z.shape == (2, 16, 4, 4)
        for c in range(4):
            for i in range(2):
                for j in range(2):
                    k = c * 4 + i * 2 + j
                    want = (mode[:, c, i::2, j::2] - vae.bn.running_mean[k]) / torch.sqrt(vae.bn.running_var[k] + eps)
                    torch.testing.assert_close(z[:, k], want)
        raw = torch.empty_like(mode)
        for k in range(16):
            c, i, j = k // 4, (k % 4) // 2, k % 2
            raw[:, c, i::2, j::2] = z[:, k] * torch.sqrt(vae.bn.running_var[k] + eps) + vae.bn.running_mean[k]
        torch.testing.assert_close(ae.decode(z), ((vae.decode(raw).sample + 1) / 2).clamp(0, 1))


# ---------------------------------------------------------------- diffusers AutoencoderTiny


def test_diffusers_tiny_range_conversion(tmp_path):
    torch.manual_seed(0)
    vae = AutoencoderTiny(encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                          num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4).eval()
    ae = create_autoencoder(_save(vae, tmp_path / "tiny"))
    assert isinstance(ae, DiffusersTiny) and ae.info.downsample == 2
    x = _x()
    with torch.no_grad():
        z = ae.encode(x)
        torch.testing.assert_close(z, vae.encode(x * 2 - 1).latents)  # AutoencoderTiny takes [-1, 1]
        torch.testing.assert_close(ae.decode(z), ((vae.decode(z).sample + 1) / 2).clamp(0, 1))


# ---------------------------------------------------------------- image adaptation and errors


def test_grey_replication_and_restore(taef2):
    grey = _x(c=1, s=16)
    rgb = adapt_images(grey, taef2.info)
    assert rgb.shape == (2, 3, 16, 16) and all(torch.equal(rgb[:, i], grey[:, 0]) for i in range(3))
    torch.testing.assert_close(restore_channels(rgb, 1), grey)
    rec = restore_channels(taef2.decode(taef2.encode(rgb)), 1)
    assert rec.shape == (2, 1, 16, 16)
    with pytest.raises(UserError, match="--grey-to-rgb"):
        adapt_images(grey, taef2.info, grey_to_rgb=False)


def test_wrong_side_offers_resize(taef2):
    with pytest.raises(UserError, match=r"not a multiple of 8.*--resize 64"):
        adapt_images(_x(s=60), taef2.info)
    with pytest.raises(UserError, match=r"--resize 32"):
        taef2.encode(_x(s=30))


def test_medvae_missing_package_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "medvae", None)  # makes `import medvae` raise ImportError
    with pytest.raises(UserError, match=r'pip install "latentgap\[medvae\]"'):
        create_autoencoder("medvae:medvae_4_1_2d:xray")


def test_hub_id_loads_from_the_local_cache_when_the_hub_does_not_answer(tmp_path, monkeypatch):
    """The hub code path offline: a hub id in the Hugging Face cache (layout models--owner--name/snapshots/<rev>,
    refs/main) loads without network retries and records its cached weights' hash; one that is not cached fails in
    one line saying so."""
    import huggingface_hub.constants

    import latentgap.autoencoders.hub as hub

    for repo, sub in (("someone--tiny-kl", None), ("someone--tiny-sub", "vae")):
        snap = tmp_path / f"models--{repo}" / "snapshots" / ("a" * 40)
        torch.manual_seed(0)
        _save(AutoencoderKL(**TINY_KL).eval(), snap / sub if sub else snap)
        (tmp_path / f"models--{repo}" / "refs").mkdir()
        (tmp_path / f"models--{repo}" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: False)
    ae = create_autoencoder("someone/tiny-kl")
    weights = tmp_path / "models--someone--tiny-kl" / "snapshots" / ("a" * 40) / "diffusion_pytorch_model.safetensors"
    assert ae.info.weights_id == "someone/tiny-kl"
    assert ae.info.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    sub = create_autoencoder("someone/tiny-sub/vae")  # a subfolder of a hub repo, as SD pipelines ship their VAE
    assert sub.info.weights_id == "someone/tiny-sub/vae" and sub.info.weights_sha256 == ae.info.weights_sha256
    with pytest.raises(UserError, match="does not answer and the model is not in the local Hugging Face cache"):
        create_autoencoder("someone/other-kl")


def test_registry_and_unknown_spec(tmp_path):
    for name in ("sd-vae", "sd-vae-ft-mse", "flux1-vae", "flux2-vae", "taef2", "taesd", "medvae", "kl-builtin"):
        assert name in AUTOENCODERS
    with pytest.raises(UserError, match="neither a registered name nor an existing path"):
        create_autoencoder("no-such-autoencoder")
    with pytest.raises(UserError, match="no autoencoder"):
        create_autoencoder(str(tmp_path))  # a folder without a model


def test_builtin_grey_kl():
    ae = create_autoencoder("kl-builtin", width=8, downsample=2, in_channels=1)
    assert (ae.info.in_channels, ae.info.latent_channels, ae.info.downsample) == (1, 4, 2)
    assert ae.decode(ae.encode(_x(c=1))).shape == (2, 1, 16, 16)
    assert isinstance(create_autoencoder(ae), DiffusersKL) and isinstance(create_autoencoder("taef2"), TinyAE)
