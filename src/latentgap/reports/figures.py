"""The report's figures as PNG bytes (matplotlib, Agg): PSNR against the learnability gap for every
autoencoder x dataset pair (the paper's Fig. 2), originals / reconstructions / |difference| (Fig. 3),
and accuracy against noise level for noise-conditioned latent classifiers.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MARKERS = "osD^v<>pP*Xh"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def psnr_vs_gap(gaps: pd.DataFrame) -> bytes | None:
    """Scatter of mean PSNR (x) against the gap RS - LS in bACC (y); colour = autoencoder, marker = dataset.

    Args:
        gaps: ``stats.gap_table`` output with columns dataset, autoencoder, gap, psnr_mean.
    """
    if "psnr_mean" not in gaps or gaps["psnr_mean"].notna().sum() == 0:
        return None
    g = gaps.dropna(subset=["psnr_mean", "gap"])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    aes, dss = sorted(g["autoencoder"].unique()), sorted(g["dataset"].unique())
    colours = plt.get_cmap("tab10")
    for r in g.itertuples():
        ax.scatter(r.psnr_mean, 100 * r.gap, color=colours(aes.index(r.autoencoder) % 10),
                   marker=MARKERS[dss.index(r.dataset) % len(MARKERS)], s=60, edgecolor="k", linewidth=0.5)
    for i, ae in enumerate(aes):
        ax.scatter([], [], color=colours(i % 10), label=ae)
    for j, ds in enumerate(dss):
        ax.scatter([], [], color="grey", marker=MARKERS[j % len(MARKERS)], label=ds)
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("reconstruction PSNR (dB, mean over images)")
    ax.set_ylabel("learnability gap RS − LS (bACC points)")
    ax.set_title("Fidelity vs. learnability gap")
    ax.legend(fontsize=7, loc="best")
    return _png(fig)


def examples_grid(original: np.ndarray, recon: np.ndarray, title: str, gain: float = 4.0) -> bytes:
    """Three rows: originals, reconstructions, |difference| x ``gain`` (clipped), one column per image.

    Args:
        original, recon: uint8 (B, H, W, C), C in {1, 3}.
    """
    x, y = original.astype(np.float32) / 255, recon.astype(np.float32) / 255
    if x.shape[-1] != y.shape[-1]:  # grey data reconstructed by an RGB autoencoder: compare in grey
        x, y = x.mean(-1, keepdims=True), y.mean(-1, keepdims=True)
    d = np.clip(np.abs(x - y).mean(-1) * gain, 0, 1)
    b = len(x)
    fig, axes = plt.subplots(3, b, figsize=(1.4 * b, 4.4), squeeze=False)
    for i in range(b):
        for row, img, cmap in ((0, x[i], "gray"), (1, y[i], "gray"), (2, d[i], "magma")):
            ax = axes[row, i]
            ax.imshow(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img, cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
    for row, name in enumerate(("original", "reconstruction", f"|diff| ×{gain:g}")):
        axes[row, 0].set_ylabel(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _png(fig)


def noise_curves(curves: pd.DataFrame) -> bytes | None:
    """Accuracy per noise-level quartile (1 = least noise) for noise-conditioned classifiers.

    Args:
        curves: columns label, quartile (1..4), value (mean over folds), metric.
    """
    if not len(curves):
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for label, g in curves.groupby("label", sort=True):
        g = g.sort_values("quartile")
        ax.plot(g["quartile"], g["value"], marker="o", label=label)
    ax.set_xticks(sorted(curves["quartile"].unique()))
    ax.set_xlabel("noise-level quartile (1 = least noise)")
    ax.set_ylabel(curves["metric"].iloc[0])
    ax.set_title("Noise-conditioned latent classifiers")
    ax.legend(fontsize=7)
    return _png(fig)
