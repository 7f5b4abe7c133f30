"""The report's figures as PNG bytes (matplotlib, Agg): mean bACC per space with 95 % CIs, validation
learning curves per space, PSNR against the learnability gap for every autoencoder x dataset pair (the
paper's Fig. 2), originals / reconstructions / |difference| (Fig. 3), and accuracy against noise level for
noise-conditioned latent classifiers.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

MARKERS = "osD^v<>pP*Xh"
SPACES = (("image", "IS"), ("recon", "RS"), ("latent", "LS"))
SPACE_COLOURS = {"image": "tab:blue", "recon": "tab:green", "latent": "tab:orange"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def space_bars(means: pd.DataFrame, metric: str = "bACC") -> bytes | None:
    """Grouped bars: mean per space (IS, RS, LS) for every dataset x autoencoder, with CI error bars;
    hatched bars contain a cell that did not converge.

    Args:
        means: ``stats.space_means`` output (dataset, autoencoder, space, mean, ci_low, ci_high, unconverged).
    """
    if not len(means):
        return None
    groups = sorted({(r.dataset, r.autoencoder) for r in means.itertuples()})
    by = {(r.dataset, r.autoencoder, r.space): r for r in means.itertuples()}
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) + 1.5), 3.8))
    width = 0.8 / len(SPACES)
    hatched = False
    for j, (space, label) in enumerate(SPACES):
        for i, key in enumerate(groups):
            r = by.get((*key, space))
            if r is None:
                continue
            x = i + (j - (len(SPACES) - 1) / 2) * width
            bad = bool(r.unconverged)
            hatched |= bad
            ax.bar(x, r.mean, width, color=SPACE_COLOURS[space], edgecolor="k", linewidth=0.5,
                   hatch="//" if bad else None, label=label if i == 0 else None)
            if not np.isnan(r.ci_low):
                ax.errorbar(x, r.mean, yerr=[[r.mean - r.ci_low], [r.ci_high - r.mean]], color="k", capsize=3, lw=1)
    handles, _ = ax.get_legend_handles_labels()
    if hatched:
        handles.append(Patch(facecolor="white", edgecolor="k", hatch="//", label="has unconverged cells"))
    ax.set_xticks(range(len(groups)), [f"{ds}\n{ae}" for ds, ae in groups], fontsize=8)
    ax.set_ylabel(f"{metric} (mean over folds, 95 % CI)")
    ax.set_title(f"{metric} per space")
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def learning_curves(curves: pd.DataFrame, title: str) -> bytes | None:
    """Validation bACC against epoch, one panel per autoencoder (rows) x space (columns), one line per cell;
    cells that did not converge are dashed and end in a cross.

    Args:
        curves: long table with columns autoencoder, space, fold, seed, epoch, val_bacc, converged
            (True / False / None).
        title: figure title (the dataset).
    """
    if not len(curves):
        return None
    aes = sorted(curves["autoencoder"].unique())
    spaces = [(sp, lab) for sp, lab in SPACES if (curves["space"] == sp).any()]
    fig, axes = plt.subplots(len(aes), len(spaces), figsize=(3.2 * len(spaces), 2.4 * len(aes) + 0.6),
                             squeeze=False, sharey=True)
    for i, ae in enumerate(aes):
        for j, (sp, lab) in enumerate(spaces):
            ax = axes[i, j]
            sub = curves[(curves["autoencoder"] == ae) & (curves["space"] == sp)]
            for _, g in sub.groupby(["fold", "seed"], sort=True):
                g = g.sort_values("epoch")
                conv = g["converged"].iloc[0]
                conv = None if conv is None or pd.isna(conv) else bool(conv)  # numpy bools from a bool column
                if conv is False:
                    ax.plot(g["epoch"], g["val_bacc"], color="tab:red", ls="--", lw=1)
                    ax.plot(g["epoch"].iloc[-1], g["val_bacc"].iloc[-1], "x", color="tab:red", ms=7, mew=2)
                else:
                    ax.plot(g["epoch"], g["val_bacc"], color=SPACE_COLOURS[sp] if conv else "grey", lw=1)
            ax.set_title(f"{lab}" if sp == "image" else f"{lab} · {ae}", fontsize=8)
            if i == len(aes) - 1:
                ax.set_xlabel("epoch", fontsize=8)
            if j == 0:
                ax.set_ylabel("validation bACC", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles = [plt.Line2D([], [], color="k", lw=1, label="converged (colour of the space)"),
               plt.Line2D([], [], color="grey", lw=1, label="convergence not recorded"),
               plt.Line2D([], [], color="tab:red", ls="--", marker="x", lw=1, label="did not converge")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Validation learning curves: {title}", fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _png(fig)


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


def probe_vs_gap(gaps: pd.DataFrame, scores: tuple[str, ...]) -> bytes | None:
    """One panel per probe score: the score (x) against the measured gap RS - LS (y), one point per autoencoder x
    dataset pair, Spearman's rho (SciPy) of the pairs in the panel title. None with fewer than 2 pairs."""
    from scipy.stats import spearmanr

    g = gaps.dropna(subset=["gap"])
    cols = [s for s in scores if f"probe_{s}" in g]
    if len(g) < 2 or not cols:
        return None
    n = len(cols)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.8), squeeze=False)
    for ax, s in zip(axes[0], cols):
        x, y = g[f"probe_{s}"].to_numpy(float), 100 * g["gap"].to_numpy(float)
        ax.scatter(x, y, s=30, edgecolor="k", linewidth=0.5)
        rho = spearmanr(x, y).statistic if len(g) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0 else float("nan")
        ax.set_title(f"{s}\nρ = {rho:.2f} (n = {len(g)})" if np.isfinite(rho) else f"{s}\n(n = {len(g)})", fontsize=8)
        ax.axhline(0, color="grey", lw=0.8, ls="--")
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("gap RS − LS (bACC points)", fontsize=8)
    fig.tight_layout()
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
