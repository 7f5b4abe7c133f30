"""Validation of the probe's scores against full studies: per score, Spearman's rho with the measured RS - LS gap
and with LS bACC across autoencoder x dataset pairs, a bootstrap CI over pairs, and the probe's compute as a
fraction of the pair's study compute. Input: the rows of one or more studies that ran with ``probe: true``."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..errors import UserError
from ..study import stats as S


def pair_table(rows: pd.DataFrame, keep_unmeasured: bool = False) -> pd.DataFrame:
    """One row per dataset x autoencoder with probe rows: every ``probe_*`` score (mean over the pair's probe rows:
    one, or one per fold for an autoencoder trained per fold), ``probe_seconds`` (their sum: the probe's whole cost
    on the study's cache), the measured ``gap`` (RS - LS, mean over paired folds) with ``recon`` / ``latent`` bACC,
    ``study_seconds`` (the pair's plain RS and LS cells, its dataset's plain image cells, and its cache and
    autoencoder-training tasks: what a study of this pair costs; the cache build is counted on the study's side
    only, as the probe reads the study's cache) and ``converged`` (every one of those cells converged).
    ``keep_unmeasured``: keep pairs without RS / LS cells (gap NaN), as the report does.

    Raises:
        UserError: no probe rows.
    """
    if "kind" not in rows or not (rows["kind"] == "probe").any():
        raise UserError("these rows hold no probe rows", "run the study with `probe: true` (docs/probe.md)")
    pr = rows[rows["kind"] == "probe"]
    score_cols = [c for c in pr.columns if c.startswith("probe_") and pd.api.types.is_numeric_dtype(pr[c])
                  and not c.startswith("probe_seconds") and c != "probe_images"]
    grouped = pr.groupby(["dataset", "autoencoder"], sort=True)
    sec_cols = [c for c in pr.columns if c.startswith("probe_seconds") and pd.api.types.is_numeric_dtype(pr[c])]
    out = grouped[score_cols].mean().join(grouped[sec_cols].sum(min_count=1)).reset_index()
    gaps = S.gap_table(rows)
    cols = ["dataset", "autoencoder", "gap", "recon", "latent"]
    gaps = gaps[cols] if len(gaps) else pd.DataFrame(columns=cols)
    out = out.merge(gaps, on=["dataset", "autoencoder"], how="left" if keep_unmeasured else "inner")
    res = S.results_only(rows)
    res = res[res["variant"] == "plain"] if "variant" in res else res
    conv = (res["converged"].map(S.flag).map(lambda v: v is True) if "converged" in res
            else pd.Series(False, index=res.index))  # unknown convergence is not counted as converged
    secs, ok = [], []
    for r in out.itertuples():
        cells = res[(res["dataset"] == r.dataset) & ((res["autoencoder"] == r.autoencoder) | (res["space"] == "image"))]
        other = rows[(rows["dataset"] == r.dataset) & (rows["autoencoder"] == r.autoencoder)
                     & rows["kind"].isin(["fidelity", "autoencoder"])]
        secs.append(float(cells.get("train_seconds", pd.Series(dtype=float)).sum())
                    + float(other.get("task_seconds", pd.Series(dtype=float)).sum()))
        ok.append(bool(len(cells)) and bool(conv.loc[cells.index].all()))
    out["study_seconds"], out["converged"] = secs, ok
    return out


def spearman_ci(x: np.ndarray, y: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Spearman's rho of paired ``x``, ``y`` and a 95 % percentile bootstrap CI over pairs (resamples whose
    rho is undefined — a constant resample — are dropped)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if np.ptp(x[i]) > 0 and np.ptp(y[i]) > 0:
            boots.append(spearmanr(x[i], y[i]).statistic)
    lo, hi = (np.percentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan))
    return rho, float(lo), float(hi)


def score_family(score: str) -> str:
    """The timed family a score belongs to (``probe_seconds_<family>`` in a study row): ``linear_gap`` -> linear,
    ``equiv_hflip`` / ``unrelated`` -> equivariance, ``hf_energy`` -> spectral, ``sensitivity`` -> sensitivity."""
    if score.startswith(("linear_", "knn_")):
        return score.split("_")[0]
    if score.startswith("equiv_") or score == "unrelated":
        return "equivariance"
    return {"hf_energy": "spectral"}.get(score, score)


def validation_table(pairs: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """Per probe score: Spearman rho (and CI) with the gap and with LS bACC over ``pairs`` (:func:`pair_table`),
    ``compute_fraction``: the seconds of the score's own family (:func:`score_family`; all of the probe when the
    rows do not time families) over the pair's study seconds, median over pairs; ``probe_fraction``: the same for
    the whole probe."""
    pairs = pairs.dropna(subset=["gap"])
    if len(pairs) < 3:
        raise UserError(f"{len(pairs)} pair(s) with a measured gap and probe scores; a rank correlation needs at least 3",
                        "run more autoencoder x dataset pairs with `probe: true`, or include unconverged pairs")
    scores = [c for c in pairs.columns if c.startswith("probe_") and not c.startswith("probe_seconds")]
    frac = float(np.median(pairs["probe_seconds"] / pairs["study_seconds"]))
    out = []
    for c in scores:
        p = pairs.dropna(subset=[c])  # studies may differ in the scores they ran
        if len(p) < 3 or p[c].nunique() < 2:
            continue
        rg = spearman_ci(p[c], p["gap"], n_boot)
        rl = spearman_ci(p[c], p["latent"], n_boot)
        own = f"probe_seconds_{score_family(c.removeprefix('probe_'))}"
        own_frac = float(np.median(p[own] / p["study_seconds"])) if own in p and p[own].notna().all() else frac
        out.append({"score": c.removeprefix("probe_"), "n_pairs": len(p), "rho_gap": rg[0], "rho_gap_lo": rg[1],
                    "rho_gap_hi": rg[2], "rho_latent": rl[0], "rho_latent_lo": rl[1], "rho_latent_hi": rl[2],
                    "compute_fraction": own_frac, "probe_fraction": frac})
    return pd.DataFrame(out).sort_values("rho_gap", key=lambda s: -s.abs()).reset_index(drop=True)
