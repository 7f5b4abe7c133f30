"""Paired statistics over result rows: pure DataFrame -> DataFrame functions.

Per autoencoder x dataset, the spaces are compared on the cross-validation folds they share: latent
space (LS) vs reconstruction space (RS), and RS vs image space (IS). The unit of pairing is the *fold*
(of one fold assignment, i.e. one ``split_seed``): training seeds that share a fold are averaged first,
because two seeds tested on the same test part are not independent observations. Repeats with a new
split seed count as further pairs. With J paired differences d:

* the default test is the Nadeau-Bengio corrected resampled t-test (Nadeau & Bengio 2003, "Inference for
  the generalization error"; Bouckaert & Frank 2004): t = mean(d) / sqrt((1/J + n_test/n_train) s^2),
  s^2 the sample variance of d, J - 1 degrees of freedom. Training parts of different folds overlap, so
  the plain paired t-test (s^2 / J) understates the variance and is too liberal. The CI of the mean
  difference uses the same corrected standard error;
* the plain paired t-test and the Wilcoxon signed-rank test of the same J differences are extra columns;
* "RS matches IS" is an equivalence question, answered with two one-sided corrected t-tests (TOST)
  against +-margin, not with a non-significant difference test;
* p-values are Holm-corrected within each returned table (one family per table).

Across all autoencoder x dataset pairs, a Wilcoxon signed-rank test of the per-pair means (the paper's
"Wilcoxon across all 20 AE x dataset pairs") with the matched-pairs rank-biserial correlation.

Conventions: differences are always ``a - b`` where the comparison is named ``"a-b"`` (``recon-latent``
is the learnability gap, positive when reconstructions are easier to learn than latents).
Image-space rows do not depend on an autoencoder: rows with ``autoencoder == IMAGE_AE`` (or empty) are
paired with every autoencoder of the same dataset. Rows of one comparison must share their fold
assignment (``splits_digest``), ``image_size`` and ``views``; otherwise pairing is refused with a
``UserError``. Degenerate inputs (fewer than 2 pairs, all differences zero, unknown test/train ratio)
give NaN and a ``note``, never an exception.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import UserError
from .spec import IMAGE_AE, SPACES  # autoencoder value of image-space rows (they need no autoencoder)

KEYS = ["dataset", "autoencoder", "space", "variant", "fold", "seed"]
# (name, space a, space b): the difference is a - b
COMPARISONS = [("recon-latent", "recon", "latent"), ("image-recon", "image", "recon")]
# the architecture-matched control: the latent cell's own ConvNeXt on images / reconstructions (variant
# "matched", a patch stem to the latent grid) against the plain latent cell; (name, space a, space b, variant a,
# variant b)
# synthetic-data utility: each utility variant against the plain (real-trained) cell of its space, fold by fold
UTILITY_COMPARISONS = [(f"{v}-real ({sp})", sp, sp, v, "plain") for sp in ("image", "recon", "latent")
                       for v in ("augmented", "tstr")]
MATCHED_COMPARISONS = [("recon-latent (matched)", "recon", "latent", "matched", "plain"),
                       ("image-recon (matched)", "image", "recon", "matched", "matched")]
# one paired difference per fold of one fold assignment; seeds are averaged inside
PAIR_KEYS = ["dataset", "autoencoder", "split_seed", "fold"]
MARGIN = 0.02  # equivalence margin of TOST, in metric units (bACC 0.02 = 2 points)
ALPHA = 0.05
IDENTITY_VIEWS = ("identity",)  # encode-time views of a row without a ``views`` field
DEFAULT_SPLIT_SEED = 0  # rows without ``split_seed``: the default of study specs and ``latentgap train``


# --------------------------------------------------------------------------- single tests

def corrected_paired_t(a, b, test_train_ratio: float, confidence: float = 0.95) -> dict:
    """Nadeau-Bengio corrected resampled t-test of ``a - b`` and the CI of the mean difference.

    t = mean(d) / se with se = sqrt((1/J + test_train_ratio) * s^2), s^2 = var(d, ddof=1), df = J - 1,
    two-sided p; CI = mean(d) +- t_{df, (1 + confidence)/2} * se. ``test_train_ratio = 0`` is the plain
    paired t-test.

    Args:
        a, b: 1-D sequences of equal length J (one value per fold, seeds already averaged).
        test_train_ratio: n_test / n_train of the folds (1/(k-1) for k-fold CV without a validation part).
        confidence: CI level in (0, 1).

    Returns dict: n (= J), mean_diff, sd_diff, se, t, df, p, d_z, ci_low, ci_high, note.
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = int(d.size)
    out = dict(n=n, mean_diff=float(d.mean()) if n else math.nan, sd_diff=math.nan, se=math.nan, t=math.nan,
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
    out["d_z"] = out["mean_diff"] / sd
    if not test_train_ratio >= 0:  # NaN or negative
        out["note"] = "test/train size ratio unknown: no corrected test"
        return out
    se = math.sqrt((1.0 / n + test_train_ratio) * sd**2)
    t = out["mean_diff"] / se
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * se
    out.update(se=se, t=t, p=float(2 * stats.t.sf(abs(t), n - 1)),
               ci_low=out["mean_diff"] - half, ci_high=out["mean_diff"] + half)
    return out


def paired_t(a, b, confidence: float = 0.95) -> dict:
    """Plain paired t-test of ``a - b`` with Cohen's d_z and a t-based CI of the mean difference
    (:func:`corrected_paired_t` with test/train ratio 0; equals ``scipy.stats.ttest_rel``).

    Args:
        a, b: 1-D sequences of equal length n (paired observations).
        confidence: CI level in (0, 1).

    Returns dict: n, mean_diff, sd_diff, se, t, df, p, d_z, ci_low, ci_high, note.
    """
    return corrected_paired_t(a, b, 0.0, confidence)


def tost(a, b, margin: float = MARGIN, test_train_ratio: float = 0.0, alpha: float = ALPHA) -> dict:
    """Equivalence of ``a`` and ``b`` within +-margin: two one-sided (corrected) t-tests (Schuirmann 1987).

    With the standard error of :func:`corrected_paired_t`: t_lower = (mean(d) + margin) / se tests
    H0 mean <= -margin (p_lower = P(T >= t_lower)); t_upper = (mean(d) - margin) / se tests H0 mean >= margin
    (p_upper = P(T <= t_upper)); p_tost = max(p_lower, p_upper), df = J - 1. Equivalent when p_tost < alpha.

    Args:
        a, b: 1-D sequences of equal length J (one value per fold).
        margin: equivalence margin (> 0) in the metric's units.
        test_train_ratio: n_test / n_train (0 gives the uncorrected TOST).
        alpha: level of each one-sided test.

    Returns dict: n, mean_diff, margin, se, df, t_lower, t_upper, p_lower, p_upper, p_tost, equivalent,
    verdict ("equivalent" / "not shown equivalent"), note.
    """
    r = corrected_paired_t(a, b, test_train_ratio)
    out = dict(n=r["n"], mean_diff=r["mean_diff"], margin=margin, se=r["se"], df=r["df"], t_lower=math.nan,
               t_upper=math.nan, p_lower=math.nan, p_upper=math.nan, p_tost=math.nan, equivalent=False,
               verdict="not shown equivalent", note=r["note"])
    if not margin > 0:
        out["note"] = "margin must be > 0: no equivalence test"
        return out
    if math.isnan(r["se"]):
        return out
    t_lower = (r["mean_diff"] + margin) / r["se"]
    t_upper = (r["mean_diff"] - margin) / r["se"]
    p_lower, p_upper = float(stats.t.sf(t_lower, r["df"])), float(stats.t.cdf(t_upper, r["df"]))
    p = max(p_lower, p_upper)
    out.update(t_lower=t_lower, t_upper=t_upper, p_lower=p_lower, p_upper=p_upper, p_tost=p,
               equivalent=bool(p < alpha), verdict="equivalent" if p < alpha else "not shown equivalent")
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


# --------------------------------------------------------------------------- row fields

def flag(value) -> bool | None:
    """A yes/no row field (``converged``, ``ae_in_sample``) as True / False / None (missing = unknown).

    Accepts bools, 0/1 and the strings a CSV round trip gives ("True", "false", ...).
    """
    if value is None or isinstance(value, (list, dict)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str):
        s = value.strip().lower()
        return True if s in ("true", "1", "yes") else False if s in ("false", "0", "no") else None
    try:
        return None if math.isnan(value) else bool(value)
    except TypeError:
        return None


def _hashable(value):
    """A row field in a comparable form: lists (also as JSON text, after a CSV round trip) -> tuples,
    missing -> None."""
    if isinstance(value, str) and value[:1] == "[":
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_hashable(v) for v in value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _views(value):
    """Encode-time views a row trained on; a row without the field saw the identity view only."""
    v = _hashable(value)
    if v is None:
        return IDENTITY_VIEWS
    return (v,) if isinstance(v, str) else v


def _column(rows: pd.DataFrame, name: str, default=None) -> pd.Series:
    return rows[name] if name in rows else pd.Series([default] * len(rows), index=rows.index, dtype=object)


# --------------------------------------------------------------------------- pairing

def results_only(rows: pd.DataFrame) -> pd.DataFrame:
    """Classifier result rows (drops fidelity rows and other kinds)."""
    if "kind" in rows:
        rows = rows[rows["kind"].fillna("result") == "result"]
    return rows


def broadcast_image_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Copy image-space rows to every autoencoder of their dataset so that pairing is a plain merge
    (image rows of a dataset without autoencoder rows keep ``IMAGE_AE``; image rows that belong to one
    autoencoder, the architecture-matched control's, stay with it)."""
    rows = rows.copy()
    rows["autoencoder"] = rows["autoencoder"].fillna(IMAGE_AE).replace("", IMAGE_AE)
    shared = (rows["space"] == "image") & (rows["autoencoder"] == IMAGE_AE)
    img = rows[shared]
    other = rows[~shared]
    aes = other[["dataset", "autoencoder"]].drop_duplicates()
    alone = img[~img["dataset"].isin(aes["dataset"])]
    img = img.drop(columns="autoencoder").merge(aes, on="dataset")
    return pd.concat([other, img, alone], ignore_index=True)


def cells(rows: pd.DataFrame, space: str, variant: str = "plain", metric: str = "bacc") -> pd.DataFrame:
    """Result rows of one space and variant (image rows copied to every autoencoder of their dataset),
    one per trained cell, in the normalised form that pairing and convergence marks use.

    Returns columns dataset, autoencoder, split_seed (missing = 0), fold, seed, value (``metric``; rows
    without it dropped), ratio (n_test / n_train, NaN when unknown), k, converged (True / False / None),
    in_sample (``ae_in_sample``), splits_digest, image_size, views (hashable; missing views = identity).
    """
    cols = ["dataset", "autoencoder", "split_seed", "fold", "seed", "value", "ratio", "k", "converged",
            "in_sample", "splits_digest", "image_size", "views"]
    rows = results_only(rows)
    if not len(rows) or any(c not in rows for c in ["dataset", "autoencoder", "space", "variant", "fold", metric]):
        return pd.DataFrame(columns=cols)
    rows = broadcast_image_rows(rows)
    rows = rows[(rows["space"] == space) & (rows["variant"] == variant) & rows[metric].notna()]
    n_test = pd.to_numeric(_column(rows, "n_test"), errors="coerce")
    n_train = pd.to_numeric(_column(rows, "n_train"), errors="coerce")
    out = pd.DataFrame({
        "dataset": rows["dataset"], "autoencoder": rows["autoencoder"],
        "split_seed": pd.to_numeric(_column(rows, "split_seed"), errors="coerce").fillna(DEFAULT_SPLIT_SEED),
        "fold": rows["fold"], "seed": _column(rows, "seed", 0), "value": rows[metric].astype(float),
        "ratio": (n_test / n_train.where(n_train > 0)).astype(float),
        "k": pd.to_numeric(_column(rows, "k"), errors="coerce"),
        "converged": _column(rows, "converged").map(flag).astype(object),
        "in_sample": _column(rows, "ae_in_sample").map(lambda v: flag(v) is True).astype(bool),
        "splits_digest": _column(rows, "splits_digest").map(_hashable).astype(object),
        "image_size": _column(rows, "image_size").map(_hashable).astype(object),
        "views": _column(rows, "views").map(_views).astype(object),
    }, columns=cols)
    return out.reset_index(drop=True)


def _describe(values: pd.DataFrame, field: str) -> str:
    parts = []
    for sp, g in values.groupby("side", sort=False):
        vals = sorted({str(v) for v in g[field]})
        parts.append(f"{sp}: {', '.join(vals[:3])}{' ...' if len(vals) > 3 else ''}")
    return "; ".join(parts)


def check_pairable(a: pd.DataFrame, b: pd.DataFrame, name: str) -> None:
    """Refuse to pair cells of one comparison that were trained or tested on different data.

    Within a dataset x autoencoder, all cells of both sides must share ``image_size`` and ``views``, and
    within each split seed their ``splits_digest`` (missing digests and image sizes are not compared;
    missing views are the identity view).

    Args:
        a, b: :func:`cells` of the two sides.
        name: the comparison's name, for the message (e.g. ``"recon-latent"``).

    Raises:
        UserError naming the dataset, autoencoder and the differing field.
    """
    both = pd.concat([a.assign(side=name.split("-")[0]), b.assign(side=name.split("-")[-1])], ignore_index=True)
    for (ds, ae), g in both.groupby(["dataset", "autoencoder"], sort=True):
        groups = [("image_size", g), ("views", g)] + [("splits_digest", h) for _, h in g.groupby("split_seed")]
        for field, h in groups:
            known = h[h[field].notna()]
            if known[field].nunique() > 1:
                what = {"splits_digest": "fold assignments (splits.json)", "image_size": "image sizes",
                        "views": "encode-time views (augmentation)"}[field]
                raise UserError(
                    f"{name}: rows of dataset '{ds}' and autoencoder '{ae}' differ in {field} "
                    f"({_describe(known, field)}); pairing them would compare classifiers on different {what}",
                    "re-run the differing cells with the study's settings, or report the two settings as separate "
                    "studies" + (" (rows of a repeated CV need their split_seed)" if field == "splits_digest" else ""))


def _fold_means(c: pd.DataFrame) -> pd.DataFrame:
    """One line per fold of one fold assignment: metric averaged over the training seeds, and what the
    convergence marks need."""
    c = c.assign(unconverged=c["converged"].map(lambda v: v is False).astype(int),
                 unknown=c["converged"].map(lambda v: v is None).astype(int),
                 ratio_n=c["ratio"].notna().astype(int))
    g = c.groupby(PAIR_KEYS, sort=True)
    return pd.DataFrame({"value": g["value"].mean(), "rows": g.size(), "ratio_sum": g["ratio"].sum(min_count=1),
                         "ratio_n": g["ratio_n"].sum(), "k": g["k"].max(), "unconverged": g["unconverged"].sum(),
                         "unknown": g["unknown"].sum(), "in_sample": g["in_sample"].any()}).reset_index()


def paired_values(rows: pd.DataFrame, space_a: str, space_b: str, metric: str = "bacc",
                  variant_a: str = "plain", variant_b: str = "plain") -> pd.DataFrame:
    """Pairs of ``metric`` for two spaces, one per dataset x autoencoder x split seed x fold; each side is
    the mean over its training seeds on that fold (seeds tested on one test part are not independent).

    Raises a ``UserError`` when cells of one comparison differ in fold assignment, image size or views
    (:func:`check_pairable`).

    Returns columns dataset, autoencoder, split_seed, fold, a, b, rows_a, rows_b (seeds averaged on each
    side), ratio (mean n_test / n_train of the pair's rows, NaN when unknown), k, cells (rows_a + rows_b),
    unconverged and unknown (cells with ``converged`` false / missing), in_sample.
    """
    cols = PAIR_KEYS + ["a", "b", "rows_a", "rows_b", "ratio", "k", "cells", "unconverged", "unknown", "in_sample"]
    ca, cb = cells(rows, space_a, variant_a, metric), cells(rows, space_b, variant_b, metric)
    if not len(ca) or not len(cb):
        return pd.DataFrame(columns=cols)
    check_pairable(ca, cb, f"{space_a}-{space_b}")
    m = _fold_means(ca).merge(_fold_means(cb), on=PAIR_KEYS, suffixes=("_a", "_b"))
    ratio_n = m["ratio_n_a"] + m["ratio_n_b"]
    m = m.assign(a=m["value_a"], b=m["value_b"], rows_a=m["rows_a"], rows_b=m["rows_b"],
                 ratio=(m["ratio_sum_a"].fillna(0) + m["ratio_sum_b"].fillna(0)) / ratio_n.where(ratio_n > 0),
                 k=m[["k_a", "k_b"]].max(axis=1), cells=m["rows_a"] + m["rows_b"],
                 unconverged=m["unconverged_a"] + m["unconverged_b"], unknown=m["unknown_a"] + m["unknown_b"],
                 in_sample=m["in_sample_a"] | m["in_sample_b"])
    return m[cols].sort_values(PAIR_KEYS).reset_index(drop=True)


def fold_ratio(pairs: pd.DataFrame) -> tuple[float, str]:
    """n_test / n_train for the corrected test of one comparison: the mean over its pairs of the rows'
    ratio; without ``n_test`` / ``n_train`` in the rows, 1/(k - 1) with k from the rows' ``k`` (else the
    highest fold index + 1), said in the returned note.

    Args:
        pairs: :func:`paired_values` lines of one dataset x autoencoder.

    Returns (ratio, note); ratio is NaN when it cannot be known.
    """
    r = pairs["ratio"].dropna()
    if len(r):
        return float(r.mean()), ""
    ks = pd.to_numeric(pairs["k"], errors="coerce").dropna()
    folds = pd.to_numeric(pairs["fold"], errors="coerce").dropna()
    k = int(ks.max()) if len(ks) else int(folds.max()) + 1 if len(folds) else 0
    if k < 2:
        return math.nan, "n_test/n_train missing and k unknown"
    return 1.0 / (k - 1), f"n_test/n_train missing: used 1/(k-1) with k={k}"


# --------------------------------------------------------------------------- tables

def compare_pairs(pairs: pd.DataFrame, confidence: float = 0.95, margin: float = MARGIN,
                  alpha: float = ALPHA) -> dict:
    """All statistics of one dataset x autoencoder comparison from its fold pairs.

    Args:
        pairs: :func:`paired_values` lines of one dataset x autoencoder.
        confidence: CI level; margin, alpha: equivalence margin and level of :func:`tost`.

    Returns dict: n (J pairs), rows_a, rows_b, mean_a, mean_b, the fields of :func:`corrected_paired_t`
    (p is the corrected p), test_train_ratio, p_plain, p_wilcoxon, margin, p_tost, equivalence, cells,
    unconverged, convergence_unknown, budget_limited, in_sample, flags, note.
    """
    a, b = pairs["a"].to_numpy(float), pairs["b"].to_numpy(float)
    ratio, ratio_note = fold_ratio(pairs) if len(pairs) else (math.nan, "")
    r = corrected_paired_t(a, b, ratio, confidence)
    eq = tost(a, b, margin, ratio, alpha)
    unconverged, in_sample = int(pairs["unconverged"].sum()), bool(pairs["in_sample"].any())
    notes = [ratio_note, r.pop("note")]
    if (pairs["rows_a"] != pairs["rows_b"]).any():
        notes.append("unequal seeds per fold (each side averaged over its own)")
    flags = (["budget-limited"] if unconverged else []) + (["in-sample"] if in_sample else [])
    return dict(rows_a=int(pairs["rows_a"].sum()), rows_b=int(pairs["rows_b"].sum()),
                mean_a=float(a.mean()) if len(a) else math.nan, mean_b=float(b.mean()) if len(b) else math.nan,
                **r, test_train_ratio=ratio, p_plain=paired_t(a, b)["p"], p_wilcoxon=wilcoxon_signed_rank(a, b)["p"],
                margin=margin, p_tost=eq["p_tost"], equivalence=eq["verdict"], cells=int(pairs["cells"].sum()),
                unconverged=unconverged, convergence_unknown=int(pairs["unknown"].sum()),
                budget_limited=unconverged > 0, in_sample=in_sample, flags="; ".join(flags),
                note="; ".join(n for n in notes if n))


PAIR_TEST_COLUMNS = [
    "dataset", "autoencoder", "comparison", "metric", "n", "rows_a", "rows_b", "mean_a", "mean_b", "mean_diff",
    "sd_diff", "test_train_ratio", "se", "t", "df", "p", "p_holm", "d_z", "ci_low", "ci_high", "p_plain",
    "p_wilcoxon", "margin", "p_tost", "equivalence", "cells", "unconverged", "convergence_unknown",
    "budget_limited", "in_sample", "flags", "note"]


def pair_tests(rows: pd.DataFrame, metric: str = "bacc", comparisons=COMPARISONS, confidence: float = 0.95,
               margin: float = MARGIN, alpha: float = ALPHA) -> pd.DataFrame:
    """Per dataset x autoencoder: corrected resampled t-tests across folds (seeds averaged within a fold),
    with plain t and Wilcoxon p-values and TOST equivalence; Holm-adjusted (corrected p) over the table.

    Args:
        rows: result rows.
        metric: row column compared (bACC by default).
        comparisons: (name, space a, space b) triples, or (name, space a, space b, variant a, variant b)
            (:data:`MATCHED_COMPARISONS`); the difference is a - b; plain variants by default.
        confidence: CI level of the mean difference (corrected standard error).
        margin: TOST equivalence margin in metric units (0.02 = 2 bACC points); alpha: TOST level.

    Returns one row per dataset x autoencoder x comparison with :data:`PAIR_TEST_COLUMNS`: n is J (folds x
    split repeats), rows_a / rows_b the cells averaged into them, p the corrected p, p_holm its Holm
    adjustment, equivalence "equivalent" / "not shown equivalent", budget_limited when a cell did not
    converge, in_sample when the autoencoder saw the test images, flags both as text.
    """
    out = []
    for name, sa, sb, *variants in comparisons:
        pv = paired_values(rows, sa, sb, metric, *variants)
        for (ds, ae), g in pv.groupby(["dataset", "autoencoder"], sort=True):
            out.append(dict(dataset=ds, autoencoder=ae, comparison=name, metric=metric,
                            **compare_pairs(g, confidence, margin, alpha)))
    df = pd.DataFrame(out, columns=[c for c in PAIR_TEST_COLUMNS if c != "p_holm"])
    df["p_holm"] = holm(df["p"]) if len(df) else []
    return df[PAIR_TEST_COLUMNS]


def pair_means(rows: pd.DataFrame, space_a: str, space_b: str, metric: str = "bacc") -> pd.DataFrame:
    """Mean of ``metric`` over folds (seeds averaged within a fold) per dataset x autoencoder for two
    spaces (paired folds only)."""
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


def space_means(rows: pd.DataFrame, metric: str = "bacc", spaces=SPACES,
                variant: str = "plain", confidence: float = 0.95) -> pd.DataFrame:
    """Mean ``metric`` per dataset x autoencoder x space over folds (seeds averaged within a fold) with a
    CI from the same corrected standard error as the tests: mean +- t_{J-1} sqrt((1/J + n_test/n_train) s^2).

    Returns columns dataset, autoencoder, space, n (J), mean, ci_low, ci_high, test_train_ratio, cells,
    unconverged, note. Image-space rows appear under every autoencoder of their dataset.
    """
    cols = ["dataset", "autoencoder", "space", "n", "mean", "ci_low", "ci_high", "test_train_ratio", "cells",
            "unconverged", "note"]
    out = []
    for space in spaces:
        c = cells(rows, space, variant, metric)
        if not len(c):
            continue
        fm = _fold_means(c)
        fm["ratio"] = fm["ratio_sum"] / fm["ratio_n"].where(fm["ratio_n"] > 0)
        for (ds, ae), g in fm.groupby(["dataset", "autoencoder"], sort=True):
            ratio, note = fold_ratio(g)
            # the CI of a mean is the CI of its difference from 0
            r = corrected_paired_t(g["value"], np.zeros(len(g)), ratio, confidence)
            if r["n"] >= 2 and r["sd_diff"] == 0:
                r["note"] = "same value on every fold"
            out.append(dict(dataset=ds, autoencoder=ae, space=space, n=r["n"], mean=r["mean_diff"],
                            ci_low=r["ci_low"], ci_high=r["ci_high"], test_train_ratio=ratio,
                            cells=int(g["rows"].sum()), unconverged=int(g["unconverged"].sum()),
                            note="; ".join(x for x in (note, r["note"]) if x)))
    return pd.DataFrame(out, columns=cols)


def convergence_table(rows: pd.DataFrame, spaces=SPACES, variant: str = "plain") -> pd.DataFrame:
    """Per dataset x autoencoder: cells of the given spaces (image cells counted under every autoencoder),
    how many did not converge (``converged`` false), how many did not record it, and whether the
    autoencoder saw the test images (``ae_in_sample``).

    Returns columns dataset, autoencoder, cells, unconverged, unknown, in_sample.
    """
    cols = ["dataset", "autoencoder", "cells", "unconverged", "unknown", "in_sample"]
    parts = []
    for space in spaces:
        c = cells(rows, space, variant)
        parts.append(c.assign(space=space))
    c = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if not len(c):
        return pd.DataFrame(columns=cols)
    c = c.assign(unconverged=c["converged"].map(lambda v: v is False), unknown=c["converged"].map(lambda v: v is None))
    g = c.groupby(["dataset", "autoencoder"], sort=True)
    out = pd.DataFrame({"cells": g.size(), "unconverged": g["unconverged"].sum().astype(int),
                        "unknown": g["unknown"].sum().astype(int), "in_sample": g["in_sample"].any()})
    return out.reset_index()[cols]


def gap_table(rows: pd.DataFrame, metric: str = "bacc") -> pd.DataFrame:
    """Per dataset x autoencoder: the gap RS - LS (mean over paired folds) joined with the mean
    reconstruction fidelity from ``kind == "fidelity"`` rows (for the PSNR-vs-gap figure)."""
    pm = pair_means(rows, "recon", "latent", metric).rename(columns={"a": "recon", "b": "latent"})
    pm["gap"] = pm["recon"] - pm["latent"]
    fid = fidelity_table(rows)
    if len(fid):
        pm = pm.merge(fid[["dataset", "autoencoder", "psnr_mean", "ssim_mean"]], on=["dataset", "autoencoder"],
                      how="left")
    return pm


def baseline_check(rows: pd.DataFrame, metric: str = "bacc", margin: float = MARGIN,
                   alpha: float = ALPHA) -> pd.DataFrame:
    """Per dataset: the study's image-space recipe (variant ``plain``) against the plain, strong recipe of the
    same architecture and budget (variant ``baseline``: class-weighted CE, one-cycle), paired on folds with the
    corrected test. ``baseline_wins`` when the baseline is ahead by more than ``margin`` with corrected
    p < ``alpha``: the study's recipe is under-fitting in this regime and the gap must not be read off it.

    Returns columns dataset, n, mean_recipe, mean_baseline, mean_diff (baseline - recipe), ci_low, ci_high,
    p, verdict, baseline_wins.
    """
    cols = ["dataset", "n", "mean_recipe", "mean_baseline", "mean_diff", "ci_low", "ci_high", "p", "verdict",
            "baseline_wins"]
    pairs = paired_values(rows, "image", "image", metric, variant_a="baseline", variant_b="plain")
    if not len(pairs):
        return pd.DataFrame(columns=cols)
    # image rows are copied to every autoencoder of their dataset: one copy per fold is the comparison
    pairs = pairs.drop_duplicates(["dataset", "split_seed", "fold"])
    out = []
    for ds, g in pairs.groupby("dataset", sort=True):
        r = compare_pairs(g, margin=margin, alpha=alpha)
        wins = bool(r["mean_diff"] > margin and r["p"] < alpha)
        if wins:
            verdict = "baseline better: the study's image recipe under-fits here; change it before reading the gap"
        elif r["mean_diff"] < -margin and r["p"] < alpha:
            verdict = "study recipe better"
        else:
            verdict = "no difference beyond noise"
        out.append({"dataset": ds, "n": r["n"], "mean_recipe": r["mean_b"], "mean_baseline": r["mean_a"],
                    "mean_diff": r["mean_diff"], "ci_low": r["ci_low"], "ci_high": r["ci_high"], "p": r["p"],
                    "verdict": verdict, "baseline_wins": wins})
    return pd.DataFrame(out, columns=cols)


def fidelity_table(rows: pd.DataFrame) -> pd.DataFrame:
    """PSNR / SSIM mean and std per dataset x autoencoder from fidelity rows.

    A pair has one fidelity row, or one per fold when the study trained an autoencoder per fold (each over its
    fold's test part); those are pooled exactly — the test parts partition the dataset — into the mean and
    sample std over all their images (``split`` says which images, ``in_sample`` marks autoencoders that saw
    every image).
    """
    cols = ["dataset", "autoencoder", "split", "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "n_images",
            "in_sample"]
    if "kind" not in rows:
        return pd.DataFrame(columns=cols)
    fid = rows[rows["kind"] == "fidelity"]
    if "n_images" not in fid and "n" in fid:
        fid = fid.rename(columns={"n": "n_images"})
    out = []
    for (ds, ae), g in fid.groupby(["dataset", "autoencoder"], sort=True):
        n = g["n_images"].to_numpy(float) if "n_images" in g else np.ones(len(g))
        rec = {"dataset": ds, "autoencoder": ae, "n_images": int(n.sum()),
               "split": g["split"].iloc[0] if len(g) == 1 and "split" in g else f"test parts of {len(g)} folds",
               "in_sample": bool(g["ae_in_sample"].fillna(False).any()) if "ae_in_sample" in g else False}
        for m in ("psnr", "ssim"):
            if f"{m}_mean" not in g:
                continue
            mu, sd = g[f"{m}_mean"].to_numpy(float), g.get(f"{m}_std", pd.Series(0.0, index=g.index)).to_numpy(float)
            total = (n * mu).sum() / n.sum()
            ss = ((n - 1) * np.nan_to_num(sd) ** 2).sum() + (n * (mu - total) ** 2).sum()
            rec[f"{m}_mean"] = float(total)
            rec[f"{m}_std"] = float(np.sqrt(ss / (n.sum() - 1))) if n.sum() > 1 else 0.0
        out.append(rec)
    return pd.DataFrame(out, columns=[c for c in cols if any(c in r for r in out)] or cols)


def summary_table(rows: pd.DataFrame, metrics=("bacc", "auc", "mcc")) -> pd.DataFrame:
    """Mean, std and count of each metric per dataset x autoencoder x space x variant over all rows
    (folds and seeds), with the number of cells that did not converge / did not record convergence."""
    rows = results_only(rows).copy()
    if not len(rows) or "space" not in rows:
        return pd.DataFrame(columns=["dataset", "autoencoder", "space", "variant", "n", "unconverged",
                                     "convergence_unknown"])
    rows["autoencoder"] = rows["autoencoder"].fillna(IMAGE_AE).replace("", IMAGE_AE)
    conv = _column(rows, "converged").map(flag)
    rows["unconverged"] = conv.map(lambda v: v is False).astype(int)
    rows["convergence_unknown"] = conv.map(lambda v: v is None).astype(int)
    metrics = [m for m in metrics if m in rows]
    g = rows.groupby(["dataset", "autoencoder", "space", "variant"], sort=True)
    mean, std, n = g[metrics].mean(), g[metrics].std(ddof=1), g.size().rename("n")
    out = mean.add_suffix("_mean").join(std.add_suffix("_std")).join(n)
    out = out.join(g[["unconverged", "convergence_unknown"]].sum())
    return out.reset_index()
