"""Shared fixtures. Real data and weights come from ``../shared/data`` beside the repository (or
``$LATENTGAP_SHARED_DATA``). The library looks for ``shared/data`` from the working directory; tests set the
variable once so that subprocesses started in temporary folders find the same data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("LATENTGAP_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))

from latentgap.storage import shared_data_dir  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_data():
    root = shared_data_dir()
    if not (root / "datasets").is_dir():
        pytest.fail(f"shared data not found at {root}; set LATENTGAP_SHARED_DATA to the folder holding datasets/ and weights/")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """For tiny models: one intra-op thread is as fast, and avoids OpenMP spin-waiting on a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_flux2_vae():
    """A seeded tiny diffusers ``AutoencoderKLFlux2`` (4 latent channels at x4, 16 after the 2x2 patchify) with
    non-trivial BatchNorm statistics: the FLUX.2 conventions at test size."""
    from diffusers import AutoencoderKLFlux2

    torch.manual_seed(0)
    vae = AutoencoderKLFlux2(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                             layers_per_block=1).eval()
    vae.bn.running_mean.copy_(torch.linspace(-1, 1, 16))
    vae.bn.running_var.copy_(torch.linspace(0.2, 3.0, 16))
    return vae


@pytest.fixture
def interrupt_at_call(monkeypatch):
    """``interrupt_at_call(module, name, n)`` replaces ``module.name`` by a wrapper that raises KeyboardInterrupt at
    its ``n``-th call (an interruption mid-training); returns the list that counts the calls."""

    def install(module, name: str, n: int) -> list:
        real, calls = getattr(module, name), []

        def wrapper(*a, **kw):
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*a, **kw)
        monkeypatch.setattr(module, name, wrapper)
        return calls
    return install
