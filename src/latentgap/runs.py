"""Run folders: names, environment capture and checkpoints, in one place for every stage.

A *run folder* holds what one training (classifier, autoencoder, later generators) wrote:
``config.yaml``, ``metrics.jsonl``, checkpoints and a result. This module owns the parts they share:

* :func:`run_name` — readable folder names, ``<dataset>-<ae>-<space>-<variant>-f<k>-s<seed>-<hash>``
  (DiT's numbered folders, LDAM-DRW's ``store_name``): what differs between runs is in the name, the hash
  keeps it unique.
* :func:`environment` — versions, code version, host and hardware, captured the same way everywhere.
* :func:`save_checkpoint` / :func:`load_checkpoint` — one format: a single ``.safetensors`` file whose
  header carries the JSON metadata (step / epoch, RNG states, scheduler, optimiser param groups). One file
  means one atomic rename: weights and counters can never disagree after a kill.
* :func:`optimizer_tensors` / :func:`load_optimizer` — an optimiser's state as flat tensors + JSON.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import re
from pathlib import Path
from typing import Any

import torch

from .version import __version__
from .storage import atomic_write

META_KEY = "latentgap"  # safetensors header key that holds the JSON metadata


# --------------------------------------------------------------------------- names

def slug(text: Any, max_len: int = 32) -> str:
    """A file-name-safe short form: ``phantom:n=1500,size=32`` -> ``phantom_n1500_size32``."""
    s = re.sub(r"[=]", "", str(text))
    s = re.sub(r"[^A-Za-z0-9_.+-]+", "_", s).strip("_.-")
    return (s[:max_len].rstrip("_.") or "x")


def run_name(*parts: Any, hash: str) -> str:
    """``slug(part1)-slug(part2)-...-hash``; parts that are None are left out."""
    return "-".join([slug(p) for p in parts if p is not None] + [hash])


# --------------------------------------------------------------------------- environment

@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """``<package version>+<sha256 of the installed sources, 12 hex>``: changes with any edit of the code,
    in an editable checkout and in an installed wheel alike (a git commit would miss uncommitted edits)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")) + sorted(root.rglob("*.yaml")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """What ran a computation: versions (latentgap, code, torch, diffusers, timm, python), host, platform,
    and, with ``device``, its hardware name and the intra-op thread count."""
    from .device import device_name

    # versions from the installed metadata: recording them must not import diffusers / timm (seconds per cell)
    env = {"latentgap": __version__, "code_version": code_version(), "torch": torch.__version__,
           "diffusers": _dist_version("diffusers"), "timm": _dist_version("timm"), "python": platform.python_version(),
           "platform": platform.platform(), "host": platform.node()}
    if device is not None:
        device = torch.device(device)
        env.update(device=str(device), device_name=device_name(device), threads=torch.get_num_threads())
    return env


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and JSON-able ``meta`` to one ``.safetensors`` file, atomically."""
    from safetensors.torch import save_file

    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {META_KEY: json.dumps(meta, sort_keys=True, default=str)}
    return atomic_write(Path(path), lambda p: save_file(flat, str(p), metadata=header))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, meta)`` of a file written by :func:`save_checkpoint`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device=str(device)) as f:
        meta = json.loads((f.metadata() or {}).get(META_KEY, "{}"))
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, meta


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """Only the metadata of a checkpoint (reads the header, not the tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads((f.metadata() or {}).get(META_KEY, "{}"))


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``tensors`` under ``prefix.`` with the prefix removed (a state dict)."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str = "optim") -> tuple[dict[str, torch.Tensor], list]:
    """An optimiser's state as ``{prefix.<param id>.<name>: tensor}`` and its JSON-able param groups."""
    sd = optimizer.state_dict()
    tensors = {f"{prefix}.{pid}.{name}": torch.as_tensor(val).detach().cpu().contiguous().clone()
               for pid, st in sd["state"].items() for name, val in st.items()}
    return tensors, sd["param_groups"]


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], param_groups: list,
                   prefix: str = "optim") -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, val in prefixed(tensors, prefix).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = val
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def ema_tensors(ema) -> tuple[dict[str, torch.Tensor], dict]:
    """A diffusers ``EMAModel``'s shadow weights as ``{ema.<i>: tensor}`` and the rest of its state (JSON-able)
    as ``{"ema": ..., "ema_n": count}`` for the checkpoint's header."""
    sd = ema.state_dict()
    shadow = sd.pop("shadow_params")
    return {f"ema.{i}": p for i, p in enumerate(shadow)}, {"ema": sd, "ema_n": len(shadow)}


def load_ema(ema, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Inverse of :func:`ema_tensors`."""
    ema.load_state_dict({**meta["ema"], "shadow_params": [tensors[f"ema.{i}"] for i in range(meta["ema_n"])]})


def check_run_dir(run_dir: str | os.PathLike, config_hash: str, what: str = "configuration") -> dict | None:
    """The finished row (``result.json``) if ``run_dir`` holds this configuration's result, None if it holds
    nothing finished of it; UserError if ``result.json``, the checkpoint or ``config.yaml`` was written by another
    configuration (``what`` names it in the message)."""
    import yaml

    from .errors import UserError
    from .storage import read_json

    run_dir = Path(run_dir)
    readers = {"result.json": read_json, "checkpoint.safetensors": read_checkpoint_meta,
               "config.yaml": lambda p: yaml.safe_load(p.read_text()) or {}}
    for name, read in readers.items():
        p = run_dir / name
        if not p.exists():
            continue
        have = read(p).get("config_hash")
        if have != config_hash:
            raise UserError(f"{p} was written by another {what} (config hash {have}, this run {config_hash})",
                            "use a new --out folder for these settings, or repeat the original settings to resume")
    res = run_dir / "result.json"
    return read_json(res) if res.exists() else None

