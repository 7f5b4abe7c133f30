"""Loading diffusers models from a hub id or a local folder through one code path.

``from_pretrained`` accepts both a Hugging Face repo id and a local directory, so a model the user
``save_pretrained``-ed offline loads exactly like a hub model (diffusers ``ModelMixin.from_pretrained``).
"""

from __future__ import annotations

import importlib.util

from pathlib import Path
from typing import Any

from ..errors import UserError
from ..storage import hub_reachable
from .base import weights_sha256

# File names diffusers writes / looks for (diffusers.utils.constants).
_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                 "diffusion_pytorch_model.fp16.safetensors")


def split_hub_spec(spec: str) -> tuple[str, str | None]:
    """``owner/name`` or ``owner/name/subfolder`` -> (repo_or_path, subfolder). Local paths pass through."""
    if Path(spec).expanduser().exists():
        return str(Path(spec).expanduser()), None
    parts = spec.strip("/").split("/")
    if len(parts) >= 3:
        return "/".join(parts[:2]), "/".join(parts[2:])
    return spec, None


def _offline(repo: str) -> bool:
    """A hub id (not a local folder) while the hub does not answer: read it from the local cache only."""
    return not Path(repo).exists() and not hub_reachable()


def _not_cached(what: str, where: str) -> UserError:
    return UserError(f"cannot load {what} '{where}': the hub (huggingface.co) does not answer and the model is not in "
                     "the local Hugging Face cache",
                     "run once with internet to cache it, or download it and pass its local folder")


def load_config(repo: str, subfolder: str | None) -> dict[str, Any]:
    """The model's ``config.json`` (local or hub) as a dict; a clear UserError when it is not there."""
    # Any ConfigMixin subclass reads the same config.json; AutoencoderKL is just a concrete one.
    from diffusers import AutoencoderKL

    offline = _offline(repo)
    try:
        return dict(AutoencoderKL.load_config(repo, subfolder=subfolder, local_files_only=offline))
    except (OSError, ValueError) as e:
        where = f"{repo}" + (f" (subfolder {subfolder})" if subfolder else "")
        if offline:
            raise _not_cached("the config.json of", where) from None
        raise UserError(
            f"cannot read a diffusers config.json from {where}: {str(e).splitlines()[0][:160]}",
            "pass a folder written by save_pretrained" if Path(repo).exists() else
            "check the hub id and your internet connection, or download the model and pass its local folder",
        ) from None


def from_pretrained(cls, repo: str, subfolder: str | None):
    """``cls.from_pretrained(repo, subfolder=...)`` in float32 with a UserError on failure. A hub id is read from
    the local Hugging Face cache without network retries when the hub does not answer."""
    import torch

    local, offline = Path(repo).exists(), _offline(repo)
    where = repo + (f"/{subfolder}" if subfolder else "")
    try:
        # low_cpu_mem_usage needs `accelerate`; without it diffusers falls back anyway, with a long warning
        low_mem = importlib.util.find_spec("accelerate") is not None
        return cls.from_pretrained(repo, subfolder=subfolder, torch_dtype=torch.float32, low_cpu_mem_usage=low_mem,
                                   local_files_only=offline)
    except (OSError, ValueError, RuntimeError) as e:
        if offline:
            raise _not_cached(cls.__name__, where) from None
        raise UserError(f"cannot load {cls.__name__} weights from {where}: {str(e).splitlines()[0][:200]}",
                        "check that the folder holds config.json plus matching weights (save_pretrained output)"
                        if local else "check the hub id and your internet connection, or download the model and "
                        "pass its local folder") from None


def weight_files(repo: str, subfolder: str | None) -> list[Path]:
    """The weight files ``from_pretrained`` read: in the local folder, or in the Hugging Face cache."""
    local = Path(repo)
    if local.is_dir():
        folder = local / subfolder if subfolder else local
        return [folder / n for n in _WEIGHT_NAMES if (folder / n).is_file()][:1]
    from huggingface_hub import try_to_load_from_cache

    for name in _WEIGHT_NAMES:  # the cache addresses files by their path in the repo
        hit = try_to_load_from_cache(repo, f"{subfolder}/{name}" if subfolder else name)
        if isinstance(hit, str):
            return [Path(hit)]
    return []


def describe_weights(repo: str, subfolder: str | None) -> tuple[str, str]:
    """(weights_id, weights_sha256) for a diffusers model folder or hub id."""
    files = weight_files(repo, subfolder)
    wid = repo + (f"/{subfolder}" if subfolder else "")
    return wid, (weights_sha256(files) if files else "unknown")
