"""MedVAE (Varma et al., "MedVAE: Efficient Automated Interpretation of Medical Images with Large-Scale
Generalizable Autoencoders", 2025; package ``medvae``, StanfordMIMI/MedVAE) through ``MVAE(model_name, modality)``.

``MVAE.forward`` returns a *projected* latent (``channel_proj(channel_ds(z) + z)``, the stage-2 output the
paper's downstream classifiers read), while ``MVAE.encode`` returns the posterior latent ``z`` that
``MVAE.decode`` consumes -- and both *sample* the posterior by default. We use the decoder's latent,
deterministically: ``z = posterior.mode()`` (the mean), so that ``decode(encode(x))`` is the autoencoder's
reconstruction and encoding is repeatable. Images enter MedVAE in [-1, 1] (its ``load_2d`` transform:
ScaleIntensity to [0, 1], then Normalize(0.5, 0.5)). Optional extra: ``pip install "latentgap[medvae]"``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..errors import UserError
from ..storage import atomic_write_json, read_json
from .base import AUTOENCODERS, AEInfo, Autoencoder, state_dict_sha256, weights_sha256

MEDVAE_JSON = "medvae.json"  # marks a fine-tuned MedVAE folder

# MVAE model names (medvae/utils/factory.py FILE_DICT_ASSOCIATIONS), 2-D only: (downsample, latent channels).
MEDVAE_2D = {"medvae_4_1_2d": (4, 1), "medvae_4_3_2d": (4, 3), "medvae_4_4_2d": (4, 4),
             "medvae_8_1_2d": (8, 1), "medvae_8_4_2d": (8, 4)}
MODALITIES = ("xray", "ct", "mri")


def _import_mvae():
    try:
        from medvae import MVAE
    except ImportError:
        raise UserError("the MedVAE backend needs the 'medvae' package, which is not installed",
                        'pip install "latentgap[medvae]"') from None
    return MVAE


class MedVAE(Autoencoder):
    """Wraps ``medvae.MVAE`` (2-D models). ``encode`` = posterior mode of ``MVAE.model.encode``.

    Args:
        model_name: one of :data:`MEDVAE_2D`, e.g. ``"medvae_4_1_2d"``.
        modality: ``"xray"``, ``"ct"`` or ``"mri"`` (MedVAE's 2-D loader ignores it, it is recorded).
    """

    trainable = True  # MedVAE-FT, the paper's fine-tuned arm: same losses as every KL backend

    def __init__(self, model_name: str = "medvae_4_1_2d", modality: str = "xray", *, name: str | None = None):
        super().__init__()
        if model_name not in MEDVAE_2D:
            raise UserError(f"unknown or non-2-D MedVAE model '{model_name}'",
                            f"use one of: {', '.join(MEDVAE_2D)}")
        if modality not in MODALITIES:
            raise UserError(f"unknown MedVAE modality '{modality}'", f"use one of: {', '.join(MODALITIES)}")
        mvae = _import_mvae()(model_name, modality)
        self.mvae = mvae.eval()
        net = mvae.model  # medvae.models.AutoencoderKL_2D
        f, _ = MEDVAE_2D[model_name]
        self.info = AEInfo(
            name=name or f"medvae:{model_name}:{modality}", backend="medvae",
            weights_id=f"stanfordmimi/MedVAE:{model_name}", weights_sha256=state_dict_sha256(net),
            in_channels=int(net.encoder.conv_in.in_channels), latent_channels=int(net.embed_dim),
            downsample=f, scaling="z (posterior mode of MVAE.model.encode, no scaling factor)",
            image_range=(-1.0, 1.0), deterministic=True,
            notes={"latent": "decoder latent: posterior mode of MVAE.model.encode (not the projected "
                             "MVAE.forward latent, never a sample)",
                   "modality": modality,
                   "intensity": "images used as given in [0,1] -> [-1,1]; MedVAE's per-image min-max "
                                "rescaling is not applied",
                   "weights_sha256": "sha256 of the loaded state dict tensors"},
        )

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.mvae.model.encode(x * 2 - 1).mode()

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return (self.mvae.model.decode(z) + 1) / 2

    def training_outputs(self, x, generator=None):
        post = self.mvae.model.encode(x * 2 - 1)
        # medvae's own .sample() draws from the global RNG; a seeded generator keeps resume exact.
        eps = torch.randn(post.mean.shape, generator=generator, device=post.mean.device, dtype=post.mean.dtype)
        x_hat = self.mvae.model.decode(post.mean + post.std * eps)
        return (x_hat + 1) / 2, post.kl()

    def trainable_module(self):
        return self.mvae.model

    def save_pretrained(self, directory):
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model_name = self.info.weights_id.split(":")[-1]
        atomic_write_json(directory / MEDVAE_JSON, {"model_name": model_name, "modality": self.info.notes["modality"]})
        sd = {k: v.contiguous() for k, v in self.mvae.model.state_dict().items()}
        save_file(sd, str(directory / "medvae.safetensors"))


def load_medvae_folder(path: str | Path, *, name: str | None = None) -> MedVAE:
    """A fine-tuned MedVAE saved by :meth:`MedVAE.save_pretrained` (``medvae.json`` + weights)."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_json(path / MEDVAE_JSON)
    ae = MedVAE(meta["model_name"], meta["modality"], name=name or str(path))
    ae.mvae.model.load_state_dict(load_file(str(path / "medvae.safetensors")))
    ae.info = dataclasses.replace(ae.info, weights_id=str(path / "medvae.safetensors"),
                                  weights_sha256=weights_sha256([path / "medvae.safetensors"]))
    return ae


def parse_medvae_spec(spec: str) -> dict:
    """``medvae`` | ``medvae:<model_name>`` | ``medvae:<model_name>:<modality>`` -> MedVAE kwargs."""
    parts = spec.split(":")
    kw = {}
    if len(parts) > 1 and parts[1]:
        kw["model_name"] = parts[1]
    if len(parts) > 2 and parts[2]:
        kw["modality"] = parts[2]
    return kw


@AUTOENCODERS.register("medvae")
def _medvae(model_name: str = "medvae_4_1_2d", modality: str = "xray"):
    return MedVAE(model_name, modality)
