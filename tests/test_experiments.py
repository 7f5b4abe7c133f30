"""The experiment drivers in benchmarks/ (ISIC-8 x TAEF2 arms, aggregation from rows): pure-logic checks."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from argparse import Namespace
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


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


def test_recorded_rows_are_complete_runs(agg):
    """Every row the driver recorded is a finished ISIC-8 x TAEF2 run with metrics in range."""
    rows = agg.load_rows()
    for r in rows:
        assert r["dataset"] == "isic_skin8_64" and r["k"] == 5 and 0 <= r["fold"] < 5
        assert 0.0 <= r["bacc"] <= 1.0 and 0.0 <= r["auc"] <= 1.0 and -1.0 <= r["mcc"] <= 1.0
        assert (r["space"] == "image") == (r["arm"] == "IS") and r["pretrained"] is False
        assert json.dumps(r)  # serialisable as written
