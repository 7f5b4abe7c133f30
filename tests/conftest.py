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
