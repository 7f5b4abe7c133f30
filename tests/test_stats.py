"""Statistics over result rows, checked against SciPy and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from latentgap.study import stats as S


def _rows(seed: int = 0, datasets=("dsA", "dsB", "dsC"), aes=("ae1", "ae2"), folds=5, seeds=(0, 1)) -> pd.DataFrame:
    """Result rows with a latent gap of about 0.1 and recon == image up to noise."""
    rng = np.random.default_rng(seed)
    out = []
    for ds in datasets:
        base = rng.uniform(0.5, 0.8)
        for f in range(folds):
            for s in seeds:
                fold_effect = rng.normal(0, 0.03)
                out.append(dict(kind="result", dataset=ds, autoencoder=S.IMAGE_AE, space="image", variant="plain",
                                fold=f, seed=s, bacc=base + fold_effect + rng.normal(0, 0.01)))
                for k, ae in enumerate(aes):
                    out.append(dict(kind="result", dataset=ds, autoencoder=ae, space="recon", variant="plain", fold=f,
                                    seed=s, bacc=base + fold_effect + rng.normal(0, 0.01)))
                    out.append(dict(kind="result", dataset=ds, autoencoder=ae, space="latent", variant="plain", fold=f,
                                    seed=s, bacc=base + fold_effect - 0.05 * (k + 1) + rng.normal(0, 0.02)))
    return pd.DataFrame(out)


def test_paired_t_equals_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.7, 0.05, 10), rng.normal(0.6, 0.05, 10)
    r = S.paired_t(a, b)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert r["t"] == pytest.approx(ref.statistic, rel=1e-12)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert r["df"] == 9
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-12)
    d = a - b
    assert r["d_z"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)


def test_paired_t_hand_example():
    # d = [1, 2, 3]: mean 2, sd 1, t = 2 / (1/sqrt 3) = 2 sqrt 3, d_z = 2
    r = S.paired_t([2, 4, 6], [1, 2, 3])
    assert r["t"] == pytest.approx(2 * math.sqrt(3))
    assert r["d_z"] == pytest.approx(2.0)
    half = stats.t.ppf(0.975, 2) / math.sqrt(3)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((2 - half, 2 + half))


def test_paired_t_degenerate():
    r = S.paired_t([0.5], [0.4])
    assert math.isnan(r["p"]) and "n=1" in r["note"]
    r = S.paired_t([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert math.isnan(r["t"]) and math.isnan(r["p"]) and r["note"] == "all differences zero"
    r = S.paired_t([0.6, 0.7], [0.5, 0.6])
    assert math.isnan(r["p"]) and "constant" in r["note"]
    r = S.paired_t([], [])
    assert r["n"] == 0 and math.isnan(r["mean_diff"])


def test_wilcoxon_equals_scipy_and_rank_biserial():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.7, 0.05, 12), rng.normal(0.65, 0.05, 12)
    r = S.wilcoxon_signed_rank(a, b)
    ref = stats.wilcoxon(a, b)
    assert r["statistic"] == pytest.approx(ref.statistic)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    # hand: ranks of |d|, W+ + W- = n(n+1)/2, min equals SciPy's two-sided statistic
    assert r["w_plus"] + r["w_minus"] == pytest.approx(12 * 13 / 2)
    assert min(r["w_plus"], r["w_minus"]) == pytest.approx(ref.statistic)
    assert r["rank_biserial"] == pytest.approx((r["w_plus"] - r["w_minus"]) / 78)


def test_wilcoxon_hand_example():
    # d = [1, -2, 3, 4, 0]: zero dropped, ranks 1..4, W+ = 1 + 3 + 4 = 8, W- = 2, r = 6 / 10
    r = S.wilcoxon_signed_rank([1, -2, 3, 4, 5], [0, 0, 0, 0, 5])
    assert (r["n"], r["w_plus"], r["w_minus"]) == (4, 8.0, 2.0)
    assert r["rank_biserial"] == pytest.approx(0.6)
    assert r["p"] == pytest.approx(stats.wilcoxon([1, -2, 3, 4, 0]).pvalue)


def test_wilcoxon_degenerate():
    r = S.wilcoxon_signed_rank([0.3, 0.4], [0.3, 0.4])
    assert math.isnan(r["p"]) and r["note"] == "all differences zero"
    r = S.wilcoxon_signed_rank([0.5, 0.4], [0.3, 0.4])
    assert math.isnan(r["p"]) and "n=1" in r["note"]


def test_holm_hand_example():
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone max 0.06
    adj = S.holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adj = S.holm([0.5, np.nan, 0.6])
    assert adj[0] == pytest.approx(1.0) and np.isnan(adj[1]) and adj[2] == pytest.approx(1.0)
    assert S.holm([]).size == 0


def test_pair_tests_match_scipy_per_pair():
    rows = _rows()
    tab = S.pair_tests(rows)
    assert len(tab) == 3 * 2 * 2  # datasets x aes x comparisons
    for _, t in tab.iterrows():
        sa, sb = {"recon-latent": ("recon", "latent"), "image-recon": ("image", "recon")}[t["comparison"]]
        sel = rows[(rows.dataset == t["dataset"])]
        a = sel[(sel.space == sa) & (sel.autoencoder.isin([t["autoencoder"], S.IMAGE_AE]))].sort_values(["fold", "seed"])
        b = sel[(sel.space == sb) & (sel.autoencoder.isin([t["autoencoder"], S.IMAGE_AE]))].sort_values(["fold", "seed"])
        ref = stats.ttest_rel(a["bacc"].to_numpy(), b["bacc"].to_numpy())
        assert t["n"] == 10
        assert t["t"] == pytest.approx(ref.statistic, rel=1e-10)
        assert t["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert tab["p_holm"].to_numpy() == pytest.approx(S.holm(tab["p"].to_numpy()))
    gaps = tab[tab.comparison == "recon-latent"]
    assert (gaps["mean_diff"] > 0.02).all()  # the fixture's latent gap is visible


def test_pairing_on_fold_and_seed_not_order():
    rows = _rows()
    shuffled = rows.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(S.pair_tests(rows), S.pair_tests(shuffled))


def test_across_pairs_wilcoxon_matches_scipy():
    rows = _rows(datasets=("a", "b", "c", "d"), aes=("x", "y"))
    tab = S.across_pairs_tests(rows).set_index("comparison")
    means = rows.groupby(["dataset", "autoencoder", "space"])["bacc"].mean()
    rec, lat = [], []
    for ds in "abcd":
        for ae in "xy":
            rec.append(means[(ds, ae, "recon")])
            lat.append(means[(ds, ae, "latent")])
    ref = stats.wilcoxon(rec, lat)
    g = tab.loc["recon-latent"]
    assert g["pairs"] == 8 and g["statistic"] == pytest.approx(ref.statistic) and g["p"] == pytest.approx(ref.pvalue)
    assert g["rank_biserial"] == pytest.approx(1.0)  # every pair has a positive gap
    img = [means[(ds, S.IMAGE_AE, "image")] for ds in "abcd" for _ in "xy"]
    assert tab.loc["image-recon", "p"] == pytest.approx(stats.wilcoxon(img, rec).pvalue)


def test_missing_partner_rows_are_not_paired():
    rows = _rows(datasets=("a",), aes=("x",), folds=3, seeds=(0,))
    rows = rows[~((rows.space == "latent") & (rows.fold == 2))]
    tab = S.pair_tests(rows).set_index("comparison")
    assert tab.loc["recon-latent", "n"] == 2 and tab.loc["image-recon", "n"] == 3


def test_summary_gap_and_fidelity_tables():
    rows = _rows(datasets=("a",), aes=("x",), folds=3, seeds=(0,))
    fid = pd.DataFrame([dict(kind="fidelity", dataset="a", autoencoder="x", psnr_mean=30.0, psnr_std=1.0,
                             ssim_mean=0.9, ssim_std=0.01, n_images=10)])
    allrows = pd.concat([rows, fid], ignore_index=True)
    summ = S.summary_table(allrows).set_index(["autoencoder", "space"])
    lat = rows[rows.space == "latent"]["bacc"]
    assert summ.loc[("x", "latent"), "bacc_mean"] == pytest.approx(lat.mean())
    assert summ.loc[("x", "latent"), "bacc_std"] == pytest.approx(lat.std(ddof=1))
    assert summ.loc[("x", "latent"), "n"] == 3
    gap = S.gap_table(allrows)
    rec = rows[rows.space == "recon"]["bacc"].mean()
    assert gap.loc[0, "gap"] == pytest.approx(rec - lat.mean())
    assert gap.loc[0, "psnr_mean"] == 30.0
