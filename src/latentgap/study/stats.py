"""Paired statistics over result rows: pure DataFrame -> DataFrame functions.

Follows the analysis of the learnability-gap paper (papers/learnability-gap-paper.txt, Sec. 4):
per autoencoder x dataset, paired t-tests across folds for latent space (LS) vs reconstruction
space (RS) and RS vs image space (IS); across all autoencoder x dataset pairs, Wilcoxon
signed-rank tests of the per-pair means. Effect sizes are Cohen's d_z (paired t) and the
matched-pairs rank-biserial correlation (Wilcoxon); confidence intervals are t-based intervals of the
mean difference; p-values are Holm-corrected within each returned table (one family per table).

Conventions: differences are always ``a - b`` where the comparison is named ``"a-b"`` (``recon-latent``
is the learnability gap, positive when reconstructions are easier to learn than latents).
Image-space rows do not depend on an autoencoder: rows with ``autoencoder == IMAGE_AE`` (or empty) are
paired with every autoencoder of the same dataset. Degenerate inputs (n < 2, all differences zero)
give NaN and a ``note``, never an exception.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from .spec import IMAGE_AE  # autoencoder value of image-space rows (they need no autoencoder)

KEYS = ["dataset", "autoencoder", "space", "variant", "fold", "seed"]
# (name, space a, space b): the difference is a - b
COMPARISONS = [("recon-latent", "recon", "latent"), ("image-recon", "image", "recon")]


# --------------------------------------------------------------------------- single tests

def paired_t(a, b, confidence: float = 0.95) -> dict:
    """Paired t-test of ``a - b`` with Cohen's d_z and a t-based CI of the mean difference.

    Args:
        a, b: 1-D sequences of equal length n (paired observations, e.g. bACC per fold x seed).
        confidence: CI level in (0, 1).

    Returns dict: n, mean_diff, sd_diff, t, df, p, d_z, ci_low, ci_high, note.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = int(d.size)
    out = dict(n=n, mean_diff=float(d.mean()) if n else math.nan, sd_diff=math.nan, t=math.nan,
               df=n - 1 if n else 0, p=math.nan, d_z=math.nan, ci_low=math.nan, ci_high=math.nan, note="")
    if n < 2:
        out["note"] = f"n={n} < 2 pairs: no test"
        return out
    sd = float(d.std(ddof=1))
    out["sd_diff"] = sd
    if sd == 0.0:
        # t is undefined (0/0) or infinite; SciPy returns NaN / inf with a warning. Report it plainly.
        out["note"] = "all differences zero" if out["mean_diff"] == 0 else "constant nonzero difference: t infinite"
        out["ci_low"] = out["ci_high"] = out["mean_diff"]
        return out
    se = sd / math.sqrt(n)
    t = out["mean_diff"] / se
    out["t"] = t
    out["p"] = float(2 * stats.t.sf(abs(t), n - 1))
    out["d_z"] = out["mean_diff"] / sd
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    out["ci_low"], out["ci_high"] = out["mean_diff"] - half, out["mean_diff"] + half
    return out


def wilcoxon_signed_rank(a, b) -> dict:
    """Two-sided Wilcoxon signed-rank test of ``a - b`` (zeros dropped, SciPy's default) with the
    matched-pairs rank-biserial correlation r = (W+ - W-) / (W+ + W-) (Kerby 2014).

    Args:
        a, b: 1-D sequences of equal length (e.g. per autoencoder x dataset mean bACC).

    Returns dict: n (nonzero pairs), statistic (min(W+, W-), as SciPy), w_plus, w_minus, p,
    rank_biserial, median_diff, note.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    nz = d[d != 0]
    out = dict(n=int(nz.size), statistic=math.nan, w_plus=math.nan, w_minus=math.nan, p=math.nan,
               rank_biserial=math.nan, median_diff=float(np.median(d)) if d.size else math.nan, note="")
    if d.size == 0:
        out["note"] = "no pairs"
        return out
    if nz.size == 0:
        out["note"] = "all differences zero"
        return out
    ranks = stats.rankdata(np.abs(nz))
    w_plus, w_minus = float(ranks[nz > 0].sum()), float(ranks[nz < 0].sum())
    out.update(w_plus=w_plus, w_minus=w_minus, rank_biserial=(w_plus - w_minus) / (w_plus + w_minus))
    if nz.size < 2:
        out["note"] = f"n={nz.size} nonzero pair: no test"
        return out
    res = stats.wilcoxon(d)  # two-sided; exact for small n without ties, normal approximation otherwise
    out["statistic"], out["p"] = float(res.statistic), float(res.pvalue)
    if nz.size < 6:
        out["note"] = f"n={nz.size}: smallest attainable two-sided p is {2 / 2 ** nz.size:.3g}"
    return out


def holm(pvalues) -> np.ndarray:
    """Holm step-down adjusted p-values (Holm 1979); NaNs are ignored and stay NaN.

    Sorted p_(1) <= ... <= p_(m): adj_(i) = max_{j<=i} min(1, (m - j + 1) p_(j)).
    """
    p = np.asarray(pvalues, dtype=float)
    adj = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return adj
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj[order] = np.maximum.accumulate(scaled)
    return adj


# --------------------------------------------------------------------------- tables

def results_only(rows: pd.DataFrame) -> pd.DataFrame:
    """Classifier result rows (drops fidelity rows and other kinds)."""
    if "kind" in rows:
        rows = rows[rows["kind"].fillna("result") == "result"]
    return rows


def _with_image_broadcast(rows: pd.DataFrame) -> pd.DataFrame:
    """Copy image-space rows to every autoencoder of their dataset so that pairing is a plain merge."""
    rows = rows.copy()
    rows["autoencoder"] = rows["autoencoder"].fillna(IMAGE_AE).replace("", IMAGE_AE)
    img = rows[rows["space"] == "image"]
    other = rows[rows["space"] != "image"]
    aes = other[["dataset", "autoencoder"]].drop_duplicates()
    img = img.drop(columns="autoencoder").merge(aes, on="dataset")
    return pd.concat([other, img], ignore_index=True)


def paired_values(rows: pd.DataFrame, space_a: str, space_b: str, metric: str = "bacc",
                  variant_a: str = "plain", variant_b: str = "plain") -> pd.DataFrame:
    """Pairs of ``metric`` for two spaces matched on dataset, autoencoder, fold and seed.

    Returns columns dataset, autoencoder, fold, seed, a, b.
    """
    on = ["dataset", "autoencoder", "fold", "seed"]
    rows = results_only(rows)
    if not len(rows) or any(c not in rows for c in on + ["space", "variant", metric]):
        return pd.DataFrame(columns=on + ["a", "b"])
    rows = _with_image_broadcast(rows)
    a = rows[(rows["space"] == space_a) & (rows["variant"] == variant_a)][on + [metric]]
    b = rows[(rows["space"] == space_b) & (rows["variant"] == variant_b)][on + [metric]]
    m = a.merge(b, on=on, suffixes=("_a", "_b")).rename(columns={f"{metric}_a": "a", f"{metric}_b": "b"})
    return m.sort_values(on).reset_index(drop=True)


def pair_tests(rows: pd.DataFrame, metric: str = "bacc", comparisons=COMPARISONS,
               confidence: float = 0.95) -> pd.DataFrame:
    """Per dataset x autoencoder paired t-tests across folds (and seeds), Holm-adjusted over the table.

    Returns one row per dataset x autoencoder x comparison with the fields of :func:`paired_t`
    plus comparison, metric, mean_a, mean_b, p_holm.
    """
    out = []
    for name, sa, sb in comparisons:
        pv = paired_values(rows, sa, sb, metric)
        for (ds, ae), g in pv.groupby(["dataset", "autoencoder"], sort=True):
            r = paired_t(g["a"], g["b"], confidence)
            out.append(dict(dataset=ds, autoencoder=ae, comparison=name, metric=metric,
                            mean_a=float(g["a"].mean()), mean_b=float(g["b"].mean()), **r))
    cols = ["dataset", "autoencoder", "comparison", "metric", "n", "mean_a", "mean_b", "mean_diff", "sd_diff",
            "t", "df", "p", "p_holm", "d_z", "ci_low", "ci_high", "note"]
    df = pd.DataFrame(out, columns=[c for c in cols if c != "p_holm"])
    df["p_holm"] = holm(df["p"]) if len(df) else []
    return df[cols]


def pair_means(rows: pd.DataFrame, space_a: str, space_b: str, metric: str = "bacc") -> pd.DataFrame:
    """Mean of ``metric`` over folds and seeds per dataset x autoencoder for two spaces (paired cells only)."""
    pv = paired_values(rows, space_a, space_b, metric)
    return pv.groupby(["dataset", "autoencoder"], as_index=False)[["a", "b"]].mean()


def across_pairs_tests(rows: pd.DataFrame, metric: str = "bacc", comparisons=COMPARISONS) -> pd.DataFrame:
    """Wilcoxon signed-rank tests across all autoencoder x dataset pairs of the per-pair means
    (the paper's "Wilcoxon across all 20 AE x dataset pairs"), Holm-adjusted over the table."""
    out = []
    for name, sa, sb in comparisons:
        pm = pair_means(rows, sa, sb, metric)
        r = wilcoxon_signed_rank(pm["a"], pm["b"])
        out.append(dict(comparison=name, metric=metric, pairs=len(pm),
                        mean_diff=float((pm["a"] - pm["b"]).mean()) if len(pm) else math.nan, **r))
    df = pd.DataFrame(out)
    df["p_holm"] = holm(df["p"])
    return df


def gap_table(rows: pd.DataFrame, metric: str = "bacc") -> pd.DataFrame:
    """Per dataset x autoencoder: the gap RS - LS (mean over paired folds/seeds) joined with the mean
    reconstruction fidelity from ``kind == "fidelity"`` rows (for the PSNR-vs-gap figure)."""
    pm = pair_means(rows, "recon", "latent", metric).rename(columns={"a": "recon", "b": "latent"})
    pm["gap"] = pm["recon"] - pm["latent"]
    fid = fidelity_table(rows)
    if len(fid):
        pm = pm.merge(fid[["dataset", "autoencoder", "psnr_mean", "ssim_mean"]], on=["dataset", "autoencoder"],
                      how="left")
    return pm


def fidelity_table(rows: pd.DataFrame) -> pd.DataFrame:
    """PSNR / SSIM mean and std per dataset x autoencoder from fidelity rows (one per pair)."""
    cols = ["dataset", "autoencoder", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "n_images"]
    if "kind" not in rows:
        return pd.DataFrame(columns=cols)
    fid = rows[rows["kind"] == "fidelity"]
    if "n_images" not in fid and "n" in fid:
        fid = fid.rename(columns={"n": "n_images"})
    return fid[[c for c in cols if c in fid]].sort_values(["dataset", "autoencoder"]).reset_index(drop=True)


def summary_table(rows: pd.DataFrame, metrics=("bacc", "auc", "mcc")) -> pd.DataFrame:
    """Mean, std and count of each metric per dataset x autoencoder x space x variant."""
    rows = results_only(rows).copy()
    if not len(rows) or "space" not in rows:
        return pd.DataFrame(columns=["dataset", "autoencoder", "space", "variant", "n"])
    rows["autoencoder"] = rows["autoencoder"].fillna(IMAGE_AE).replace("", IMAGE_AE)
    metrics = [m for m in metrics if m in rows]
    g = rows.groupby(["dataset", "autoencoder", "space", "variant"], sort=True)[metrics]
    mean, std, n = g.mean(), g.std(ddof=1), g.size().rename("n")
    out = mean.add_suffix("_mean").join(std.add_suffix("_std")).join(n)
    return out.reset_index()
