"""Per-image reconstruction fidelity: PSNR and SSIM (the paper's Table 2).

Both follow scikit-image's definitions so that numbers can be checked against
``skimage.metrics.peak_signal_noise_ratio`` / ``structural_similarity`` (tests do):

* PSNR = 10·log10(data_range² / MSE) over all pixels and channels of one image, data_range = 1.
* SSIM with scikit-image's defaults: 7×7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance
  (N/(N−1)), mean over the valid region (borders of (7−1)/2 pixels cropped), then mean over channels.

They run batched in torch so that the encoder's loop computes them on the float reconstructions
(before the uint8 rounding of the reconstruction cache).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "summarize_fidelity"]


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB.

    Args:
        x, y: (B, C, H, W) images in [0, data_range].
    Returns:
        (B,) float64; ``inf`` where the images are identical.
    """
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)  # (B,)
    return 10.0 * torch.log10(data_range**2 / mse)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 7) -> torch.Tensor:
    """Per-image SSIM (scikit-image defaults), averaged over channels.

    Args:
        x, y: (B, C, H, W) images in [0, data_range]; H, W >= win_size.
    Returns:
        (B,) float64.
    """
    x, y = x.double(), y.double()
    b, c, h, w = x.shape
    if min(h, w) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size}, got {h}x{w}")
    n = win_size * win_size
    cov_norm = n / (n - 1)  # sample covariance, as skimage's use_sample_covariance=True
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    # valid (unpadded) local means == skimage's reflect-padded filter followed by the border crop
    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t.reshape(b * c, 1, h, w), win_size, stride=1)  # (B*C, 1, h', w')

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.reshape(b, c, -1).mean(2).mean(1)  # (B,)


def summarize_fidelity(cache, ds, split: str = "test", indices=None) -> dict:
    """Mean ± std of per-image PSNR/SSIM of one cache over a split of its dataset.

    Args:
        split: "train", "val" or "test" (the dataset's own split; needs ``ds.official_split``) or "all";
            with ``indices``, only the name recorded for that selection (e.g. "fold 2 test").
        indices: dataset indices to summarise instead of a named split.
    Returns:
        a result row: dataset, autoencoder, split, n, psnr_mean, psnr_std, ssim_mean, ssim_std.
    """
    import numpy as np

    from ..errors import UserError

    fid = cache.fidelity()
    if indices is not None:
        sel = np.asarray(indices, dtype=np.int64)
    elif split == "all":
        sel = np.arange(len(ds))
    else:
        if ds.official_split is None:
            raise UserError(f"dataset '{ds.name}' has no own '{split}' split", "use --split all")
        sel = np.flatnonzero(np.asarray(ds.official_split) == split)
        if len(sel) == 0:
            raise UserError(f"dataset '{ds.name}' has no images in its '{split}' split",
                            "use --split all or another split")
    p, s = fid["psnr"][sel], fid["ssim"][sel]
    return {"kind": "fidelity", "dataset": ds.name, "autoencoder": cache.manifest["autoencoder"]["name"],
            "split": split, "n": int(len(sel)),
            "psnr_mean": float(np.mean(p)), "psnr_std": float(np.std(p, ddof=1)) if len(p) > 1 else 0.0,
            "ssim_mean": float(np.mean(s)), "ssim_std": float(np.std(s, ddof=1)) if len(s) > 1 else 0.0}
