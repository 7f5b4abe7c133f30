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
