"""The paper's tables from result rows (learnability-gap paper, Tables 1, 3 and 4) and the report's
opening sentences: pure DataFrame -> DataFrame (or text) functions producing display strings
(mean ± std, significance marks). Text is markdown; literal asterisks are escaped (``\\*``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..study import stats as S

SPACE_LABEL = {"image": "IS", "recon": "RS", "latent": "LS"}


def _pts(x: float) -> str:
    """A bACC difference in points, one decimal (0.091 -> "9.1")."""
    return f"{100 * x:.1f}"


def margin_pts(margin: float) -> str:
    """An equivalence margin in points, as short as exact (0.02 -> "2", 0.015 -> "1.5")."""
    return f"{100 * margin:.4g}"


def mark_legend(margin: float = S.MARGIN) -> str:
    """The significance marks of :func:`main_table`, as markdown (asterisks escaped)."""
    return (r"LS bACC marked \* / \*\* / \*\*\* when LS differs from RS of the same autoencoder "
            "(Nadeau–Bengio corrected resampled t-test across folds, seeds averaged within a fold, Holm-adjusted "
            "p < .05 / .01 / .001); RS bACC marked † when RS differs from IS (same test, Holm-adjusted p < .05) "
            f"and ≈ when RS is equivalent to IS (TOST, ±{margin_pts(margin)} pts); § instead of a mark: a cell of "
            "that comparison did not converge (budget-limited, not a finding).")


MARK_LEGEND = mark_legend()


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


def main_table(rows: pd.DataFrame, margin: float = S.MARGIN) -> pd.DataFrame:
    """Mean ± std of bACC, AUC, MCC per dataset x autoencoder x space (plain variant), with marks
    (:func:`mark_legend`) and the number of cells that converged."""
    summ = S.summary_table(rows)
    summ = summ[summ["variant"] == "plain"]
    tests = S.pair_tests(rows, margin=margin) if len(summ) else pd.DataFrame(columns=S.PAIR_TEST_COLUMNS)
    by = {(r.dataset, r.autoencoder, r.comparison): r for r in tests.itertuples()}
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
                t = by.get((ds, ae, "recon-latent" if space == "latent" else "image-recon"))
                out.append(_main_row(ds, ae, SPACE_LABEL[space], r.iloc[0], _mark(t, space)))
    return pd.DataFrame(out, columns=["dataset", "autoencoder", "space", "bACC", "AUC", "MCC", "n", "converged"])


def _mark(t, space: str) -> str:
    if t is None:
        return ""
    if t.budget_limited:
        return "§"
    if space == "latent":
        return stars(t.p_holm)
    return "†" if t.p_holm < 0.05 else "≈" if t.equivalence == "equivalent" else ""


def _main_row(ds, ae, space, r, mark) -> list:
    def cell(m):
        return pm(r.get(f"{m}_mean", math.nan), r.get(f"{m}_std", math.nan))
    n = int(r["n"])
    bad, unknown = int(r.get("unconverged", 0)), int(r.get("convergence_unknown", n))
    conv = "–" if unknown == n else f"{n - bad - unknown}/{n}" + (f" ({unknown} unknown)" if unknown else "")
    return [ds, ae, space, cell("bacc") + mark, cell("auc"), cell("mcc"), n, conv]


def _diff_ci(t: pd.DataFrame) -> list[str]:
    """"+0.012 [-0.030, +0.054]" per line of a pair-tests table (the difference alone when there is no CI)."""
    return [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if not math.isnan(lo) else f"{d:+.3f}"
            for d, lo, hi in zip(t["mean_diff"], t["ci_low"], t["ci_high"])]


def matched_table(rows: pd.DataFrame, margin: float = S.MARGIN) -> pd.DataFrame:
    """The architecture-matched control: mean bACC of the latent cell's own ConvNeXt in each space, and its
    paired tests (:data:`latentgap.study.stats.MATCHED_COMPARISONS`; Holm over this table)."""
    t = S.pair_tests(rows, comparisons=S.MATCHED_COMPARISONS, margin=margin)
    if not len(t):
        return pd.DataFrame()
    return pd.DataFrame({
        "dataset": t["dataset"], "autoencoder": t["autoencoder"], "comparison": t["comparison"], "J": t["n"],
        "a": t["mean_a"].map(lambda v: f"{v:.3f}"), "b": t["mean_b"].map(lambda v: f"{v:.3f}"),
        "a − b [95% CI]": _diff_ci(t),
        "p": t["p"].map(fmt_p), "p (Holm)": t["p_holm"].map(fmt_p), "equivalence": t["equivalence"],
        "flags": t["flags"]})


def utility_table(rows: pd.DataFrame, margin: float = S.MARGIN) -> pd.DataFrame:
    """Synthetic-data utility: real+synthetic and synthetic-only training against real-only training of the same
    classifier on the same folds (corrected paired test; Holm over this table), and the TSTR / TRTR ratio."""
    t = S.pair_tests(rows, comparisons=S.UTILITY_COMPARISONS, margin=margin)
    if not len(t):
        return pd.DataFrame()
    return pd.DataFrame({
        "dataset": t["dataset"], "autoencoder": t["autoencoder"], "comparison": t["comparison"], "J": t["n"],
        "synthetic arm": t["mean_a"].map(lambda v: f"{v:.3f}"), "real arm": t["mean_b"].map(lambda v: f"{v:.3f}"),
        "difference [95% CI]": _diff_ci(t),
        "ratio (synthetic / real)": (t["mean_a"] / t["mean_b"]).map(lambda v: f"{v:.2f}"),
        "p": t["p"].map(fmt_p), "p (Holm)": t["p_holm"].map(fmt_p), "flags": t["flags"]})


def _fold_mean(g: pd.DataFrame, col: str, digits: int = 3) -> str:
    v = pd.to_numeric(g[col], errors="coerce").dropna() if col in g else pd.Series(dtype=float)
    return pm(v.mean(), v.std(ddof=1) if len(v) > 1 else float("nan"), digits) if len(v) else "–"


def synth_eval_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Fidelity per dataset x autoencoder x feature space, mean ± std over folds (rows of kind "synth-eval")."""
    ev = rows[rows["kind"] == "synth-eval"] if "kind" in rows else rows.iloc[:0]
    out = []
    for (ds, ae), g in ev.groupby(["dataset", "autoencoder"], sort=True):
        spaces = sorted(c[len("fd_"):] for c in g.columns if c.startswith("fd_") and not c.startswith("fd_reliable"))
        for sp in spaces:
            reliable = g.get(f"fd_reliable_{sp}")
            out.append([ds, ae, len(g), sp, _fold_mean(g, f"fd_{sp}", 2)
                        + ("" if reliable is None or reliable.all() else " (unreliable: read KID)"),
                        _fold_mean(g, f"kid_mean_{sp}", 4), _fold_mean(g, f"precision_{sp}"), _fold_mean(g, f"recall_{sp}"),
                        _fold_mean(g, f"density_{sp}"), _fold_mean(g, f"coverage_{sp}")])
    return pd.DataFrame(out, columns=["dataset", "autoencoder", "folds", "features", "FD", "KID", "precision", "recall",
                                      "density", "coverage"])


def privacy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Copies per distance and membership inference per dataset x autoencoder, mean ± std over folds."""
    ev = rows[rows["kind"] == "synth-eval"] if "kind" in rows else rows.iloc[:0]
    out = []
    for (ds, ae), g in ev.groupby(["dataset", "autoencoder"], sort=True):
        for d in sorted(c[len("copy_rate_"):] for c in g.columns if c.startswith("copy_rate_")):
            out.append([ds, ae, len(g), f"copies · {d.replace('_', ' ')}", _fold_mean(g, f"copy_rate_{d}"),
                        _fold_mean(g, f"copy_ratio_{d}", 2), "–"])
        if "mia_auc" in g and pd.to_numeric(g["mia_auc"], errors="coerce").notna().any():
            out.append([ds, ae, len(g), "membership inference (denoising loss)", "–", "–",
                        f"AUC {_fold_mean(g, 'mia_auc')}, TPR at 1 % FPR {_fold_mean(g, 'mia_tpr_at_1pct_fpr')}"])
    return pd.DataFrame(out, columns=["dataset", "autoencoder", "folds", "check", "copy rate", "median distance ratio",
                                      "membership"])


def synthesis_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per generator (rows of kind "generator") with the synthetic dataset it sampled (kind "synthetic")."""
    if "kind" not in rows:
        return pd.DataFrame()
    gen, syn = rows[rows["kind"] == "generator"], rows[rows["kind"] == "synthetic"]
    if "purpose" in syn:  # the tstr arm's own set (ratio 1) is described in the utility section, not here
        syn = syn[syn["purpose"].isna()]
    if not len(gen):
        return pd.DataFrame()
    by = {(r.dataset, r.autoencoder, r.fold): r for r in syn.itertuples()}
    out = []
    for g in gen.sort_values(["dataset", "autoencoder", "fold"]).itertuples():
        s = by.get((g.dataset, g.autoencoder, g.fold))
        mode = "–" if s is None else (", ".join(m for m, on in (("CFG %.3g" % s.cfg_scale, s.cfg_scale != 1),
                                                                 ("guided %.3g" % s.guide_scale, s.guided),
                                                                 ("filtered %.2f" % (s.threshold or 0), s.filtered)) if on)
                                      or "unguided")
        acc = "–" if s is None or not s.filtered else ", ".join("–" if a is None else f"{a:.2f}" for a in s.acceptance)
        out.append([g.dataset, g.autoencoder, int(g.fold), f"{g.backbone}-{g.size} {g.objective}", int(g.steps),
                    f"{g.final_loss:.4f}" if g.final_loss == g.final_loss else "–", f"{g.train_seconds:.0f}",
                    mode, "–" if s is None else " / ".join(str(c) for c in s.counts), acc])
    return pd.DataFrame(out, columns=["dataset", "autoencoder", "fold", "generator", "steps", "final loss",
                                      "train s", "sampling", "synthetic per class", "acceptance per class"])


def tests_table(rows: pd.DataFrame, metric: str = "bacc", margin: float = S.MARGIN) -> pd.DataFrame:
    """Per-pair tests for display: J, difference, corrected 95% CI, corrected t and p, Holm p, plain t and
    Wilcoxon p, TOST p and verdict, flags (budget-limited, in-sample), note."""
    t = S.pair_tests(rows, metric, margin=margin)
    num = lambda v, f: "–" if pd.isna(v) else format(v, f)  # noqa: E731
    return pd.DataFrame({
        "dataset": t["dataset"], "autoencoder": t["autoencoder"], "comparison": t["comparison"], "J": t["n"],
        "mean diff": t["mean_diff"].map(lambda v: num(v, "+.3f")),
        "95% CI": [f"[{a:+.3f}, {b:+.3f}]" if not math.isnan(a) else "–" for a, b in zip(t["ci_low"], t["ci_high"])],
        "n_test/n_train": t["test_train_ratio"].map(lambda v: num(v, ".3f")),
        "t": t["t"].map(lambda v: num(v, ".2f")), "p": t["p"].map(fmt_p), "p (Holm)": t["p_holm"].map(fmt_p),
        "p (plain t)": t["p_plain"].map(fmt_p), "p (Wilcoxon)": t["p_wilcoxon"].map(fmt_p),
        "TOST p": t["p_tost"].map(fmt_p), "equivalence": t["equivalence"], "flags": t["flags"], "note": t["note"],
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


def baseline_display(rows: pd.DataFrame, margin: float = S.MARGIN) -> pd.DataFrame:
    b = S.baseline_check(rows, margin=margin)
    return pd.DataFrame({
        "dataset": b["dataset"], "folds": b["n"],
        "study recipe": [f"{v:.3f}" for v in b["mean_recipe"]],
        "baseline (wCE, one-cycle)": [f"{v:.3f}" for v in b["mean_baseline"]],
        "baseline − recipe [95% CI]": [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in
                                       zip(b["mean_diff"], b["ci_low"], b["ci_high"])],
        "corrected p": [fmt_p(p) for p in b["p"]], "verdict": b["verdict"]})


def fidelity_display(rows: pd.DataFrame) -> pd.DataFrame:
    f = S.fidelity_table(rows)
    return pd.DataFrame({
        "dataset": f["dataset"], "autoencoder": f["autoencoder"],
        "PSNR (dB)": [pm(m, s, 2) for m, s in zip(f["psnr_mean"], f["psnr_std"])],
        "SSIM": [pm(m, s, 3) for m, s in zip(f["ssim_mean"], f["ssim_std"])],
        "images": f["n_images"].map(lambda v: "–" if pd.isna(v) else str(int(v))) if "n_images" in f else "–",
        # which images: a per-fold autoencoder is scored on the test parts it never saw
        "over": [f"{sp} (in-sample)" if ins else sp for sp, ins in zip(f.get("split", ["all"] * len(f)),
                                                                       f.get("in_sample", [False] * len(f)))],
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


def findings(rows: pd.DataFrame, margin: float = S.MARGIN) -> list[str]:
    """One plain sentence per autoencoder x dataset, e.g. "taef2 on busi_128: reconstructions equivalent to
    images (±2 pts); latents 9.1 pts below reconstructions, corrected p = 0.010 (Holm 0.040); all cells
    converged." Differences are in bACC points; p is the Nadeau–Bengio corrected p; a latent gap shown equivalent
    by TOST says so ("…, equivalent within ±2 pts (TOST p = 0.021)")."""
    tests = S.pair_tests(rows, margin=margin)
    conv = {(r.dataset, r.autoencoder): r for r in S.convergence_table(rows).itertuples()}
    by = {(r.dataset, r.autoencoder, r.comparison): r for r in tests.itertuples()}
    matched = S.pair_tests(rows, comparisons=S.MATCHED_COMPARISONS[:1], margin=margin)
    by.update({(r.dataset, r.autoencoder, r.comparison): r for r in matched.itertuples()})
    out = []
    for ds, ae in sorted({(r.dataset, r.autoencoder) for r in tests.itertuples()}):
        parts = []
        ir, rl = by.get((ds, ae, "image-recon")), by.get((ds, ae, "recon-latent"))
        if ir is not None:
            if ir.equivalence == "equivalent":
                parts.append(f"reconstructions equivalent to images (±{margin_pts(margin)} pts)")
            else:
                parts.append(f"reconstructions not shown equivalent to images (±{margin_pts(margin)} pts; "
                             f"{_relative(-ir.mean_diff, 'images')})")
        if rl is not None:
            text = f"latents {_relative(-rl.mean_diff, 'reconstructions')}"
            if math.isnan(rl.p):
                text += f", no test ({rl.note})" if rl.note else ", no test"
            else:
                text += f", corrected p = {fmt_p(rl.p)} (Holm {fmt_p(rl.p_holm)})"
            if rl.equivalence == "equivalent":  # a small gap, shown to be small
                text += f", equivalent within ±{margin_pts(margin)} pts (TOST p = {fmt_p(rl.p_tost)})"
            parts.append(text)
        mt = by.get((ds, ae, "recon-latent (matched)"))
        if mt is not None:
            parts.append(f"with the latent ConvNeXt in every space (matched control) latents "
                         f"{_relative(-mt.mean_diff, 'reconstructions')}"
                         + ("" if math.isnan(mt.p) else f", corrected p = {fmt_p(mt.p)}")
                         + (" (budget-limited)" if mt.budget_limited else ""))
        c = conv.get((ds, ae))
        if c is not None:
            if c.unconverged:
                parts.append(f"{c.unconverged} of {c.cells} cells did not converge: budget-limited")
            elif c.unknown == c.cells:
                parts.append("convergence not recorded")
            elif c.unknown:
                parts.append(f"{c.cells - c.unknown} of {c.cells} cells recorded convergence, all converged")
            else:
                parts.append("all cells converged")
            if c.in_sample:
                parts.append("the autoencoder was trained on the test images too: in-sample")
        out.append(f"{ae} on {ds}: " + "; ".join(parts) + ".")
    return out


def _relative(d: float, other: str) -> str:
    """``d`` (bACC difference, this minus ``other``) in words: "9.1 pts below reconstructions"."""
    if math.isnan(d):
        return f"no difference to {other} measured"
    return f"{_pts(abs(d))} pts {'above' if d > 0 else 'below'} {other}" if abs(d) >= 5e-4 else f"level with {other}"


def to_markdown(df: pd.DataFrame) -> str:
    if df is None or not len(df):
        return "_(no rows)_\n"
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        # significance stars are literal: unescaped, markdown reads "0.71***" as emphasis
        lines.append("| " + " | ".join(str(v).replace("|", "\\|").replace("*", "\\*") for v in row) + " |")
    return "\n".join(lines) + "\n"


SEG_METRICS = [("dice_per_image", "Dice (per image)"), ("dice_global", "Dice (global)"), ("iou_per_image", "IoU (per image)"),
               ("hd95_per_image", "HD95 px"), ("ece", "ECE"), ("brier", "Brier"),
               ("uncertainty_auroc_std", "error AUROC (std map)"), ("mask_ae_ceiling_dice_per_image", "mask-AE ceiling")]


def seg_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Segmentation per dataset x method (rows of kind "seg"): mean ± std over folds, cost, and the paired
    corrected test of per-image Dice against the U-Net on the same folds."""
    sg = rows[rows["kind"] == "seg"] if "kind" in rows else rows.iloc[:0]
    if not len(sg):
        return pd.DataFrame()
    out = []
    for (ds, method), g in sg.groupby(["dataset", "method"], sort=True):
        line = [ds, method, len(g)]
        line += [_fold_mean(g, key) for key, _ in SEG_METRICS]
        cost = g["cost_steps_x_samples"].dropna() if "cost_steps_x_samples" in g else pd.Series(dtype=float)
        line += [int(cost.iloc[0]) if len(cost) else 1, f"{g['seconds_per_image'].mean():.3f}", _seg_training(g)]
        base = sg[(sg["dataset"] == ds) & (sg["method"] == "unet")]
        if method != "unet" and len(base):
            a, b = g.set_index("fold")["dice_per_image"], base.set_index("fold")["dice_per_image"]
            common = sorted(set(a.index) & set(b.index))
            n_te, n_tr = g["n_test"].mean(), g["n_train"].mean()
            t = S.corrected_paired_t(a[common].values, b[common].values, n_te / n_tr)
            line.append(f"{100 * t['mean_diff']:+.1f} pts, p = {fmt_p(t['p'])}" if len(common) > 1 else
                        f"{100 * t['mean_diff']:+.1f} pts (1 fold, no test)")
        else:
            line.append("–")
        out.append(line)
    return pd.DataFrame(out, columns=["dataset", "method", "folds"] + [name for _, name in SEG_METRICS]
                        + ["steps × samples", "s / image", "training", "vs U-Net (Dice per image)"])


def _seg_training(g: pd.DataFrame) -> str:
    """How the folds' training ended (``latentgap.seg.fit.training_end``): "3 of 3 early-stopped (epochs 32–41 of
    60)", naming the budget-limited folds (no early stop before the epoch ceiling: possibly under-trained, so not a
    finding) and those whose mask autoencoder was; "–" for rows without the record."""
    if "convergence" not in g or g["convergence"].isna().all():
        return "–"
    conv = g["convergence"].fillna("unknown")
    text = f"{int((conv == 'early-stopped').sum())} of {len(g)} early-stopped"
    if "max_epochs" in g and g["max_epochs"].notna().all():
        lo, hi = int(g["epochs"].min()), int(g["epochs"].max())
        text += f" (epochs {lo if lo == hi else f'{lo}–{hi}'} of {int(g['max_epochs'].max())})"
    limited = sorted(int(f) for f in g.loc[conv == "budget-limited", "fold"])
    if limited:
        text += "; budget-limited: fold " + ", ".join(map(str, limited))
    if "mask_ae_convergence" in g:  # the mask autoencoder under a latent segmenter: its own ceiling
        ae = sorted(int(f) for f in g.loc[g["mask_ae_convergence"] == "budget-limited", "fold"])
        if ae:
            text += "; mask AE budget-limited: fold " + ", ".join(map(str, ae))
    return text


PROBE_SCORES = ("linear_gap", "knn_gap", "linear_latent", "linear_recon", "equiv_hflip", "equiv_shift", "hf_energy",
                "sensitivity")


def probe_gaps(rows: pd.DataFrame) -> pd.DataFrame:
    """Per dataset x autoencoder with probe rows: the probe's scores and seconds beside the measured gap RS - LS
    (NaN when the study has no such pair) and the pair's study seconds (``latentgap.probe.pair_table``: one
    definition of the cost for the report and the validation benchmark). Empty without probe rows."""
    from ..probe.validate import pair_table

    if "kind" not in rows or not (rows["kind"] == "probe").any():
        return pd.DataFrame()
    return pair_table(rows, keep_unmeasured=True)


def probe_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Display form of :func:`probe_gaps`: gap in points, scores to 3 decimals, cost as a share of the pair's study."""
    g = probe_gaps(rows)
    if not len(g):
        return g
    out = pd.DataFrame({"dataset": g["dataset"], "autoencoder": g["autoencoder"],
                        "gap RS − LS (pts)": [("–" if pd.isna(x) else _pts(x)) for x in g["gap"]]})
    for s in PROBE_SCORES:
        if f"probe_{s}" in g:
            out[s] = [f"{x:.3f}" for x in g[f"probe_{s}"]]
    cost = [f"{s:.0f} s" + ("" if pd.isna(c) or not c else f" ({100 * s / c:.1f} % of the pair's study)")
            for s, c in zip(g["probe_seconds"], g["study_seconds"])]
    out["probe cost"] = cost
    return out
