"""The experiment drivers in benchmarks/ (ISIC-8 x TAEF2 arms, aggregation from rows): pure-logic checks, and
the recorded rows (benchmarks/isic_taef2/rows/*.json, benchmarks/shared-data/rows.csv) against the tables
published from them, recomputed here with numpy."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import sys
from argparse import Namespace
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
ISIC_ROWS = BENCH / "isic_taef2" / "rows"            # 5 arms x 5 folds, one JSON per run
ISIC_RESULTS = BENCH / "isic_taef2" / "results.md"
SHARED_ROWS = BENCH / "shared-data" / "rows.csv"     # 72 result + 4 fidelity + 4 probe rows (gap protocol)
OLD_SHARED_ROWS = BENCH / "isic_taef2" / "shared-data-2026-11-22-rows.csv"  # the superseded 3-epoch study
SHARED_REPORT = BENCH / "shared-data" / "report.md"
# arm -> (space, variant) of its rows
ISIC_ARMS = {"IS": ("image", "plain"), "RS": ("recon", "plain"), "LS": ("latent", "plain"),
             "LS+noise": ("latent", "noise-conditioned"), "LS+distill": ("latent", "distilled")}
N_IMAGES = {"isic_skin8_64": 2118, "busi_128": 780, "pneumoniamnist_28": 5856,
            "breastmnist_28": 780}  # = the fidelity rows' n


def _load(name: str, path: Path):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def agg():
    return _load("isic_aggregate", BENCH / "isic_taef2" / "aggregate.py")


@pytest.fixture(scope="module")
def driver():
    return _load("isic_run", BENCH / "isic_taef2" / "run.py")


def _row(arm, fold, bacc, auc, mcc):
    return {"arm": arm, "fold": fold, "variant": "plain", "bacc": bacc, "auc": auc, "mcc": mcc, "acc": bacc,
            "epochs": 6, "train_seconds": 100.0 + fold, "bench": {"cpu_seconds": 10.0}, "model": "resnet18"}


def test_summary_equals_hand_computed_mean_and_sample_std(agg):
    rows = [_row("IS", 0, 0.5, 0.8, 0.4), _row("IS", 1, 0.7, 0.9, 0.6), _row("IS", 2, 0.6, 0.7, 0.2),
            _row("LS", 0, 0.3, 0.6, 0.1)]
    s = {line["arm"]: line for line in agg.summarise(rows)}
    assert list(s) == ["IS", "LS"]  # paper order, arms without rows left out
    # mean (0.5+0.7+0.6)/3 = 0.6; sample std sqrt(((-.1)^2 + .1^2 + 0) / 2) = 0.1
    assert s["IS"]["bacc"][0] == pytest.approx(0.6) and s["IS"]["bacc"][1] == pytest.approx(0.1)
    # AUC: mean 0.8, std 0.1; MCC: mean 0.4, std sqrt((0 + .04 + .04) / 2) = 0.2
    assert s["IS"]["auc"] == pytest.approx((0.8, 0.1)) and s["IS"]["mcc"] == pytest.approx((0.4, 0.2))
    assert s["IS"]["folds"] == [0, 1, 2] and s["IS"]["cpu_seconds"] == 30.0
    assert s["LS"]["bacc"][0] == 0.3 and math.isnan(s["LS"]["bacc"][1])  # one fold: no std


def test_markdown_marks_incomplete_arms(agg):
    md = agg.to_markdown(agg.summarise([_row("IS", f, 0.5, 0.5, 0.0) for f in range(5)] + [_row("RS", 0, .5, .5, 0)]),
                         {"machine": {"cpu": "X"}, "versions": {"torch": "t"}})
    is_line = next(ln for ln in md.splitlines() if ln.startswith("| IS |"))
    rs_line = next(ln for ln in md.splitlines() if ln.startswith("| RS |"))
    assert "incomplete" not in is_line and "0.500 ± 0.000" in is_line
    assert "(incomplete)" in rs_line and "nan" in rs_line


def test_distilled_arm_uses_the_recon_run_of_its_own_fold_as_teacher(driver, tmp_path):
    a = Namespace(image_model="resnet18", latent_model="convnext_tiny")
    args = driver.arm_args("LS+distill", 3, tmp_path, a)
    teacher = Path(args[args.index("--teacher") + 1])
    assert teacher == driver.run_dir("RS", 3, tmp_path)
    assert driver.arm_args("RS", 3, tmp_path, a)[:4] == ["--ae", "taef2", "--space", "recon"]
    assert "--noise-cond" in driver.arm_args("LS+noise", 0, tmp_path, a)
    assert driver.ARMS.index("RS") < driver.ARMS.index("LS+distill")  # teacher trains before its student
    assert "--ae" not in driver.arm_args("IS", 0, tmp_path, a)


def _table(md: str, header: str) -> list[list[str]]:
    """Cells of the markdown table whose header line starts with ``header`` (separator line skipped)."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header))
    out = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        out.append([c.strip() for c in ln.strip("|").split("|")])
    return out


def _pm(cell: str) -> tuple[float, float]:
    """'0.506 ± 0.025' (significance marks * and † after it ignored) -> (0.506, 0.025)."""
    m = re.fullmatch(r"([-+0-9.]+) ± ([0-9.]+)[*†]*", cell)
    assert m, cell
    return float(m[1]), float(m[2])


def _assert_mean_std(cell: str, values, decimals: int) -> None:
    """The printed mean ± sample std equals numpy's over ``values``, to the printed precision."""
    v = np.asarray(values, dtype=float)
    mean, std = _pm(cell)
    tol = 0.5 * 10**-decimals + 1e-9
    assert abs(mean - v.mean()) <= tol and abs(std - v.std(ddof=1)) <= tol, (cell, v.mean(), v.std(ddof=1))


def _check_result_row(r: dict, n_images: int) -> None:
    """One test-set evaluation: metrics in range and consistent with the per-class figures of the same row."""
    assert 0.0 <= r["bacc"] <= 1.0 and 0.0 <= r["auc"] <= 1.0 and -1.0 <= r["mcc"] <= 1.0 and 0.0 <= r["acc"] <= 1.0
    recall, auc = np.asarray(r["recall_per_class"], float), np.asarray(r["auc_per_class"], float)
    assert len(recall) == len(r["class_names"]) == len(auc) == r["auc_classes_used"] >= 2
    assert ((0 <= recall) & (recall <= 1)).all() and ((0 <= auc) & (auc <= 1)).all()
    assert r["bacc"] == pytest.approx(recall.mean(), abs=1e-12)  # balanced accuracy = mean per-class recall
    assert r["auc"] == pytest.approx(auc.mean(), abs=1e-12)      # macro one-vs-rest AUC
    assert r["acc"] * r["n_test"] == pytest.approx(round(r["acc"] * r["n_test"]), abs=1e-6)  # a count of hits
    assert r["n_train"] + r["n_val"] + r["n_test"] == n_images


def test_recorded_rows_are_complete_runs(agg):
    """Every row the driver recorded is a finished ISIC-8 x TAEF2 run with metrics in range: all 25 (5 arms x
    5 folds) are there, and each is consistent with its own per-class recall and AUC."""
    files = sorted(ISIC_ROWS.glob("*.json"))
    assert len(files) == 25, f"expected 25 rows in {ISIC_ROWS}, found {len(files)}"
    rows = agg.load_rows(ISIC_ROWS)
    assert rows == [json.loads(f.read_text()) for f in files]  # what the aggregator reads
    for f, r in zip(files, rows):
        assert f.name == f"{r['arm'].replace('+', '_')}-fold{r['fold']}.json"
        assert r["dataset"] == "isic_skin8_64" and r["k"] == 5 and 0 <= r["fold"] < 5
        assert 0.0 <= r["bacc"] <= 1.0 and 0.0 <= r["auc"] <= 1.0 and -1.0 <= r["mcc"] <= 1.0
        assert (r["space"] == "image") == (r["arm"] == "IS") and r["pretrained"] is False
        assert (r["space"], r["variant"]) == ISIC_ARMS[r["arm"]]
        _check_result_row(r, N_IMAGES["isic_skin8_64"])
        assert r["epochs"] == r["max_epochs"] == 5
        assert json.dumps(r)  # serialisable as written
    assert sorted((r["arm"], r["fold"]) for r in rows) == sorted((a, f) for a in ISIC_ARMS for f in range(5))
    for arm in ISIC_ARMS:  # k-fold: every image is tested exactly once per arm
        assert sum(r["n_test"] for r in rows if r["arm"] == arm) == N_IMAGES["isic_skin8_64"]


def test_results_md_table_equals_numpy_over_the_rows():
    """The table in isic_taef2/results.md: mean ± sample std per arm, recomputed from the rows with numpy."""
    rows = [json.loads(f.read_text()) for f in sorted(ISIC_ROWS.glob("*.json"))]
    table = _table(ISIC_RESULTS.read_text(), "| arm | variant | folds | bACC |")
    assert [line[0] for line in table] == list(ISIC_ARMS)
    for arm, variant, folds, bacc, auc, mcc, acc, epochs, secs in table:
        sel = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["fold"])
        assert len(sel) == 5 and folds == "0,1,2,3,4" and variant == ISIC_ARMS[arm][1]
        for cell, key, d in ((bacc, "bacc", 3), (auc, "auc", 3), (mcc, "mcc", 3), (acc, "acc", 3),
                             (epochs, "epochs", 1), (secs, "train_seconds", 0)):
            _assert_mean_std(cell, [r[key] for r in sel], d)


def _shared_rows(path: Path = SHARED_ROWS) -> list[dict]:
    """rows.csv as dicts: numbers as numbers, JSON lists as lists, empty cells as None."""
    def parse(v: str):
        if v == "":
            return None
        if v[0] in "[{":
            return json.loads(v)
        try:
            return float(v)
        except ValueError:
            return v

    with path.open(newline="") as fh:
        return [{k: parse(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _shared_cells(rows) -> dict:
    cells = defaultdict(list)
    for r in (r for r in rows if r["kind"] == "result"):
        cells[(r["dataset"], r["autoencoder"], r["space"], r["variant"])].append(r)
    return cells


def test_shared_data_rows_are_complete_and_consistent():
    """shared-data/rows.csv (README): 4 datasets x 6 cells (IS, RS, LS, the IS baseline, IS/RS matched) x 3 folds,
    every row consistent with its own per-class figures, every image tested once per cell, all by one code version,
    converged flags as the README states (69 of 72)."""
    assert SHARED_ROWS.is_file() and SHARED_ROWS.stat().st_size > 0
    rows = _shared_rows()
    kinds = defaultdict(int)
    for r in rows:
        kinds[r["kind"]] += 1
    assert dict(kinds) == {"fidelity": 4, "probe": 4, "result": 72}
    for r in rows:
        if r["kind"] == "fidelity":  # PSNR/SSIM over every image of the dataset
            assert r["n"] == N_IMAGES[r["dataset"]] and 0 < r["ssim_mean"] <= 1 and r["psnr_mean"] > 0
    results = [r for r in rows if r["kind"] == "result"]
    assert len({r["code_version"] for r in results}) == 1
    for r in results:
        _check_result_row(r, N_IMAGES[r["dataset"]])
        assert r["k"] == 3 and r["pretrained"] == "False" and r["epochs"] <= 40
        # the baseline recipe runs its one-cycle schedule to the end; every other cell stops at its own point
        assert r["until"] == ("epochs" if r["variant"] == "baseline" else "converged")
        assert (r["autoencoder"] == "none") == (r["space"] == "image" and r["variant"] != "matched")
    assert sum(r["converged"] in ("True", True) for r in results) == 69
    cells = _shared_cells(rows)
    assert len(cells) == 24
    for key, sel in cells.items():
        assert sorted(r["fold"] for r in sel) == [0, 1, 2], key
        assert sum(r["n_test"] for r in sel) == N_IMAGES[key[0]], key


def test_shared_data_tables_equal_numpy_and_scipy_over_rows_csv():
    """report.md's main table (mean ± std per cell) and its paired tests (per-fold differences, the Nadeau–Bengio
    corrected t and its p from SciPy's t distribution) recomputed from rows.csv; and the re-run table in
    isic_taef2/results.md from the superseded study's rows."""
    from scipy import stats

    cells = _shared_cells(_shared_rows())
    space = {"IS": "image", "RS": "recon", "LS": "latent"}
    main_table = _table(SHARED_REPORT.read_text(), "| dataset | autoencoder | space | bACC |")
    assert len(main_table) == 12
    for ds, ae, sp, bacc, auc, mcc, n, converged in main_table:
        sel = cells[(ds, "none" if ae == "–" else ae, space[sp], "plain")]
        assert len(sel) == int(n) == 3 and converged == "3/3"
        for cell, key in ((bacc, "bacc"), (auc, "auc"), (mcc, "mcc")):
            _assert_mean_std(cell.rstrip("*†≈§"), [r[key] for r in sel], 3)

    tests = _table(SHARED_REPORT.read_text(), "| dataset | autoencoder | comparison | J | mean diff |")
    assert sorted(t[2] for t in tests) == ["image-recon"] * 4 + ["recon-latent"] * 4
    for ds, ae, comparison, j, diff, _ci, ratio, t, p, *_ in tests:
        a, b = comparison.split("-")
        bacc = {sp: {r["fold"]: r["bacc"] for r in cells[(ds, "none" if sp == "image" else ae, sp, "plain")]}
                for sp in (a, b)}
        d = np.array([bacc[a][f] - bacc[b][f] for f in range(3)])  # paired on fold
        n_test = np.mean([r["n_test"] for r in cells[(ds, "none", "image", "plain")]])
        n_train = np.mean([r["n_train"] for r in cells[(ds, "none", "image", "plain")]])
        assert j == "3" and abs(float(ratio) - n_test / n_train) <= 0.0005 + 1e-9
        t_nb = d.mean() / np.sqrt((1 / 3 + n_test / n_train) * d.var(ddof=1))
        assert abs(float(diff) - d.mean()) <= 0.0005 + 1e-9 and abs(float(t) - t_nb) <= 0.005 + 1e-9
        assert float(p) == pytest.approx(2 * stats.t.sf(abs(t_nb), df=2), rel=5e-3, abs=5e-4)

    old = _shared_cells(_shared_rows(OLD_SHARED_ROWS))
    rerun = _table(ISIC_RESULTS.read_text(), "| arm | bACC | AUC | MCC | mean train s")
    assert len(rerun) == 5
    for (arm, bacc, auc, mcc, secs), key in zip(rerun, ISIC_ARMS):
        assert arm.startswith(key.replace("+", " + ") if "+" in key else key), (arm, key)
        sp, variant = ISIC_ARMS[key]
        sel = old[("isic_skin8_64", "none" if sp == "image" else "taef2", sp, variant)]
        assert len(sel) == 5
        for cell, m in ((bacc, "bacc"), (auc, "auc"), (mcc, "mcc")):
            _assert_mean_std(cell, [r[m] for r in sel], 3)
        assert abs(float(secs) - np.mean([r["train_seconds"] for r in sel])) <= 0.5


def test_seg_condition_pairs_by_id():
    """benchmarks/seg_condition.py: images of one id move together — the per-image mean difference is reported, the
    CI and Wilcoxon's p are taken over per-id means (computed by hand here)."""
    from scipy.stats import wilcoxon

    sc = _load("seg_condition", BENCH / "seg_condition.py")
    a = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.6])
    b = np.array([0.4, 0.3, 0.2, 0.6, 0.7, 0.5])
    groups = np.array([7, 7, 7, 3, 3, 5])      # per-id differences: id 7 +0.5, id 3 -0.5, id 5 +0.1
    out = sc.paired(a, b, groups)
    assert out["groups"] == 3
    assert out["mean_diff"] == pytest.approx((3 * 0.5 - 2 * 0.5 + 0.1) / 6)
    assert out["p_wilcoxon"] == pytest.approx(wilcoxon([-0.5, 0.1, 0.5]).pvalue)
    lo, hi = out["ci"]
    assert -0.5 <= lo <= (0.5 - 0.5 + 0.1) / 3 <= hi <= 0.5  # a bootstrap of three per-id means stays inside them
    same = sc.paired(a, a, groups)
    assert same["mean_diff"] == 0 and same["p_wilcoxon"] == 1.0 and same["ci"] == [0.0, 0.0]
