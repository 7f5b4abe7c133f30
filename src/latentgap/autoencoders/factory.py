"""``create_autoencoder(spec)``: one entry point for registry names, hub ids and local paths.

Resolution order: registry name (``taef2``, ``sd-vae-ft-mse``, ``kl-builtin``, ``medvae:<model>:<modality>``)
-> existing local path (``*_encoder.pth`` / ``.safetensors`` file, training-run folder, ``save_pretrained``
folder, MedVAE-FT folder) -> hub id ``owner/name[/subfolder]``. Local folders and hub ids share one code path:
the ``config.json`` ``_class_name`` picks the adapter, then ``from_pretrained`` loads it.
"""

from __future__ import annotations

from pathlib import Path

from ..device import resolve_device
from ..errors import UserError
from .base import AUTOENCODERS, Autoencoder
from .diffusers_kl import load_kl
from .flux2 import load_flux2
from .hub import load_config, split_hub_spec
from .medvae import MEDVAE_JSON, load_medvae_folder, parse_medvae_spec
from .tiny import load_diffusers_tiny, load_tiny

#: diffusers class name -> loader(spec, name=...)
_DIFFUSERS_LOADERS = {"AutoencoderKL": load_kl, "AutoencoderKLFlux2": load_flux2,
                      "AutoencoderTiny": load_diffusers_tiny}

#: a training run folder keeps its final model here (see autoencoders/train.py)
RUN_MODEL_DIR = "model"


def create_autoencoder(spec: str | Autoencoder, device: str = "cpu", **kw) -> Autoencoder:
    """Build an autoencoder in eval mode on ``device``.

    Args:
        spec: registry name, local path, or hub id (``owner/name`` or ``owner/name/subfolder``);
            an :class:`Autoencoder` passes through (moved to ``device``).
        device: ``"cpu"``, ``"cuda"``, ``"mps"`` or ``"auto"``.
        **kw: passed to registry factories (e.g. ``width=...`` for ``kl-builtin``).
    """
    dev = resolve_device(device)
    ae = spec if isinstance(spec, Autoencoder) else _resolve(str(spec), **kw)
    return ae.to(dev).eval()


def _resolve(spec: str, **kw) -> Autoencoder:
    name = spec
    if spec.split(":")[0] == "medvae":  # medvae:<model_name>:<modality>
        return AUTOENCODERS.create("medvae", **{**parse_medvae_spec(spec), **kw})
    if spec in AUTOENCODERS:
        return AUTOENCODERS.create(spec, **kw)
    path = Path(spec).expanduser()
    if path.exists():
        return _from_path(path, _local_name(path))
    if spec.endswith((".pth", ".safetensors", ".ckpt")) or spec.startswith((".", "/", "~")) or spec.count("/") == 0:
        raise UserError(f"autoencoder '{spec}' is neither a registered name nor an existing path",
                        f"use one of: {', '.join(AUTOENCODERS.names())}, a local path, or a hub id owner/name")
    return _from_diffusers(spec, name)


def _local_name(path: Path) -> str:
    """A short, location-independent name for a local model (the weights' sha256 is its identity):
    the folder or file stem, or the training run's folder for ``<run>/model``."""
    path = path.resolve()
    if path.is_dir() and path.name == RUN_MODEL_DIR and (path.parent / "training.json").exists():
        path = path.parent
    stem = path.stem if path.is_file() else path.name
    return stem.removesuffix("_encoder") or "local"


def _from_path(path: Path, name: str) -> Autoencoder:
    if path.is_file():
        if path.suffix in (".pth", ".safetensors"):
            return load_tiny(path, name=name)
        raise UserError(f"cannot tell which autoencoder {path} holds",
                        "pass a *_encoder.pth / .safetensors file or a save_pretrained folder")
    if (path / RUN_MODEL_DIR).is_dir() and not (path / "config.json").exists():
        return _from_path(path / RUN_MODEL_DIR, name)
    if (path / MEDVAE_JSON).is_file():
        return load_medvae_folder(path, name=name)
    if (path / "config.json").is_file():
        return _from_diffusers(str(path), name)
    if any(path.glob("*_encoder.pth")):
        return load_tiny(path, name=name)
    raise UserError(f"folder {path} holds no autoencoder (no config.json, *_encoder.pth or {RUN_MODEL_DIR}/)",
                    "pass a save_pretrained folder, a training run folder, or a tiny-autoencoder weights file")


def _from_diffusers(spec: str, name: str) -> Autoencoder:
    repo, sub = split_hub_spec(spec)
    cls = load_config(repo, sub).get("_class_name")
    if cls not in _DIFFUSERS_LOADERS:
        raise UserError(f"{spec} holds a diffusers '{cls}', which latentgap has no adapter for",
                        f"use one of: {', '.join(_DIFFUSERS_LOADERS)} (or add an adapter, docs/autoencoders.md)")
    return _DIFFUSERS_LOADERS[cls](spec, name=name)
