"""Shared fixtures. Real data and weights come from ``../shared/data`` (or ``$LATENTGAP_SHARED_DATA``)."""

from __future__ import annotations

import pytest
import torch

from latentgap.io import shared_data_dir

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
