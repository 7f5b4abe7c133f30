"""``latentgap report STUDY_DIR``: rebuild the study report from its rows alone (no retraining).

Writes ``report.md`` (+ ``report_files/*.png``), one self-contained ``report.html`` (every image
embedded as a base64 PNG, no external assets) and ``rows.csv`` (all rows, one per line).
"""

from __future__ import annotations

import base64
import html
import json
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


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    images: list[tuple[str, bytes]] | None = None  # (name, png bytes)


def build_sections(rows: pd.DataFrame, study_dir: Path) -> list[Section]:
    res = S.results_only(rows)
    secs = []
    if "cell_kind" in rows and (rows["cell_kind"] == "synthetic").any():
        secs.append(Section("Warning", "Some rows come from the **synthetic** smoke-test cell (scikit-learn on "
                                       "synthetic features), not from trained classifiers. They test the pipeline "
                                       "and mean nothing about any autoencoder."))
    secs.append(Section("Main results", tables.MARK_LEGEND + " Mean ± std over folds and seeds.",
                        tables.main_table(rows)))
    secs.append(Section("Paired tests per autoencoder × dataset",
                        "Paired t-tests on bACC across folds and seeds (pairs matched on fold and seed); "
                        "recon-latent is the learnability gap; d_z = mean / sd of the differences.",
                        tables.tests_table(rows)))
    secs.append(Section("Across all autoencoder × dataset pairs",
                        "Wilcoxon signed-rank tests of the per-pair mean bACC; effect size: matched-pairs "
                        "rank-biserial correlation.", tables.across_table(rows)))
    secs.append(Section("Reconstruction fidelity", "PSNR and SSIM per image, mean ± std over all images.",
                        tables.fidelity_display(rows)))
    if (rows["kind"] == "autoencoder").any():
        secs.append(Section("Autoencoders trained by the study",
                            "Unsupervised (reconstruction + KL, no labels) on the images named in `data`; "
                            "PSNR on up to 512 of its training images.", ae_training_table(rows)))
    abl = tables.ablation_table(rows)
    if len(abl):
        secs.append(Section("Latent classifier ablation", "Latent-space variants with the RS classifier as reference.",
                            abl))
    gaps = S.gap_table(rows)
    png = figures.psnr_vs_gap(gaps) if len(gaps) else None
    if png:
        secs.append(Section("Fidelity vs. learnability gap", "One point per autoencoder × dataset pair.",
                            images=[("psnr_vs_gap", png)]))
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
    png = figures.noise_curves(noise_curves(rows))
    if png:
        secs.append(Section("Accuracy against noise level", "Noise-conditioned classifiers evaluated at noise levels "
                                                           "drawn from the diffusion forward process.",
                            images=[("noise_curves", png)]))
    meta = [f"{len(res)} result rows, {int((rows['kind'] == 'fidelity').sum())} fidelity rows"]
    if (rows["kind"] == "autoencoder").any():
        meta.append(f"{int((rows['kind'] == 'autoencoder').sum())} autoencoders trained by the study")
    for key in ("pretrained", "image_size", "epochs", "device"):
        if key in res and res[key].notna().any():
            meta.append(f"{key}: {', '.join(sorted(set(map(str, res[key].dropna()))))}")  # values may be lists
    secs.insert(0, Section("Study", "; ".join(meta) + "."))
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
        if s.table is not None:
            out.append(tables.to_markdown(s.table))
        for name, _ in s.images or []:
            out.append(f"![{name}]({files_dir}/{name}.png)\n")
    return "\n".join(out)


def render_html(title: str, secs: list[Section]) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in secs:
        out.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            out.append(f"<p>{html.escape(s.text).replace('**', '')}</p>")
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


def build_report(study_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Rebuild report.md, report.html and rows.csv of a study folder from its rows.

    Args:
        study_dir: folder written by ``latentgap study`` (holds ``rows/``).
        out_dir: where to write (default: the study folder itself).
    Returns:
        paths of the written files.
    """
    study_dir = Path(study_dir)
    out = Path(out_dir) if out_dir else study_dir
    rows = load_rows(study_dir)
    secs = build_sections(rows, study_dir)
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
