"""Autoencoders behind one protocol (``encode`` / ``decode`` / ``info``), their registry, and training.

>>> ae = create_autoencoder("taef2")                     # registry name, hub id or local path
>>> z = ae.encode(adapt_images(x, ae.info))              # x: (B, C, H, W) in [0, 1]
>>> x_rec = restore_channels(ae.decode(z), x.shape[1])
"""

from .base import AUTOENCODERS, AEInfo, Autoencoder, adapt_images, check_side, restore_channels
from . import builtin, diffusers_kl, flux2, medvae, tiny  # noqa: F401  (register the backends)
from .factory import create_autoencoder

__all__ = ["AEInfo", "AUTOENCODERS", "Autoencoder", "adapt_images", "check_side", "create_autoencoder",
           "restore_channels"]
