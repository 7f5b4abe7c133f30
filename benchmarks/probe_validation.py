"""Validation of `latentgap probe`: each candidate score against the measured RS - LS gap of full, converged studies.

Reads the rows of studies that ran with ``probe: true`` (the presets ``probe-validation`` — 12 phantom pairs — and
``shared-data`` — 4 real pairs with TAEF2), builds one line per autoencoder x dataset pair (gap, LS bACC, probe
scores, compute) and, per score, Spearman's rho with the gap and with LS bACC with a 95 % bootstrap CI over pairs,
and the probe's compute as a fraction of the pair's study compute. Goal (issue): rho >= 0.8 at <= 5 % compute.

    python benchmarks/probe_validation.py --studies /work/runs/probe-validation benchmarks/shared-data/rows.csv

Each entry of ``--studies`` is a study folder (its ``rows/``) or a study's recorded ``rows.csv``.

Writes benchmarks/probe_validation.json, .md and .png (each score against the gap). Pairs with an unconverged cell
are listed and left out of the correlations unless --include-unconverged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402

HERE = Path(__file__).parent


SHORT_EPOCHS = (2, 3, 5, 8)


def _fold_gaps(res: pd.DataFrame, dataset: str, autoencoder: str) -> dict[int, float]:
    """RS - LS test bACC per fold of one pair's plain cells."""
    sub = res[(res["dataset"] == dataset) & (res["autoencoder"] == autoencoder)]
    by = sub.pivot_table(index="fold", columns="space", values="bacc")
    return {int(f): float(r["recon"] - r["latent"]) for f, r in by.iterrows()}


def short_curves(rows: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The "short learning curve" candidate, read back from the studies' own training curves: per pair, the best
    validation bACC of fold 0's RS cell minus its LS cell within the first E epochs (what an E-epoch run of the same
    recipe reports: under ``until: converged`` the schedule halves on plateaus, so it does not depend on the
    ceiling and an E-epoch run is the full run's prefix), its cost (E epochs of both cells over the pair's study
    seconds), and the gap measured on the *other* folds (the score must not share the fold it was read from)."""
    res = rows[(rows["kind"] == "result") & (rows["variant"] == "plain")]
    out = []
    for p in pairs.itertuples():
        cells = {}
        for space in ("recon", "latent"):
            c = res[(res["dataset"] == p.dataset) & (res["autoencoder"] == p.autoencoder) & (res["space"] == space)
                    & (res["fold"] == 0)].iloc[0]
            curve = c["curve"] if isinstance(c["curve"], dict) else json.loads(c["curve"])
            cells[space] = (pd.Series(curve["val_bacc"], dtype=float), float(c["seconds_per_epoch"]))
        gaps = _fold_gaps(res, p.dataset, p.autoencoder)
        row = {"dataset": p.dataset, "autoencoder": p.autoencoder,
               "gap_other_folds": float(pd.Series([g for f, g in gaps.items() if f != 0]).mean())}
        for e in SHORT_EPOCHS:
            row[f"short{e}"] = float(cells["recon"][0][:e].max() - cells["latent"][0][:e].max())
            row[f"short{e}_fraction"] = e * (cells["recon"][1] + cells["latent"][1]) / p.study_seconds
        out.append(row)
    return pd.DataFrame(out)


def noise_ceiling(rows: pd.DataFrame, pairs: pd.DataFrame) -> tuple[float, float]:
    """How well the measured gaps rank the pairs at all: mean Spearman rho between the per-fold gaps of two folds
    across pairs (r), and the rho a perfect predictor could reach against the 3-fold mean,
    sqrt(3 r / (1 + 2 r)) (Spearman–Brown)."""
    import itertools

    from scipy.stats import spearmanr

    res = rows[(rows["kind"] == "result") & (rows["variant"] == "plain")]
    g = pd.DataFrame([_fold_gaps(res, p.dataset, p.autoencoder) for p in pairs.itertuples()])
    r = float(pd.Series([spearmanr(g[a], g[b]).statistic for a, b in itertools.combinations(g.columns, 2)]).mean())
    return r, float((3 * r / (1 + 2 * r)) ** 0.5) if r > 0 else float("nan")


def main() -> None:
    from latentgap.probe import pair_table, spearman_ci, validation_table
    from latentgap.reports.build import load_rows
    from latentgap.reports.figures import probe_vs_gap
    from latentgap.reports.tables import PROBE_SCORES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", nargs="+", required=True)
    ap.add_argument("--include-unconverged", action="store_true")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--install", action="store_true", help="also write src/latentgap/probe/validation.json, "
                    "which `latentgap probe` prints")
    args = ap.parse_args()
    def rows_of(source: str) -> tuple[pd.DataFrame, str]:
        path = Path(source)
        if path.suffix == ".csv":  # a recorded study (benchmarks/<study>/rows.csv)
            return pd.read_csv(path), path.parent.name
        return load_rows(path), path.name

    sources = [rows_of(s) for s in args.studies]
    pairs = pd.concat([pair_table(rows).assign(study=name) for rows, name in sources], ignore_index=True)
    used = pairs if args.include_unconverged else pairs[pairs["converged"]]
    table = validation_table(used, n_boot=args.boot)
    every = pd.concat([rows for rows, _ in sources], ignore_index=True)
    short = short_curves(every, used)
    r_folds, ceiling = noise_ceiling(every, used)
    out = {"command": "python benchmarks/probe_validation.py " + " ".join(sys.argv[1:]), "machine": machine(),
           "versions": versions(), "pairs": json.loads(pairs.to_json(orient="records")),
           "validation": json.loads(table.to_json(orient="records")),
           "short_curves": json.loads(short.to_json(orient="records")),
           "noise_ceiling": {"fold_fold_rho": r_folds, "perfect_predictor_rho": ceiling}}
    (HERE / "probe_validation.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# `latentgap probe` validated against full studies", "",
             f"Command: `{out['command']}`. {len(used)} of {len(pairs)} pairs used (all cells converged"
             + (", or not" if args.include_unconverged else "") + ").", "",
             "Compute: the seconds of the score's own family (linear, k-NN, equivariance, spectral, sensitivity) on "
             "the study's cache, and of the whole probe, as a share of the pair's study (its RS and LS cells, the "
             "dataset's image cells, its cache and autoencoder trainings); median over pairs.", "",
             "| score | ρ with gap RS − LS [95 % CI] | ρ with LS bACC [95 % CI] | compute: score (whole probe) |",
             "|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.score} | {r.rho_gap:+.2f} [{r.rho_gap_lo:+.2f}, {r.rho_gap_hi:+.2f}] | {r.rho_latent:+.2f} "
                     f"[{r.rho_latent_lo:+.2f}, {r.rho_latent_hi:+.2f}] | {100 * r.compute_fraction:.2f} % "
                     f"({100 * r.probe_fraction:.2f} %) |")
    lines += ["", "| study | dataset | autoencoder | gap (pts) | LS bACC | converged |", "|---|---|---|---|---|---|"]
    for r in pairs.itertuples():
        lines.append(f"| {r.study} | {r.dataset} | {r.autoencoder} | {100 * r.gap:.1f} | {r.latent:.3f} | {r.converged} |")
    lines += ["", f"Noise ceiling: the per-fold gaps of two folds rank the {len(used)} pairs alike with Spearman ρ = "
              f"{r_folds:.2f} (mean over fold pairs), so even a perfect predictor would reach about ρ = {ceiling:.2f} "
              "against the 3-fold mean gap (Spearman–Brown)" + (": the ground truth is not what keeps the scores "
              "below 0.8." if ceiling >= 0.8 else ": the ground truth itself caps what any score can reach here."),
              "", "Short learning curve (a candidate read back from the studies' own curves, not yet a `latentgap "
              "probe` score): best validation bACC of fold 0's RS cell minus its LS cell within the first E epochs "
              "(an E-epoch run of the same recipe is the full run's prefix under `until: converged`), against the gap "
              "on folds 1–2, which the score never saw.", "",
              "| E epochs | ρ with gap on folds 1–2 [95 % CI] | compute (median, max share of the pair's study) |",
              "|---|---|---|"]
    for e in SHORT_EPOCHS:
        rho, lo, hi = spearman_ci(short[f"short{e}"], short["gap_other_folds"], args.boot)
        frac = short[f"short{e}_fraction"]
        lines.append(f"| {e} | {rho:+.2f} [{lo:+.2f}, {hi:+.2f}] | {100 * frac.median():.1f} %, {100 * frac.max():.1f} % |")
    lines += ["", f"Machine: {out['machine']}; scores and study seconds come from the studies' rows (their own "
              "machines). What it shows, and what limits it: docs/probe.md, \"What the scores rest on\"."]
    png = probe_vs_gap(used, PROBE_SCORES)  # the report's figure, over every pair used
    if png:
        (HERE / "probe_validation.png").write_bytes(png)
        lines += ["", "![each score against the measured gap, one point per pair](probe_validation.png)"]
    (HERE / "probe_validation.md").write_text("\n".join(lines) + "\n")
    if args.install:  # what `latentgap probe` prints as the validation its scores rest on
        pkg = HERE.parent / "src" / "latentgap" / "probe" / "validation.json"
        pkg.write_text(json.dumps({"source": "benchmarks/probe_validation.md", "n_pairs": int(len(used)),
                                   "validation": out["validation"]}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
