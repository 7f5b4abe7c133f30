"""``latentgap report STUDY_DIR``: rebuild the study report from its rows alone (no retraining).

Writes ``report.md`` (+ ``report_files/*.png``), one self-contained ``report.html`` (every image
embedded as a base64 PNG, no external assets) and ``rows.csv`` (all rows, one per line).
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from ..storage import atomic_write_bytes, atomic_write_text
from ..study import stats as S
from . import figures, tables

NOISE_KEYS = [f"acc_q{i}" for i in range(4)]  # accuracy per noise-level quartile (latentgap.train.loop)
_TESTS_TEXT = (
    "One paired difference per fold (and per split repeat), training seeds averaged within a fold first; "
    "J = number of differences. Default test: Nadeau–Bengio corrected resampled t-test, "
    "t = mean / √((1/J + n_test/n_train)·s²) with J − 1 df; the 95 % CI uses the same standard error; Holm over "
    "the table on the corrected p. p (plain t) and p (Wilcoxon) are the uncorrected paired t-test and the Wilcoxon "
    "signed-rank test of the same differences (with J differences Wilcoxon's p cannot go below 2/2^J, 0.0625 for "
    "5 folds). TOST p: two one-sided corrected t-tests against ±{margin} points, equivalent when below 0.05. "
    "recon-latent is the learnability gap. Flags: budget-limited (a cell did not converge), in-sample (the "
    "autoencoder was trained on the test images too).")
CURVE_COLUMNS = ["dataset", "autoencoder", "space", "fold", "seed", "epoch", "val_bacc", "converged"]


def load_rows(study_dir: str | Path) -> pd.DataFrame:
    """All rows in ``STUDY_DIR/rows/*.json`` (result and fidelity rows) as one DataFrame."""
    folder = Path(study_dir) / "rows"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise UserError(f"no result rows in '{folder}'", "run `latentgap study` first, or point at a study folder")
    recs = []
    for f in files:
        try:
            recs.append(json.loads(f.read_text()))
        except json.JSONDecodeError:
            raise UserError(f"row file '{f}' is not valid JSON", "delete it; `latentgap study` re-runs that cell") from None
    rows = pd.DataFrame(recs)
    if "kind" not in rows:
        rows["kind"] = "result"
    rows["kind"] = rows["kind"].fillna("result")
    for col in ("dataset", "autoencoder", "space", "variant"):
        if col not in rows:
            rows[col] = None
    rows["variant"] = rows["variant"].fillna("plain")
    return rows


def noise_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy per noise quartile over folds/seeds for each noise-conditioned classifier."""
    res = S.results_only(rows)
    have = [k for k in NOISE_KEYS if k in res]
    if not have:
        return pd.DataFrame(columns=["label", "quartile", "value", "metric"])
    res = res.dropna(subset=have, how="all")
    out = []
    for (ds, ae, sp, var), g in res.groupby(["dataset", "autoencoder", "space", "variant"], sort=True):
        for q, key in enumerate(NOISE_KEYS):
            if key in g and g[key].notna().any():
                out.append(dict(label=f"{ds} · {ae} · {var}", quartile=q, value=float(g[key].mean()),
                                metric="accuracy"))
    return pd.DataFrame(out, columns=["label", "quartile", "value", "metric"])


def ae_training_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per autoencoder the study trained (rows of kind "autoencoder")."""
    ae = rows[rows["kind"] == "autoencoder"]
    out = pd.DataFrame({
        "autoencoder": ae["autoencoder"], "data": ae["data"], "steps": ae["steps"].astype("Int64"),
        "images": ae.get("n_train_images", pd.Series(dtype=float)).astype("Int64"), "final loss": ae.get("final_loss", pd.Series(dtype=float)).round(4),
        "train PSNR (dB)": ae.get("train_sample_psnr_db", pd.Series(dtype=float)).round(2),
        "seconds": ae.get("ae_train_seconds", pd.Series(dtype=float)).round(0),
    })
    return out.sort_values(["autoencoder", "data"]).reset_index(drop=True)


def learning_curves(rows: pd.DataFrame) -> pd.DataFrame:
    """Validation bACC per epoch of every plain cell whose row has a ``curve`` (``{"epoch": [...],
    "val_bacc": [...], ...}``), long format; image cells appear under every autoencoder of their dataset."""
    res = S.results_only(rows)
    if "curve" not in res or not len(res):
        return pd.DataFrame(columns=CURVE_COLUMNS)
    res = S.broadcast_image_rows(res[res["variant"] == "plain"])
    out = []
    for r in res.itertuples():
        curve = r.curve
        if isinstance(curve, str):  # a CSV round trip stores it as JSON
            try:
                curve = json.loads(curve)
            except json.JSONDecodeError:
                continue
        if not isinstance(curve, dict) or not curve.get("val_bacc"):
            continue
        val = curve["val_bacc"]
        epochs = curve.get("epoch") or list(range(1, len(val) + 1))
        conv = S.flag(getattr(r, "converged", None))
        out.extend(dict(dataset=r.dataset, autoencoder=r.autoencoder, space=r.space, fold=r.fold,
                        seed=getattr(r, "seed", 0), epoch=e, val_bacc=v, converged=conv)
                   for e, v in zip(epochs, val) if v is not None)
    return pd.DataFrame(out, columns=CURVE_COLUMNS)


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    images: list[tuple[str, bytes]] | None = None  # (name, png bytes)
    bullets: list[str] | None = None  # markdown, one line each


def first_fold_images(rows: pd.DataFrame, kind: str, group: list[str], path_of, prefix: str) -> list[tuple[str, bytes]]:
    """``(name, png bytes)`` of the PNG ``path_of(row)`` names for the first fold of every ``group`` of rows of
    ``kind`` (missing files are skipped)."""
    out = []
    sel = rows[rows["kind"] == kind].sort_values(group + ["fold"]).drop_duplicates(group)
    for i, r in enumerate(sel.itertuples()):
        p = path_of(r)
        if p.is_file():
            out.append((f"{prefix}_{i}", p.read_bytes()))
    return out


def build_sections(rows: pd.DataFrame, study_dir: Path, margin: float = S.MARGIN) -> list[Section]:
    """The report's sections, in order: findings (one sentence per autoencoder x dataset), study, tables,
    figures. ``margin``: TOST equivalence margin in bACC (0.02 = 2 points)."""
    res = S.results_only(rows)
    secs = []
    if "code_version" in rows and rows["code_version"].nunique(dropna=False) > 1:
        counts = rows["code_version"].fillna("unrecorded").value_counts()
        secs.append(Section("Warning", "The rows of this study were made by more than one version of the code ("
                            + ", ".join(f"{n} rows by {v}" for v, n in counts.items())
                            + "); compare their numbers with care."))
    found = tables.findings(rows, margin)
    base = S.baseline_check(rows, margin=margin)
    for _, b in base[base["baseline_wins"]].iterrows():
        found.append(f"{b['dataset']}: the plain baseline recipe beats the study's image recipe by "
                     f"{100 * b['mean_diff']:.1f} pts (corrected p = {b['p']:.3f}) — the image and reconstruction "
                     "classifiers are under-fitted in this regime; change the recipe before reading the gap")
    if found:
        secs.append(Section("Findings", "bACC differences in points; equivalence by TOST within "
                                        f"±{tables.margin_pts(margin)} points; p from the Nadeau–Bengio corrected "
                                        "resampled t-test across folds (Holm-adjusted over the tests table in "
                                        "parentheses).", bullets=found))
    classification = len(res) > 0  # a segmentation-only study has no classifier rows
    if classification:
        secs.append(Section("Main results", tables.mark_legend(margin) + " Mean ± std over folds and seeds; "
                            "converged: cells whose training converged, of n.", tables.main_table(rows, margin)))
    if len(base):
        secs.append(Section("Baseline check", "The study's image-space recipe against a plain, strong recipe of the "
                            "same architecture and budget on the same folds (class-weighted cross-entropy, linear "
                            "head, one-cycle schedule); corrected paired test across folds. A gap measured against "
                            "an under-fitted baseline is not a gap.", tables.baseline_display(rows, margin)))
    matched = tables.matched_table(rows, margin)
    if len(matched):
        secs.append(Section("Architecture-matched control", "The latent cell's own ConvNeXt and recipe trained on "
                            "images and reconstructions too, behind a patch stem that maps them to the latent grid "
                            "(variant `matched`), paired on folds with the plain latent cells: a gap that stays "
                            "here is the space's, not the architecture's. Corrected paired test across folds.",
                            matched))
    png = figures.space_bars(S.space_means(rows))
    if png:
        secs.append(Section("Mean bACC per space", "Mean over folds (training seeds averaged within a fold first); "
                            "error bars: 95 % CI with the Nadeau–Bengio corrected standard error "
                            "√((1/J + n_test/n_train)·s²), as in the tests.", images=[("space_bars", png)]))
    if classification:
        secs.append(Section("Paired tests per autoencoder × dataset",
                            _TESTS_TEXT.format(margin=tables.margin_pts(margin)), tables.tests_table(rows, margin=margin)))
        secs.append(Section("Across all autoencoder × dataset pairs",
                            "Wilcoxon signed-rank tests of the per-pair mean bACC; effect size: matched-pairs "
                            "rank-biserial correlation.", tables.across_table(rows)))
        secs.append(Section("Reconstruction fidelity", "PSNR and SSIM per image, mean ± std over all images.",
                            tables.fidelity_display(rows)))
    if (rows["kind"] == "autoencoder").any():
        secs.append(Section("Autoencoders trained by the study",
                            "Unsupervised (reconstruction + KL, no labels) on the images named in `data`; "
                            "PSNR on up to 512 of its training images.", ae_training_table(rows)))
    syn = tables.synthesis_table(rows)
    if len(syn):
        secs.append(Section("Synthesis", "Per fold: the class-conditional latent diffusion generator trained on the "
                            "fold's training part, and the synthetic dataset it sampled (counts per class; acceptance "
                            "per class when filtered by the fold's latent classifier). Synthetic data is training "
                            "data only: it is never split or tested on.", syn))
    util = tables.utility_table(rows, margin)
    if len(util):
        secs.append(Section("Synthetic data: utility", "The same classifier, settings and folds trained on the real "
                            "training part (real arm: the study's plain cells), on the fold's synthetic dataset only "
                            "(tstr) or on both (augmented); always tested on the fold's real test part. With the fill plan (nothing of the "
                            "majority class is sampled) the tstr cells train on a second synthetic set of the fold, "
                            "sampled the same way with ratio 1 (the real training part's class counts). Corrected "
                            "paired test across folds; per-class recall in the table below it.", util))
    sev = tables.synth_eval_table(rows)
    if len(sev):
        gal = first_fold_images(rows, "synth-eval", ["dataset", "autoencoder"], lambda r: study_dir / str(r.gallery),
                                "synth_gallery")
        secs.append(Section("Synthetic data: fidelity", "Mean ± std over folds, against the fold's real training part "
                            "in two feature spaces (random: a seeded random ConvNet; classifier: the penultimate layer of "
                            "the fold's image cell, trained on its real training part): FD (unreliable when there are "
                            "fewer samples than twice the feature dimension — read KID then), KID, precision / recall / "
                            "density / coverage (k = 5).", sev))
        secs.append(Section("Synthetic data: privacy", "Copies: the share of synthetic samples closer to a training "
                            "sample than the 1 % quantile of held-out real samples' distances to the training part (≈ "
                            "0.01 for a generator of new images, 1 for a copier), per distance; median distance ratio: "
                            "median nearest-training distance of synthetic over held-out real samples (< 1: closer to "
                            "the training images than new real images are). Membership inference on the generator's "
                            "per-image denoising loss at fixed noise levels and draws (members: the fold's training "
                            "part; non-members: its test part): AUC 0.5 = no leak. Gallery: the closest synthetic / "
                            "training pairs of the first fold.", tables.privacy_table(rows), images=gal or None))
    seg = tables.seg_table(rows)
    if len(seg):
        ov = first_fold_images(rows, "seg", ["dataset", "method"], lambda r: study_dir / str(r.run_dir) / "overlays.png",
                               "seg_overlays")
        secs.append(Section("Segmentation", "Per dataset × method, mean ± std over folds (the same grouped folds for "
                            "every method). Dice / IoU *per image*: MONAI per-image values (an empty prediction on an "
                            "empty mask scores 1), mean over the test images; *global*: all test pixels pooled. HD95 "
                            "over images where both masks are non-empty. ECE / Brier of the mean probability map; "
                            "error AUROC: how well the std across samples predicts per-pixel errors (0.5 = no "
                            "information). Mask-AE ceiling: round-trip Dice of the fold's mask autoencoder, the best a "
                            "latent method can reach. Training: folds that early-stopped; a budget-limited fold reached the "
                            "epoch ceiling without an early stop (the learning rate anneals to zero there, so a flat "
                            "curve at the ceiling does not show convergence): possibly under-trained, not a finding. "
                            "vs U-Net: paired Nadeau–Bengio corrected t-test across folds. "
                            "Overlays (first fold, per dataset × method): image, ground truth, probability, confidence.",
                            seg, images=ov or None))
    abl = tables.ablation_table(rows)
    if len(abl):
        secs.append(Section("Latent classifier ablation", "Latent-space variants with the RS classifier as reference.",
                            abl))
    gaps = S.gap_table(rows)
    png = figures.psnr_vs_gap(gaps) if len(gaps) else None
    if png:
        secs.append(Section("Fidelity vs. learnability gap", "One point per autoencoder × dataset pair.",
                            images=[("psnr_vs_gap", png)]))
    probe = tables.probe_table(rows)
    if len(probe):
        png = figures.probe_vs_gap(tables.probe_gaps(rows), tables.PROBE_SCORES)
        secs.append(Section("Probe scores beside the measured gap", "`latentgap probe` on each pair's cache and the "
                            "study's folds (docs/probe.md): linear / k-NN probe balanced accuracy (`*_gap` = recon − "
                            "latent), flip and shift equivariance errors of the encoder, latent high-frequency energy, "
                            "noise sensitivity. Cost: the probe's seconds on the study's cache, and their share of the "
                            "pair's study (its plain RS and LS cells, the dataset's image cells, its cache and "
                            "autoencoder tasks). The scores are candidates, not a validated predictor; ρ in the figure is "
                            "Spearman's over this study's pairs only.", probe,
                            images=[("probe_vs_gap", png)] if png else None))
    ex = []
    for i, f in enumerate(sorted((study_dir / "pairs").glob("*/examples.npz"))):
        with np.load(f) as z:
            title = f"{z['dataset']} · {z['autoencoder']}"
            ex.append((f"examples_{i}", figures.examples_grid(z["original"], z["recon"], title)))
    if ex:
        secs.append(Section("Originals, reconstructions and differences", "", images=ex))
    rec = tables.recall_table(rows)
    if len(rec):
        secs.append(Section("Per-class recall", "Mean over folds and seeds.", rec))
    curves = learning_curves(rows)
    lc = [(f"learning_curves_{i}", figures.learning_curves(g, ds))
          for i, (ds, g) in enumerate(curves.groupby("dataset", sort=True))]
    if lc:
        secs.append(Section("Validation learning curves", "Validation bACC per epoch, one line per cell (fold × "
                            "seed); dashed with a cross: the cell did not converge.", images=lc))
    png = figures.noise_curves(noise_curves(rows))
    if png:
        secs.append(Section("Accuracy against noise level", "Noise-conditioned classifiers evaluated at noise levels "
                                                           "drawn from the diffusion forward process.",
                            images=[("noise_curves", png)]))
    meta = [f"{len(res)} result rows, {int((rows['kind'] == 'fidelity').sum())} fidelity rows"]
    if (rows["kind"] == "autoencoder").any():
        meta.append(f"{int((rows['kind'] == 'autoencoder').sum())} autoencoders trained by the study")
    for key in ("pretrained", "image_size", "device"):
        if key in res and res[key].notna().any():
            meta.append(f"{key}: {', '.join(sorted(set(map(str, res[key].dropna()))))}")  # values may be lists
    if "epochs" in res and res["epochs"].notna().any():  # trained epochs (cells stop at their own point)
        lo, hi = int(res["epochs"].min()), int(res["epochs"].max())
        meta.append(f"epochs trained: {lo}" + (f"–{hi}" if hi > lo else ""))
    # the report opens with the findings, then what was run
    first = sum(1 for sec in secs[:2] if sec.title in ("Warning", "Findings"))
    secs.insert(first, Section("Study", "; ".join(meta) + "."))
    return secs


_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
        "th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f0f0f0}"
        "img{max-width:100%;display:block;margin:1em 0}")


def render_markdown(title: str, secs: list[Section], files_dir: str) -> str:
    out = [f"# {title}\n"]
    for s in secs:
        out.append(f"## {s.title}\n")
        if s.text:
            out.append(s.text + "\n")
        if s.bullets:
            out.append("\n".join(f"- {b}" for b in s.bullets) + "\n")
        if s.table is not None:
            out.append(tables.to_markdown(s.table))
        for name, _ in s.images or []:
            out.append(f"![{name}]({files_dir}/{name}.png)\n")
    return "\n".join(out)


def inline_html(text: str) -> str:
    """The markdown that section texts use, as HTML: ``**bold**``, backtick code and escaped asterisks ``\\*``
    (so that "\\* / \\*\\* / \\*\\*\\*" shows as "* / ** / ***")."""
    s = html.escape(text).replace("\\*", "\x00")
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return s.replace("\x00", "*")


def render_html(title: str, secs: list[Section]) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in secs:
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            out.append(f"<p>{inline_html(s.text)}</p>")
        if s.bullets:
            out.append("<ul>" + "".join(f"<li>{inline_html(b)}</li>" for b in s.bullets) + "</ul>")
        if s.table is not None:
            out.append(s.table.to_html(index=False, border=0, classes="lg-table") if len(s.table) else "<p>(no rows)</p>")
        for name, png in s.images or []:
            b64 = base64.b64encode(png).decode()
            out.append(f"<img alt='{name}' src='data:image/png;base64,{b64}'>")
    out.append("</body></html>")
    return "\n".join(out)


def _study_name(study_dir: Path) -> str:
    """The spec's ``name`` from the study folder's ``study.yaml``, else the folder's name."""
    import yaml

    try:
        name = yaml.safe_load((study_dir / "study.yaml").read_text()).get("name")
    except (OSError, AttributeError, yaml.YAMLError):
        name = None
    return str(name) if name else study_dir.resolve().name


def build_report(study_dir: str | Path, out_dir: str | Path | None = None, margin: float = S.MARGIN) -> dict[str, Path]:
    """Rebuild report.md, report.html and rows.csv of a study folder from its rows.

    Args:
        study_dir: folder written by ``latentgap study`` (holds ``rows/``).
        out_dir: where to write (default: the study folder itself).
        margin: equivalence margin of the IS vs RS TOST, in bACC (0.02 = 2 points).
    Returns:
        paths of the written files.
    """
    study_dir = Path(study_dir)
    out = Path(out_dir) if out_dir else study_dir
    rows = load_rows(study_dir)
    secs = build_sections(rows, study_dir, margin)
    title = f"latentgap study report: {_study_name(study_dir)} ({time.strftime('%Y-%m-%d')})"
    files_dir = "report_files"
    for s in secs:
        for name, png in s.images or []:
            atomic_write_bytes(out / files_dir / f"{name}.png", png)
    paths = {"md": out / "report.md", "html": out / "report.html", "csv": out / "rows.csv"}
    atomic_write_text(paths["md"], render_markdown(title, secs, files_dir))
    atomic_write_text(paths["html"], render_html(title, secs))
    flat = rows.copy()
    for col in flat.columns:  # lists / dicts as JSON so the CSV round-trips
        if flat[col].map(lambda v: isinstance(v, (list, dict))).any():
            flat[col] = flat[col].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
    lead = [c for c in ["kind", *S.KEYS, "bacc", "auc", "mcc"] if c in flat]
    flat = flat[lead + sorted(c for c in flat.columns if c not in lead)]
    atomic_write_text(paths["csv"], flat.sort_values(lead[:7], kind="stable", na_position="first").to_csv(index=False))
    return paths
