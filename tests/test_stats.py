"""Statistics over result rows. Oracles: SciPy for the plain t-test and Wilcoxon; the Nadeau-Bengio
corrected t-test and TOST against arithmetic written out in the test (only ``scipy.stats.t.sf`` is used,
for tail probabilities); pandas group-bys on the raw rows for the pairing."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from latentgap.errors import UserError
from latentgap.study import stats as S

T_975_4 = 2.7764451051977987  # t-table: 97.5 % quantile of Student's t with 4 degrees of freedom


def _rows(seed: int = 0, datasets=("dsA", "dsB", "dsC"), aes=("ae1", "ae2"), folds=5, seeds=(0, 1)) -> pd.DataFrame:
    """Result rows with a latent gap of about 0.05-0.1 and recon == image up to noise (no n_test/n_train)."""
    rng = np.random.default_rng(seed)
    out = []
    for ds in datasets:
        base = rng.uniform(0.5, 0.8)
        for f in range(folds):
            fold_effect = rng.normal(0, 0.03)
            for s in seeds:
                out.append(dict(kind="result", dataset=ds, autoencoder=S.IMAGE_AE, space="image", variant="plain",
                                fold=f, seed=s, bacc=base + fold_effect + rng.normal(0, 0.01)))
                for k, ae in enumerate(aes):
                    out.append(dict(kind="result", dataset=ds, autoencoder=ae, space="recon", variant="plain", fold=f,
                                    seed=s, bacc=base + fold_effect + rng.normal(0, 0.01)))
                    out.append(dict(kind="result", dataset=ds, autoencoder=ae, space="latent", variant="plain", fold=f,
                                    seed=s, bacc=base + fold_effect - 0.05 * (k + 1) + rng.normal(0, 0.02)))
    return pd.DataFrame(out)


# The hand fixture: 5 folds x 2 seeds, n_test / n_train = 40 / 160 = 0.25. Seed 0 is 0.01 above and seed 1
# 0.01 below the fold's value, so seed means are exact; per fold, recon - latent = GAP and image - recon = EQ.
GAP = [0.05, 0.03, 0.08, 0.02, 0.06]
EQ = [0.004, -0.002, 0.006, 0.000, 0.002]


def _hand_rows(seeds=(0, 1), n_test=40, n_train=160, **extra) -> pd.DataFrame:
    out = []
    for f in range(5):
        recon = 0.70 + 0.01 * f
        for s in seeds:
            jitter = 0.01 if s % 2 == 0 else -0.01
            common = dict(kind="result", dataset="busi_128", variant="plain", fold=f, seed=s, k=5, n_test=n_test,
                          n_train=n_train, splits_digest="d2086973", image_size=[128, 128], **extra)
            out.append(dict(common, autoencoder=S.IMAGE_AE, space="image", bacc=recon + EQ[f] + jitter))
            out.append(dict(common, autoencoder="taef2", space="recon", bacc=recon + jitter))
            out.append(dict(common, autoencoder="taef2", space="latent", bacc=recon - GAP[f] + jitter))
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- single tests

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


def test_corrected_t_by_hand():
    # d = [0.05, 0.03, 0.08, 0.02, 0.06], J = 5: mean 0.24 / 5 = 0.048;
    # deviations 0.002, -0.018, 0.032, -0.028, 0.012 -> s^2 = (4 + 324 + 1024 + 784 + 144)e-6 / 4 = 0.00057
    # corrected variance of the mean (1/5 + 0.25) * 0.00057 = 0.45 * 0.00057 = 0.0002565
    s2 = (0.002**2 + 0.018**2 + 0.032**2 + 0.028**2 + 0.012**2) / 4
    assert s2 == pytest.approx(0.00057)
    se = math.sqrt(0.45 * 0.00057)  # 0.0160156
    t = 0.048 / se  # 2.99707
    assert t == pytest.approx(2.99707, abs=1e-5)
    p = 2 * stats.t.sf(t, 4)  # 0.04006
    half = T_975_4 * se
    r = S.corrected_paired_t(GAP, [0.0] * 5, 0.25)
    assert (r["n"], r["df"]) == (5, 4)
    assert r["mean_diff"] == pytest.approx(0.048)
    assert r["sd_diff"] == pytest.approx(math.sqrt(0.00057))
    assert r["se"] == pytest.approx(se)
    assert r["t"] == pytest.approx(t)
    assert r["p"] == pytest.approx(p) and r["p"] == pytest.approx(0.04006, abs=1e-5)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.048 - half, 0.048 + half))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.00353, 0.09247), abs=1e-5)
    # the plain test on the same differences: se = sqrt(0.00057 / 5); it is more liberal
    plain = S.paired_t(GAP, [0.0] * 5)
    assert plain["t"] == pytest.approx(0.048 / math.sqrt(0.00057 / 5)) and plain["p"] < r["p"]


def test_corrected_t_degenerate():
    r = S.corrected_paired_t([0.5, 0.6], [0.4, 0.4], math.nan)
    assert math.isnan(r["p"]) and "ratio unknown" in r["note"]
    r = S.corrected_paired_t([0.5], [0.4], 0.25)
    assert math.isnan(r["p"]) and "n=1" in r["note"]


def test_tost_by_hand():
    # equivalent: d = EQ = [0.004, -0.002, 0.006, 0, 0.002], mean 0.002, deviations 0.002, -0.004, 0.004, -0.002, 0
    # s^2 = (4 + 16 + 16 + 4 + 0)e-6 / 4 = 1e-5; se = sqrt(0.45 * 1e-5) = 0.00212132
    se = math.sqrt(0.45 * 1e-5)
    t_lower = (0.002 + 0.02) / se  # 10.3709: H0 mean <= -0.02
    t_upper = (0.002 - 0.02) / se  # -8.4853: H0 mean >= +0.02
    p_lower, p_upper = stats.t.sf(t_lower, 4), stats.t.sf(-t_upper, 4)  # P(T >= t_lower), P(T <= t_upper)
    r = S.tost(EQ, [0.0] * 5, margin=0.02, test_train_ratio=0.25)
    assert (r["t_lower"], r["t_upper"]) == pytest.approx((t_lower, t_upper))
    assert (r["p_lower"], r["p_upper"]) == pytest.approx((p_lower, p_upper))
    assert r["p_tost"] == pytest.approx(max(p_lower, p_upper)) and r["p_tost"] == pytest.approx(5.288e-4, rel=1e-3)
    assert r["equivalent"] and r["verdict"] == "equivalent"
    # not shown equivalent: d = GAP, mean 0.048 > margin; t_upper = (0.048 - 0.02) / 0.0160156 = 1.74829
    r = S.tost(GAP, [0.0] * 5, margin=0.02, test_train_ratio=0.25)
    se = math.sqrt(0.45 * 0.00057)
    assert r["t_upper"] == pytest.approx((0.048 - 0.02) / se)
    assert r["p_tost"] == pytest.approx(stats.t.sf(-(0.048 - 0.02) / se, 4))  # 0.9223
    assert not r["equivalent"] and r["verdict"] == "not shown equivalent"
    # a wider margin, 0.1: both one-sided tests reject at 0.05
    assert S.tost(GAP, [0.0] * 5, margin=0.1, test_train_ratio=0.25)["verdict"] == "equivalent"


def test_tost_degenerate():
    r = S.tost([0.5], [0.5], margin=0.02)
    assert math.isnan(r["p_tost"]) and r["verdict"] == "not shown equivalent" and "n=1" in r["note"]
    r = S.tost([0.5, 0.6], [0.5, 0.6], margin=0.0)
    assert math.isnan(r["p_tost"]) and "margin" in r["note"]


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


# --------------------------------------------------------------------------- pairing and tables

def test_pair_tests_on_hand_fixture():
    tab = S.pair_tests(_hand_rows()).set_index("comparison")
    gap = tab.loc["recon-latent"]
    se = math.sqrt((1 / 5 + 40 / 160) * 0.00057)
    t = 0.048 / se
    assert (gap["n"], gap["rows_a"], gap["rows_b"], gap["df"]) == (5, 10, 10, 4)  # J = folds, not folds x seeds
    assert gap["test_train_ratio"] == pytest.approx(0.25)
    assert gap["mean_diff"] == pytest.approx(0.048) and gap["t"] == pytest.approx(t)
    assert gap["p"] == pytest.approx(2 * stats.t.sf(t, 4))
    assert (gap["ci_low"], gap["ci_high"]) == pytest.approx((0.048 - T_975_4 * se, 0.048 + T_975_4 * se))
    assert gap["p_plain"] == pytest.approx(stats.ttest_rel(GAP, [0.0] * 5).pvalue)
    assert gap["p_wilcoxon"] == pytest.approx(stats.wilcoxon(GAP).pvalue)  # 0.0625: the smallest with 5 pairs
    assert gap["note"] == "" and gap["flags"] == "" and gap["convergence_unknown"] == 20  # 10 recon + 10 latent cells
    eq = tab.loc["image-recon"]
    assert eq["mean_diff"] == pytest.approx(0.002) and eq["equivalence"] == "equivalent"
    se = math.sqrt(0.45 * 1e-5)
    assert eq["p_tost"] == pytest.approx(stats.t.sf(-(0.002 - 0.02) / se, 4))
    assert tab["p_holm"].to_numpy() == pytest.approx(S.holm(tab["p"].to_numpy()))  # Holm on the corrected p
    wide = S.pair_tests(_hand_rows(), margin=0.1).set_index("comparison")
    assert (wide["margin"] == 0.1).all() and wide.loc["recon-latent", "equivalence"] == "equivalent"


def test_seeds_are_averaged_within_a_fold_not_paired():
    rows = _rows(folds=5, seeds=(0, 1, 2))
    tab = S.pair_tests(rows)
    assert (tab["n"] == 5).all() and (tab["df"] == 4).all()
    assert (tab["rows_a"] == 15).all() and (tab["rows_b"] == 15).all()
    for _, t in tab.iterrows():
        sa, sb = {"recon-latent": ("recon", "latent"), "image-recon": ("image", "recon")}[t["comparison"]]
        sel = rows[(rows.dataset == t["dataset"]) & rows.autoencoder.isin([t["autoencoder"], S.IMAGE_AE])]
        a = sel[sel.space == sa].groupby("fold")["bacc"].mean().sort_index().to_numpy()
        b = sel[sel.space == sb].groupby("fold")["bacc"].mean().sort_index().to_numpy()
        assert t["mean_a"] == pytest.approx(a.mean()) and t["mean_diff"] == pytest.approx((a - b).mean())
        assert t["p_plain"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
        assert t["p_wilcoxon"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
        # no n_test / n_train in these rows: 1/(k-1) with k = 5 folds, said in the note
        d = a - b
        se = math.sqrt((1 / 5 + 1 / 4) * d.var(ddof=1))
        assert t["test_train_ratio"] == pytest.approx(0.25) and "1/(k-1) with k=5" in t["note"]
        assert t["p"] == pytest.approx(2 * stats.t.sf(abs(d.mean() / se), 4))
    gaps = tab[tab.comparison == "recon-latent"]
    assert (gaps["mean_diff"] > 0.02).all()  # the fixture's latent gap is visible


def test_split_repeats_count_as_pairs():
    r0 = _hand_rows().assign(split_seed=0)
    r1 = _hand_rows().assign(split_seed=1, splits_digest="other-split")
    tab = S.pair_tests(pd.concat([r0, r1], ignore_index=True)).set_index("comparison")
    assert tab.loc["recon-latent", "n"] == 10 and tab.loc["recon-latent", "df"] == 9


def test_mismatched_splits_digest_is_refused():
    rows = _hand_rows()
    rows.loc[(rows.space == "latent") & (rows.fold == 3), "splits_digest"] = "ffff0000"
    with pytest.raises(UserError) as e:
        S.pair_tests(rows)
    msg = str(e.value)
    assert "busi_128" in msg and "taef2" in msg and "splits_digest" in msg and "ffff0000" in msg


def test_mismatched_image_size_or_views_is_refused():
    rows = _hand_rows()
    rows["image_size"] = [[64, 64] if sp == "image" else [128, 128] for sp in rows.space]
    with pytest.raises(UserError, match=r"image-recon: .*busi_128.*taef2.*image_size"):
        S.pair_tests(rows)
    # a missing views field is the identity view: equal to an explicit ["identity"], different from a flip
    rows = _hand_rows()
    rows["views"] = [["identity"] if sp == "latent" else None for sp in rows.space]
    assert len(S.pair_tests(rows)) == 2
    rows["views"] = [["identity", "hflip"] if sp == "latent" else None for sp in rows.space]
    with pytest.raises(UserError, match=r"recon-latent: .*views"):
        S.pair_tests(rows)


def test_convergence_and_in_sample_marks():
    rows = _hand_rows()
    rows["converged"] = True
    rows.loc[(rows.space == "latent") & (rows.fold == 1) & (rows.seed == 0), "converged"] = False
    tab = S.pair_tests(rows).set_index("comparison")
    assert tab.loc["recon-latent", "budget_limited"] and tab.loc["recon-latent", "unconverged"] == 1
    assert tab.loc["recon-latent", "flags"] == "budget-limited"
    assert not tab.loc["image-recon", "budget_limited"] and tab.loc["image-recon", "convergence_unknown"] == 0
    conv = S.convergence_table(rows).iloc[0]
    assert (conv["cells"], conv["unconverged"], conv["unknown"]) == (30, 1, 0)
    # rows of an autoencoder trained on all images, test parts included
    rows["ae_in_sample"] = [sp != "image" for sp in rows.space]
    tab = S.pair_tests(rows).set_index("comparison")
    assert tab["in_sample"].all() and tab.loc["recon-latent", "flags"] == "budget-limited; in-sample"
    # missing fields are unknown, not converged
    tab = S.pair_tests(_hand_rows()).set_index("comparison")
    assert not tab["budget_limited"].any() and (tab["convergence_unknown"] == 20).all()


def test_pairing_does_not_depend_on_row_order():
    rows = _rows()
    shuffled = rows.sample(frac=1.0, random_state=3)
    pd.testing.assert_frame_equal(S.pair_tests(rows), S.pair_tests(shuffled))


def test_degenerate_tables_give_nan_and_note():
    rows = _hand_rows()
    one = S.pair_tests(rows[rows.fold == 0])
    assert (one["n"] == 1).all() and one["p"].isna().all() and one["note"].str.contains("n=1").all()
    assert (one["equivalence"] == "not shown equivalent").all()
    assert len(S.pair_tests(rows[rows.space == "image"])) == 0
    assert len(S.pair_tests(pd.DataFrame())) == 0


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


def test_space_means_ci_by_hand():
    sm = S.space_means(_hand_rows()).set_index("space")
    lat = np.array([0.70 + 0.01 * f - GAP[f] for f in range(5)])
    se = math.sqrt((1 / 5 + 0.25) * lat.var(ddof=1))
    assert sm.loc["latent", "n"] == 5 and sm.loc["latent", "mean"] == pytest.approx(lat.mean())
    assert (sm.loc["latent", "ci_low"], sm.loc["latent", "ci_high"]) == pytest.approx(
        (lat.mean() - T_975_4 * se, lat.mean() + T_975_4 * se))
    assert set(sm.index) == {"image", "recon", "latent"} and (sm["autoencoder"] == "taef2").all()


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
