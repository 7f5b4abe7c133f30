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


def main() -> None:
    from latentgap.probe import pair_table, validation_table
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

    pairs = pd.concat([pair_table(rows).assign(study=name) for rows, name in map(rows_of, args.studies)],
                      ignore_index=True)
    used = pairs if args.include_unconverged else pairs[pairs["converged"]]
    table = validation_table(used, n_boot=args.boot)
    out = {"command": "python benchmarks/probe_validation.py " + " ".join(sys.argv[1:]), "machine": machine(),
           "versions": versions(), "pairs": json.loads(pairs.to_json(orient="records")),
           "validation": json.loads(table.to_json(orient="records"))}
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
