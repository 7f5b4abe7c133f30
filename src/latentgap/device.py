"""Device and precision choices in one place (library code never calls ``.cuda()`` itself)."""

from __future__ import annotations

import torch

from .errors import UserError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but CUDA is not available", "use --device cpu or --device auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device '{device}' requested but MPS is not available", "use --device cpu or --device auto")
    return dev


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision where it helps: bf16 on CUDA that supports it, else fp16 on CUDA; none on CPU/MPS."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def device_name(device: torch.device) -> str:
    """Human-readable hardware name for result rows: the GPU's name, or the CPU's model name (Linux
    ``/proc/cpuinfo``; ``platform.processor()`` is empty there)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    return name


def prefers_channels_last(device: torch.device, model_name: str | None) -> bool:
    """NHWC (channels-last) weights and inputs where it was measured to help: every model on CUDA (tensor
    cores); on CPU, ConvNeXt (1.10-1.21x per training step on a quiet 2-core Xeon) and ResNet-50 (1.30x at
    128 px), but not ResNet-18 (0.96x at 64 px) — ``benchmarks/channels_last.md``. Values are the same up to
    float rounding, so the memory format is not part of a run's config hash (like the device)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(model_name) and model_name.startswith(("convnext", "resnet50"))
