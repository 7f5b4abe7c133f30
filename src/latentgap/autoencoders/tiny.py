"""Tiny autoencoders (TAESD family, madebyollin/taesd): ``.pth`` state dicts and diffusers ``AutoencoderTiny``.

The ``.pth`` files are plain state dicts of two ``nn.Sequential`` modules (layout in the shared data
README, "Tiny autoencoder layout"); this module rebuilds that layout, detecting the optional GroupNorm
"pool" branches and the latent width from the keys. Conventions: images in [0, 1] in and out, latents in
the parent VAE's space at raw scale (no scaling factor), decoder input soft-clamped to 3*tanh(z/3),
deterministic. diffusers' ``AutoencoderTiny`` wraps the same network but takes and returns [-1, 1]
(``EncoderTiny.forward`` maps x -> (x+1)/2, ``DecoderTiny.forward`` returns 2x-1).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..storage import shared_data_dir
from .base import AUTOENCODERS, AEInfo, Autoencoder, weights_sha256
from .hub import describe_weights, from_pretrained, split_hub_spec

# ---------------------------------------------------------------- the reference layout


def _conv(n_in: int, n_out: int, **kw) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kw)


class _Clamp(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z / 3) * 3  # soft clamp: keeps out-of-range latents from blowing up the decoder


class _Block(nn.Module):
    """Residual block: ``relu(conv(x) + x)``, optionally after ``x <- x + pool(x)`` (1x1 -> GN -> 1x1)."""

    def __init__(self, n: int, pool: bool):
        super().__init__()
        self.conv = nn.Sequential(_conv(n, n), nn.ReLU(), _conv(n, n), nn.ReLU(), _conv(n, n))
        self.pool = (nn.Sequential(nn.Conv2d(n, 4 * n, 1, bias=False), nn.GroupNorm(4, 4 * n), nn.ReLU(),
                                   nn.Conv2d(4 * n, n, 1, bias=False)) if pool else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return torch.relu(self.conv(x) + x)


def build_encoder(in_ch: int, width: int, latent: int, pools: set[int]) -> nn.Sequential:
    """0 conv · 1 Block · [stride-2 conv · 3 Blocks] x3 · 14 conv -> latent (x8)."""
    layers: list[nn.Module] = [_conv(in_ch, width), _Block(width, 1 in pools)]
    for _ in range(3):
        layers.append(_conv(width, width, stride=2, bias=False))
        layers += [_Block(width, len(layers) + k in pools) for k in range(3)]
    layers.append(_conv(width, latent))
    return nn.Sequential(*layers)


def build_decoder(latent: int, width: int, out_ch: int, pools: set[int]) -> nn.Sequential:
    """0 clamp · 1 conv · 2 ReLU · [3 Blocks · upsample x2 · conv] x3 · 18 Block · 19 conv -> image."""
    layers: list[nn.Module] = [_Clamp(), _conv(latent, width), nn.ReLU()]
    for _ in range(3):
        layers += [_Block(width, len(layers) + k in pools) for k in range(3)]
        layers += [nn.Upsample(scale_factor=2), _conv(width, width, bias=False)]
    layers += [_Block(width, 18 in pools), _conv(width, out_ch)]
    return nn.Sequential(*layers)


def _pools(sd: dict) -> set[int]:
    return {int(m.group(1)) for k in sd if (m := re.match(r"(\d+)\.pool\.0\.weight$", k))}


def _shape(sd: dict, key: str, dim: int, default: int) -> int:
    v = sd.get(key)
    return int(v.shape[dim]) if v is not None and v.ndim == 4 else default


def _load_strict(module: nn.Module, sd: dict, path: str) -> None:
    """``load_state_dict`` with a one-line UserError naming a few missing / unexpected / mis-shaped keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shaped = [f"{k} {tuple(sd[k].shape)}!={tuple(v.shape)}" for k, v in own.items()
              if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if missing or unexpected or shaped:
        parts = [f"{name} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shaped))
                 if keys]
        raise UserError(f"weights file {path} does not match the tiny-autoencoder (TAESD) layout: "
                        + "; ".join(parts),
                        "pass a TAESD-family *_encoder.pth / *_decoder.pth pair (madebyollin/taesd layout)")
    module.load_state_dict({k: v.float() for k, v in sd.items()})  # fp16 files -> fp32 compute


def _read(path: Path) -> dict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt / not a state dict
        raise UserError(f"cannot read weights file {path}: {str(e).splitlines()[0][:120]}",
                        "pass a state-dict .pth or .safetensors file") from None


# ---------------------------------------------------------------- adapter for .pth state dicts


class TinyAE(Autoencoder):
    """TAESD-family autoencoder from state dicts. Args: encoder / decoder ``nn.Sequential`` modules."""

    trainable = True

    def __init__(self, encoder: nn.Sequential, decoder: nn.Sequential, *, name: str, weights_id: str,
                 weights_sha256: str, stem: str = "tiny"):
        super().__init__()
        self.encoder, self.decoder, self.stem = encoder.eval(), decoder.eval(), stem
        self.info = AEInfo(
            name=name, backend="tiny", weights_id=weights_id, weights_sha256=weights_sha256,
            in_channels=encoder[0].in_channels, latent_channels=encoder[-1].out_channels, downsample=8,
            scaling="z (raw parent-VAE latent, no scaling factor)", image_range=(0.0, 1.0), deterministic=True,
            notes={"convention": "taesd", "decoder_input_clamp": "3 * tanh(z / 3)",
                   "pool_branches": any(getattr(m, "pool", None) is not None for m in encoder)},
        )

    def _encode(self, x):
        return self.encoder(x)

    def _decode(self, z):
        return self.decoder(z)

    def training_outputs(self, x, generator=None):
        return self.decoder(self.encoder(x)), None

    def trainable_module(self):
        return self

    def save_pretrained(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.encoder.state_dict(), directory / f"{self.stem}_encoder.pth")
        torch.save(self.decoder.state_dict(), directory / f"{self.stem}_decoder.pth")


def _split_combined(sd: dict) -> tuple[dict, dict]:
    """Hub ``taef2.safetensors`` layout (``encoder.layers.i``, ``decoder.layers.i``) -> Sequential keys;
    the decoder's clamp has no weights, so its indices shift by one."""
    enc, dec = {}, {}
    for k, v in sd.items():
        part, _layers, idx, *rest = k.split(".")
        if part == "encoder":
            enc[".".join([idx, *rest])] = v
        elif part == "decoder":
            dec[".".join([str(int(idx) + 1), *rest])] = v
    return enc, dec


def load_tiny(path: str | Path, *, name: str | None = None) -> TinyAE:
    """From ``x_encoder.pth`` (its ``x_decoder.pth`` beside it), a folder holding such a pair, or a
    single combined ``.safetensors`` (the hub's ``taef2.safetensors`` layout)."""
    path = Path(path).expanduser()
    if path.is_dir():
        encs = sorted(path.glob("*_encoder.pth"))
        if len(encs) != 1:
            raise UserError(f"folder {path} holds {len(encs)} *_encoder.pth files",
                            "pass the encoder file itself (path/to/x_encoder.pth)")
        path = encs[0]
    if path.name.endswith("_encoder.pth"):
        dec_path = path.with_name(path.name.replace("_encoder.pth", "_decoder.pth"))
        if not dec_path.is_file():
            raise UserError(f"decoder weights {dec_path} not found next to {path.name}",
                            "put the matching *_decoder.pth beside the encoder file")
        files, stem = [path, dec_path], path.name[: -len("_encoder.pth")]
        enc_sd, dec_sd = _read(path), _read(dec_path)
    else:
        files, stem = [path], path.stem
        enc_sd, dec_sd = _split_combined(_read(path))
    width = _shape(enc_sd, "0.weight", 0, 64)
    enc = build_encoder(_shape(enc_sd, "0.weight", 1, 3), width, _shape(enc_sd, "14.weight", 0, 4), _pools(enc_sd))
    dec = build_decoder(_shape(dec_sd, "1.weight", 1, 4), width, _shape(dec_sd, "19.weight", 0, 3), _pools(dec_sd))
    _load_strict(enc, enc_sd, str(files[0]))
    _load_strict(dec, dec_sd, str(files[-1]))
    return TinyAE(enc, dec, name=name or str(path), weights_id=" + ".join(str(f) for f in files),
                  weights_sha256=weights_sha256(files), stem=stem)


# ---------------------------------------------------------------- adapter for diffusers AutoencoderTiny


class DiffusersTiny(Autoencoder):
    """Wraps ``diffusers.AutoencoderTiny`` (hub ids such as ``madebyollin/taesd``); converts [0,1] <-> [-1,1]."""

    trainable = True

    def __init__(self, vae, *, name: str, weights_id: str, weights_sha256: str):
        super().__init__()
        self.vae = vae.eval()
        cfg = vae.config
        self.info = AEInfo(
            name=name, backend="diffusers-tiny", weights_id=weights_id, weights_sha256=weights_sha256,
            in_channels=int(cfg.in_channels), latent_channels=int(cfg.latent_channels),
            downsample=2 ** (len(cfg.num_encoder_blocks) - 1),
            scaling="z (raw parent-VAE latent, no scaling factor)", image_range=(-1.0, 1.0), deterministic=True,
            notes={"convention": "taesd", "decoder_input_clamp": "3 * tanh(z / 3)"},
        )

    def _encode(self, x):
        return self.vae.encode(x * 2 - 1).latents

    def _decode(self, z):
        return (self.vae.decode(z).sample + 1) / 2

    def training_outputs(self, x, generator=None):
        return (self.vae.decoder(self.vae.encoder(x * 2 - 1)) + 1) / 2, None

    def trainable_module(self):
        return self.vae

    def save_pretrained(self, directory):
        self.vae.save_pretrained(str(directory), safe_serialization=True)


def load_diffusers_tiny(spec: str, *, name: str | None = None) -> DiffusersTiny:
    from diffusers import AutoencoderTiny

    repo, sub = split_hub_spec(spec)
    vae = from_pretrained(AutoencoderTiny, repo, sub)
    wid, sha = describe_weights(repo, sub)
    return DiffusersTiny(vae, name=name or spec, weights_id=wid, weights_sha256=sha)


# ---------------------------------------------------------------- registry


@AUTOENCODERS.register("taef2")
def _taef2():
    local = shared_data_dir() / "weights" / "taef2_encoder.pth"
    if local.is_file():
        return load_tiny(local, name="taef2")
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download("madebyollin/taef2", "taef2.safetensors")
    except Exception as e:
        raise UserError(f"TAEF2 weights not found at {local} and the hub download failed ({type(e).__name__})",
                        f"put taef2_encoder.pth and taef2_decoder.pth into {local.parent} or go online") from None
    return load_tiny(path, name="taef2")


@AUTOENCODERS.register("taesd")
def _taesd():
    return load_diffusers_tiny("madebyollin/taesd", name="taesd")


@AUTOENCODERS.register("taef1")
def _taef1():
    return load_diffusers_tiny("madebyollin/taef1", name="taef1")
