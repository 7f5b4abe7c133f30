"""The paper's tables from result rows (learnability-gap paper, Tables 1, 3 and 4): pure
DataFrame -> DataFrame functions producing display strings (mean ± std, significance marks).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..study import stats as S

SPACE_LABEL = {"image": "IS", "recon": "RS", "latent": "LS"}
MARK_LEGEND = ("LS bACC marked * / ** / *** when LS differs from RS of the same autoencoder (paired t-test across "
               "folds and seeds, Holm-adjusted p < .05 / .01 / .001); RS bACC marked † when RS differs from IS "
               "(Holm-adjusted p < .05).")


def pm(mean: float, std: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def stars(p: float) -> str:
    if p is None or math.isnan(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def main_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std of bACC, AUC, MCC per dataset x autoencoder x space (plain variant), with marks."""
    summ = S.summary_table(rows)
    summ = summ[summ["variant"] == "plain"]
    tests = S.pair_tests(rows) if len(summ) else pd.DataFrame(columns=["dataset", "autoencoder", "comparison", "p_holm"])
    p = {(r.dataset, r.autoencoder, r.comparison): r.p_holm for r in tests.itertuples()}
    aes = sorted(set(summ.loc[summ["space"] != "image", "autoencoder"]))
    out = []
    for ds in sorted(summ["dataset"].unique()):
        sub = summ[summ["dataset"] == ds]
        img = sub[sub["space"] == "image"]
        if len(img):
            out.append(_main_row(ds, "–", "IS", img.iloc[0], ""))
        for ae in aes:
            for space in ("recon", "latent"):
                r = sub[(sub["autoencoder"] == ae) & (sub["space"] == space)]
                if not len(r):
                    continue
                if space == "latent":
                    mark = stars(p.get((ds, ae, "recon-latent"), math.nan))
                else:
                    mark = "†" if p.get((ds, ae, "image-recon"), math.nan) < 0.05 else ""
                out.append(_main_row(ds, ae, SPACE_LABEL[space], r.iloc[0], mark))
    return pd.DataFrame(out, columns=["dataset", "autoencoder", "space", "bACC", "AUC", "MCC", "n"])


def _main_row(ds, ae, space, r, mark) -> list:
    def cell(m):
        return pm(r.get(f"{m}_mean", math.nan), r.get(f"{m}_std", math.nan))
    return [ds, ae, space, cell("bacc") + mark, cell("auc"), cell("mcc"), int(r["n"])]


def tests_table(rows: pd.DataFrame, metric: str = "bacc") -> pd.DataFrame:
    """Per-pair paired t-tests for display: difference, 95% CI, d_z, p, Holm p, note."""
    t = S.pair_tests(rows, metric)
    return pd.DataFrame({
        "dataset": t["dataset"], "autoencoder": t["autoencoder"], "comparison": t["comparison"], "n": t["n"],
        "mean diff": t["mean_diff"].map(lambda v: f"{v:+.3f}"),
        "95% CI": [f"[{a:+.3f}, {b:+.3f}]" if not math.isnan(a) else "–" for a, b in zip(t["ci_low"], t["ci_high"])],
        "d_z": t["d_z"].map(lambda v: "–" if math.isnan(v) else f"{v:.2f}"),
        "p": t["p"].map(fmt_p), "p (Holm)": t["p_holm"].map(fmt_p), "note": t["note"],
    })


def across_table(rows: pd.DataFrame, metric: str = "bacc") -> pd.DataFrame:
    t = S.across_pairs_tests(rows, metric)
    return pd.DataFrame({
        "comparison": t["comparison"], "AE x dataset pairs": t["pairs"],
        "mean diff": t["mean_diff"].map(lambda v: "–" if math.isnan(v) else f"{v:+.3f}"),
        "W": t["statistic"].map(lambda v: "–" if math.isnan(v) else f"{v:g}"),
        "rank-biserial r": t["rank_biserial"].map(lambda v: "–" if math.isnan(v) else f"{v:+.2f}"),
        "p": t["p"].map(fmt_p), "p (Holm)": t["p_holm"].map(fmt_p), "note": t["note"],
    })


def fidelity_display(rows: pd.DataFrame) -> pd.DataFrame:
    f = S.fidelity_table(rows)
    return pd.DataFrame({
        "dataset": f["dataset"], "autoencoder": f["autoencoder"],
        "PSNR (dB)": [pm(m, s, 2) for m, s in zip(f["psnr_mean"], f["psnr_std"])],
        "SSIM": [pm(m, s, 3) for m, s in zip(f["ssim_mean"], f["ssim_std"])],
        "images": f["n_images"].map(lambda v: "–" if pd.isna(v) else str(int(v))) if "n_images" in f else "–",
    })


def ablation_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Latent-space variants (plain, noise-conditioned, distilled, tuned) next to the RS reference."""
    summ = S.summary_table(rows)
    lat = summ[(summ["space"] == "latent")]
    if lat["variant"].nunique() < 2:
        return pd.DataFrame()
    out = []
    for r in summ[(summ["space"] == "recon") & (summ["variant"] == "plain")].itertuples():
        if r.autoencoder in set(lat["autoencoder"]):
            out.append([r.dataset, r.autoencoder, "RS (reference)", pm(r.bacc_mean, r.bacc_std),
                        pm(getattr(r, "auc_mean", math.nan), getattr(r, "auc_std", math.nan)),
                        pm(getattr(r, "mcc_mean", math.nan), getattr(r, "mcc_std", math.nan)), r.n])
    for r in lat.itertuples():
        out.append([r.dataset, r.autoencoder, f"LS {r.variant}", pm(r.bacc_mean, r.bacc_std),
                    pm(getattr(r, "auc_mean", math.nan), getattr(r, "auc_std", math.nan)),
                    pm(getattr(r, "mcc_mean", math.nan), getattr(r, "mcc_std", math.nan)), r.n])
    df = pd.DataFrame(out, columns=["dataset", "autoencoder", "classifier", "bACC", "AUC", "MCC", "n"])
    return df.sort_values(["dataset", "autoencoder", "classifier"], kind="stable").reset_index(drop=True)


def recall_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean per-class recall over folds and seeds per dataset x autoencoder x space x variant."""
    res = S.results_only(rows)
    if "recall_per_class" not in res:
        return pd.DataFrame()
    res = res[res["recall_per_class"].map(lambda v: isinstance(v, (list, tuple, np.ndarray)) and len(v) > 0)]
    out = []
    for (ds, ae, sp, var), g in res.groupby(["dataset", "autoencoder", "space", "variant"], sort=True):
        lengths = {len(v) for v in g["recall_per_class"]}
        if len(lengths) != 1:
            continue
        mean = np.mean(np.stack([np.asarray(v, dtype=float) for v in g["recall_per_class"]]), axis=0)
        out.append(dict(dataset=ds, autoencoder=ae, space=SPACE_LABEL.get(sp, sp), variant=var,
                        **{f"class {i}": f"{m:.2f}" for i, m in enumerate(mean)}))
    return pd.DataFrame(out).fillna("")


def to_markdown(df: pd.DataFrame) -> str:
    if df is None or not len(df):
        return "_(no rows)_\n"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"
