"""Encode once, train many times: the latent cache, reconstruction fidelity and the three spaces."""

from .cache import LatentCache, cache_dir_for, encode_dataset, ensure_cache, open_cache
from .fidelity import psnr, ssim, summarize_fidelity
from .spaces import SPACES, SpaceDataset, input_spec, space_dataset

__all__ = ["LatentCache", "cache_dir_for", "encode_dataset", "ensure_cache", "open_cache", "psnr", "ssim", "summarize_fidelity",
           "SPACES", "SpaceDataset", "input_spec", "space_dataset"]
