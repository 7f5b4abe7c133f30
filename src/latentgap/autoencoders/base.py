"""The autoencoder protocol every backend implements, and the image-format adaptation they share.

Follows the latent-diffusion interface of Rombach et al., "High-Resolution Image Synthesis with Latent
Diffusion Models" (CVPR 2022): ``encode`` gives the (scaled) latent a diffusion model would see, ``decode``
inverts it. Images cross this boundary as float32 ``(B, C, H, W)`` in ``[0, 1]``; each adapter converts to
its own range internally and is the only place that knows its backend's conventions.
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..storage import sha256_file
from ..registry import Registry

#: name -> factory ``fn(name=..., **kw) -> Autoencoder`` (on CPU; ``create_autoencoder`` moves it)
AUTOENCODERS = Registry("autoencoders")

# ---------------------------------------------------------------- info record


@dataclass(frozen=True)
class AEInfo:
    """What a cache manifest needs to know about an autoencoder.

    Args:
        name: registry name, hub id or path the user gave.
        backend: adapter id, e.g. ``"diffusers-kl"``, ``"flux2"``, ``"tiny"``, ``"medvae"``.
        weights_id: where the weights came from (hub id[/subfolder], file path, or ``"random-init"``).
        weights_sha256: sha256 of the weight file(s); for several files, sha256 of their sorted digests.
        in_channels: image channels the encoder takes (1 or 3).
        latent_channels: channels of ``encode``'s output.
        downsample: spatial factor f; ``encode`` maps ``(H, W)`` to ``(H/f, W/f)``.
        scaling: human-readable formula from the raw posterior mode ``z`` to the returned latent.
        image_range: range the backend itself works in, ``(-1, 1)`` or ``(0, 1)`` (inputs are always [0, 1]).
        deterministic: ``True`` when ``encode`` uses the posterior mode (never a sample).
        notes: free-form JSON-able details (conventions, choices made for this backend).
    """

    name: str
    backend: str
    weights_id: str
    weights_sha256: str
    in_channels: int
    latent_channels: int
    downsample: int
    scaling: str
    image_range: tuple[float, float]
    deterministic: bool = True
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_range"] = list(self.image_range)
        return d


# ---------------------------------------------------------------- protocol


class Autoencoder(nn.Module, abc.ABC):
    """Base class: ``encode(x) -> z``, ``decode(z) -> x`` and ``info``.

    Subclasses implement ``_encode`` / ``_decode`` on adapted inputs. ``encode`` and ``decode`` are
    inference calls (no autograd, posterior mode); training goes through :meth:`training_outputs`.
    """

    info: AEInfo
    #: backends that :func:`latentgap.autoencoders.train.finetune_autoencoder` can train
    trainable: bool = False

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Args:
            x: ``(B, in_channels, H, W)`` float in ``[0, 1]``, H and W multiples of ``info.downsample``
               (use :func:`adapt_images` first).

        Returns:
            ``(B, latent_channels, H/f, W/f)`` latent, already scaled / normalised by the backend's convention.
        """
        _check_input(x, self.info)
        return self._encode(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Args:
            z: ``(B, latent_channels, h, w)`` latent as returned by :meth:`encode`.

        Returns:
            ``(B, in_channels, h*f, w*f)`` float in ``[0, 1]`` (clamped).
        """
        if z.ndim != 4 or z.shape[1] != self.info.latent_channels:
            raise UserError(f"latent of shape {tuple(z.shape)} given to '{self.info.name}', which expects "
                            f"(B, {self.info.latent_channels}, h, w)", "pass latents made by this autoencoder")
        return self._decode(z).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``decode(encode(x))`` in [0, 1]."""
        return self.decode(self.encode(x))

    # -- every backend implements these two (the only place that knows its conventions)
    @abc.abstractmethod
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, H, W) in [0, 1] -> scaled latent."""

    @abc.abstractmethod
    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> (B, in_channels, H, W), roughly [0, 1] (clamped by ``decode``)."""

    # -- trainable backends only
    def training_outputs(self, x: torch.Tensor, generator: torch.Generator | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Differentiable pass for training: ``(x_hat, kl)``.

        Args:
            x: ``(B, in_channels, H, W)`` in [0, 1].
            generator: drives the posterior sample (seeded per step so a resumed run repeats it).

        Returns:
            ``x_hat`` ``(B, in_channels, H, W)`` on the [0, 1] scale but *not* clamped (so gradients flow),
            and ``kl`` ``(B,)``, the KL divergence to N(0, I) summed over latent elements, or ``None`` for
            deterministic backends.
        """
        raise UserError(f"autoencoder backend '{self.info.backend}' cannot be trained here",
                        "fine-tune a diffusers AutoencoderKL / AutoencoderKLFlux2 or a tiny autoencoder")

    def trainable_module(self) -> nn.Module:
        """The ``nn.Module`` whose parameters training updates and whose state dict checkpoints hold."""
        raise UserError(f"autoencoder backend '{self.info.backend}' cannot be trained here",
                        "fine-tune a diffusers AutoencoderKL / AutoencoderKLFlux2 or a tiny autoencoder")

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the weights in a form :func:`create_autoencoder` loads back from ``directory``."""
        raise UserError(f"autoencoder backend '{self.info.backend}' cannot be saved here",
                        "save a trainable backend")


def _check_input(x: torch.Tensor, info: AEInfo) -> None:
    if x.ndim != 4 or x.shape[1] != info.in_channels:
        raise UserError(f"images of shape {tuple(x.shape)} given to '{info.name}', which takes "
                        f"(B, {info.in_channels}, H, W)", "adapt them with latentgap.autoencoders.adapt_images")
    check_side(tuple(x.shape[-2:]), info)


# ---------------------------------------------------------------- image adaptation


def check_side(size: tuple[int, int], info: AEInfo) -> None:
    """UserError unless H and W are multiples of the downsampling factor; offers ``--resize N``."""
    f = info.downsample
    bad = [s for s in size if s % f]
    if bad:
        side = max(size)
        nearest = max(f, int(round(side / f)) * f)
        raise UserError(f"image size {size[0]}x{size[1]} is not a multiple of {f}, the downsampling factor of "
                        f"autoencoder '{info.name}'", f"pass --resize {nearest} (nearest valid side)")


def adapt_images(x: torch.Tensor, info: AEInfo, grey_to_rgb: bool = True) -> torch.Tensor:
    """Bring dataset images into the autoencoder's input format.

    Args:
        x: ``(B, C, H, W)`` float in [0, 1], C in {1, 3}.
        info: the autoencoder's :class:`AEInfo`.
        grey_to_rgb: replicate a grey channel three times for RGB autoencoders; with ``False``, grey data
            into an RGB autoencoder is a :class:`UserError`.

    Returns:
        ``(B, info.in_channels, H, W)`` float in [0, 1].
    """
    check_side(tuple(x.shape[-2:]), info)
    c, want = x.shape[1], info.in_channels
    if c == want:
        return x
    if c == 1 and want == 3:
        if not grey_to_rgb:
            raise UserError(f"grey images (1 channel) given to RGB autoencoder '{info.name}'",
                            "pass --grey-to-rgb to replicate the grey channel")
        return x.expand(-1, 3, -1, -1)
    if c == 3 and want == 1:
        raise UserError(f"RGB images given to grey (1-channel) autoencoder '{info.name}'",
                        "use an RGB autoencoder or convert the dataset to greyscale")
    raise UserError(f"images with {c} channels cannot go into autoencoder '{info.name}' ({want} channels)",
                    "use 1-channel (grey) or 3-channel (RGB) images")


def restore_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Map a reconstruction back to the dataset's channel count.

    Args:
        x: ``(B, C_ae, H, W)`` reconstruction in [0, 1].
        channels: the dataset's channel count (1 or 3).

    Returns:
        ``(B, channels, H, W)``; an RGB reconstruction of grey data becomes the mean of its channels
        (the inverse of replication for a perfect reconstruction).
    """
    if x.shape[1] == channels:
        return x
    if x.shape[1] == 3 and channels == 1:
        return x.mean(dim=1, keepdim=True)
    raise ValueError(f"cannot map {x.shape[1]}-channel reconstructions to {channels} channels")


# ---------------------------------------------------------------- weight hashing


def weights_sha256(paths: list[Path]) -> str:
    """sha256 of one weight file, or of the sorted ``name:digest`` lines of several."""
    paths = sorted(Path(p) for p in paths)
    if len(paths) == 1:
        return sha256_file(paths[0])
    lines = "\n".join(f"{p.name}:{sha256_file(p)}" for p in paths)
    return hashlib.sha256(lines.encode()).hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """Fallback identity when no weight file is at hand (e.g. an untrained built-in model)."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
