"""Probe scores: equivariance, spectral and sensitivity measures on hand-made encoders with known answers; the
probes' features and balanced accuracies against scikit-learn; `latentgap probe` end to end on TAEF2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score

from latentgap.cli import main
from latentgap.data import make_splits, open_dataset
from latentgap.errors import UserError
from latentgap.latents import ensure_cache
from latentgap.probe import (equivariance_error, high_frequency_energy, latent_sensitivity, probe_bacc,
                             space_features, unrelated_distance)


def _images(n=6, c=1, side=16, seed=0):
    return torch.rand(n, c, side, side, generator=torch.Generator().manual_seed(seed))


def _swap_error(z, perm):
    """|n(z[:, perm]) - n(z)| / |n(z)| per image, n the channel normalisation fitted on z (channel c's statistics
    apply to whatever sits in channel c)."""
    m, s = z.mean(dim=(0, 2, 3), keepdim=True), z.std(dim=(0, 2, 3), keepdim=True)
    zn = (z - m) / s
    return (((z[:, perm] - m) / s - zn).flatten(1).norm(dim=1) / zn.flatten(1).norm(dim=1)).numpy()


def test_identity_encoder_is_equivariant_and_has_unit_sensitivity():
    x = _images()
    for t in ("hflip", "vflip", "shift"):
        assert np.allclose(equivariance_error(lambda v: v.clone(), x, t, downsample=1), 0, atol=1e-6), t
    assert np.allclose(latent_sensitivity(lambda v: v.clone(), x), 1.0, atol=1e-5)


def test_pixel_unshuffle_flip_error_is_the_subpixel_channel_swap():
    # pixel_unshuffle(x, 2) puts the 2x2 sub-pixels (dy, dx) into channels 2 dy + dx. Flipping the image swaps
    # dx and mirrors the grid, so encode(flip x) = flip(z[:, perm]) with perm = [1, 0, 3, 2]: the error is
    # |z[:, perm] - z| / |z| in normalised coordinates, computed here without the library.
    x = _images(n=5, side=16)
    enc = lambda v: F.pixel_unshuffle(v, 2)  # noqa: E731
    want = _swap_error(enc(x), [1, 0, 3, 2])
    got = equivariance_error(enc, x, "hflip", downsample=2)
    assert np.allclose(got, want, rtol=1e-5) and want.mean() > 1.0  # random pixels: about sqrt(2)
    assert np.allclose(equivariance_error(enc, x, "vflip", downsample=2), _swap_error(enc(x), [2, 3, 0, 1]), rtol=1e-5)
    # a shift by one latent cell (2 pixels) moves whole 2x2 blocks: exactly equivariant
    assert np.allclose(equivariance_error(enc, x, "shift", downsample=2), 0, atol=1e-6)


def test_shift_error_ignores_zero_padding_but_sees_absolute_position():
    # a padded conv encoder (x4 strided conv, then a 3x3 conv with zero padding) is shift-equivariant by whole cells
    # away from the image edge: its shift error must be 0 — the edge's zero padding is not the encoder's fault
    torch.manual_seed(0)
    enc_net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 4, stride=4), torch.nn.Conv2d(4, 4, 3, padding=1),
                                  torch.nn.Conv2d(4, 4, 3, padding=1))
    x = _images(n=4, side=32)
    with torch.no_grad():
        err = equivariance_error(lambda v: enc_net(v), x, "shift", downsample=4)
        assert np.allclose(err, 0, atol=1e-5)
        # plus a fixed positional map (as an absolute position embedding would add): no longer shift-equivariant
        pos = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(1))
        with_pos = lambda v: enc_net(v) + pos[..., :v.shape[-2] // 4, :v.shape[-1] // 4]  # noqa: E731
        assert equivariance_error(with_pos, x, "shift", downsample=4).mean() > 0.3
    enc = lambda v: F.avg_pool2d(v, 2)  # noqa: E731
    assert np.allclose(equivariance_error(enc, x, "shift", downsample=2), 0, atol=1e-6)


def test_unrelated_distance_pairs_other_images():
    x = _images(n=8)
    d = unrelated_distance(lambda v: v.clone(), x)
    assert d.shape == (8,) and np.all(d > 0.5)  # never compared with itself
    with pytest.raises(UserError):
        unrelated_distance(lambda v: v, x[:1])


def test_high_frequency_energy_hand_cases():
    i, j = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = ((-1.0) ** (i + j))[None, None].repeat(2, 3, 1, 1)
    smooth = torch.cos(2 * torch.pi * i / 16.0)[None, None].repeat(2, 3, 1, 1)  # frequency 1/16 < 0.25
    stripes = torch.cos(torch.pi * j.float() / 1.0)[None, None].repeat(2, 1, 1, 1)  # 0.5 cycles/cell
    assert high_frequency_energy(checker) == pytest.approx(1.0)
    assert high_frequency_energy(smooth) == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_energy(stripes) == pytest.approx(1.0)
    assert high_frequency_energy(torch.ones(2, 3, 8, 8)) == 0.0
    # mean power: checkerboard 1, cosine 1/2 (orthogonal), so 1 / 1.5 of the total is above the cut-off
    assert high_frequency_energy(smooth + checker) == pytest.approx(2 / 3, abs=1e-6)  # float32 input


def test_bad_transform_and_tiny_grid_are_refused():
    x = _images(side=4)
    with pytest.raises(UserError, match="unknown transform"):
        equivariance_error(lambda v: v, x, "rot45", downsample=1)
    with pytest.raises(UserError, match="too small"):
        equivariance_error(lambda v: F.avg_pool2d(v, 4), x, "shift", downsample=4)


@pytest.fixture(scope="module")
def probe_setup(tmp_path_factory, shared_data):
    ds, root = open_dataset("breastmnist_28", resize=32), tmp_path_factory.mktemp("root")
    cache = ensure_cache(ds, "taef2", root, batch_size=64, device="cpu")
    return ds, cache, make_splits(ds, k=3, seed=0), root


def test_probe_features_and_bacc_match_scikit_learn(probe_setup):
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ds, cache, sp, _ = probe_setup
    f = sp.folds[1]
    z = space_features("latent", ds, cache, sp, 1, "train")
    mean, std = cache.fold_stats(sp, 1)
    raw = np.asarray(cache.latents[f.train], np.float32)
    assert np.allclose(z, ((raw - mean[None, :, None, None]) / std[None, :, None, None]).reshape(len(raw), -1), atol=1e-5)
    y = np.asarray(ds.labels)
    r = probe_bacc("latent", "linear", ds, cache, sp, folds=[1])
    ref = make_pipeline(StandardScaler(), PCA(128, svd_solver="randomized", random_state=0), StandardScaler(),
                        LogisticRegression(class_weight="balanced", max_iter=2000)).fit(z, y[f.train])
    zt = space_features("latent", ds, cache, sp, 1, "test")
    assert r["bacc"] == pytest.approx(balanced_accuracy_score(y[f.test], ref.predict(zt)))
    img = probe_bacc("image", "knn", ds, cache, sp)
    assert len(img["bacc_folds"]) == 3 and 0.5 < img["bacc"] <= 1.0  # above chance on real ultrasound


def test_probe_command_end_to_end(tmp_path, probe_setup, capsys):
    out = tmp_path / "probe.json"  # the fixture's root: its cache is reused, as a study's would be
    main(["probe", "--data", "breastmnist_28", "--resize", "32", "--ae", "taef2", "--root", str(probe_setup[3]),
          "--images", "24", "--skip", "knn", "--out", str(out), "--device", "cpu"])
    text = capsys.readouterr().out
    flat = " ".join(text.split())  # the packaged validation (benchmarks/probe_validation.py --install) is printed
    assert "equiv_hflip" in text and "Validation (16 autoencoder x dataset pairs" in flat
    assert "No score predicts the gap well enough to stand in for a study" in flat
    row = json.loads(out.read_text())[0]
    s = row["scores"]
    assert row["autoencoder"] == "taef2" and row["images"] == 24 and "knn_latent" not in s
    assert s["linear_gap"] == pytest.approx(s["linear_recon"] - s["linear_latent"])
    assert 0 < s["equiv_shift"] < s["equiv_hflip"]  # TAEF2: closer to shift- than to flip-equivariant
    assert 0 < s["hf_energy"] < 1 and s["sensitivity"] > 0
    with pytest.raises(SystemExit) as e:
        main(["probe", "--data", "breastmnist_28", "--ae", "taef2", "--skip", "bogus"])
    assert e.value.code == 2


PROBE_SPEC = dict(name="probe", datasets=["phantom:n=60,size=32,classes=2,imbalance=1",
                                          "phantom:n=60,size=32,classes=2,imbalance=1,feature=coarse"],
                  autoencoders=["taef2"], k=3, seeds=[0], baseline_check=False, spaces=["recon", "latent"],
                  train={"epochs": 1, "batch_size": 16, "pretrained": "false", "drw_switch_epoch": None},
                  space_train={"recon": {"model": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}},
                               "latent": {"model": "convnext_atto", "model_kwargs": {"dims": [8, 16, 32, 64]}}},
                  cache={"dtype": "float32"}, device="cpu", executor={"kind": "local", "workers": 1}, examples=0,
                  probe=16)


def test_grid_adds_one_probe_task_per_pair():
    from latentgap.study import spec_from_dict
    from latentgap.study.grids import classification_grid

    tasks = classification_grid(spec_from_dict(PROBE_SPEC))
    probes = [t for t in tasks if t.kind == "probe"]
    pairs = {t.hash for t in tasks if t.kind == "prepare"}
    assert len(probes) == 2 and {t.needs["pair"] for t in probes} == pairs and all(t.config["images"] == 16 for t in probes)
    without = classification_grid(spec_from_dict({**PROBE_SPEC, "probe": False}))
    assert {t.hash for t in without} == {t.hash for t in tasks if t.kind != "probe"}  # nothing else moves


@pytest.mark.usefixtures("one_thread")
def test_study_probe_rows_and_report_section(tmp_path):
    from latentgap.reports import build_report
    from latentgap.reports.build import load_rows
    from latentgap.study import run_study, spec_from_dict

    summary = run_study(spec_from_dict(PROBE_SPEC), tmp_path, echo=lambda *_: None)
    assert summary.ok, summary
    rows = load_rows(tmp_path)
    pr = rows[rows["kind"] == "probe"]
    assert len(pr) == 2 and set(pr["probe_images"]) == {16} and (pr["probe_seconds"] > 0).all()
    assert pr["probe_linear_gap"].to_numpy() == pytest.approx((pr["probe_linear_recon"] - pr["probe_linear_latent"]).to_numpy())
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Probe scores beside the measured gap" in md
    section = md.split("## Probe scores beside the measured gap")[1].split("\n## ")[0]
    res = rows[rows["kind"] == "result"]
    for ds, g in res.groupby("dataset"):
        rec = g[g["space"] == "recon"].set_index("fold")["bacc"]
        lat = g[g["space"] == "latent"].set_index("fold")["bacc"]
        gap = 100 * float((rec - lat.loc[rec.index]).mean())
        prep = rows[(rows["kind"] == "fidelity") & (rows["dataset"] == ds)]["task_seconds"].sum()
        share = 100 * float(pr[pr["dataset"] == ds]["probe_seconds"].iloc[0]) / (float(g["train_seconds"].sum()) + prep)
        line = next(ln for ln in section.splitlines() if ln.startswith(f"| {ds} |"))
        assert f"| {gap:.1f} |" in line and f"({share:.1f} % of the pair's study)" in line
    assert "probe_vs_gap" in section  # the figure (2 pairs)


def _validation_rows(gaps: dict, scores: dict, seconds: float = 10.0, per_fold: bool = False) -> pd.DataFrame:
    """Rows of a fake study: per dataset, an image cell and RS / LS cells on 3 folds whose RS - LS is gaps[ds],
    and one probe row with the score scores[ds] (per_fold: one per fold, scores[ds] -/+ 0.01 and scores[ds])."""


    rows = []
    for ds, gap in gaps.items():
        for fold in range(3):
            base = dict(kind="result", dataset=ds, variant="plain", fold=fold, seed=0, split_seed=0, k=3,
                        n_train=100, n_test=50, converged=True, train_seconds=seconds, splits_digest="d",
                        image_size=[32, 32], views=["identity"])
            rows.append({**base, "autoencoder": "none", "space": "image", "bacc": 0.8})
            rows.append({**base, "autoencoder": "ae", "space": "recon", "bacc": 0.7 + 0.01 * fold})
            rows.append({**base, "autoencoder": "ae", "space": "latent", "bacc": 0.7 + 0.01 * fold - gap})
        for d in ((-0.01, 0.0, 0.01) if per_fold else (0.0,)):
            rows.append(dict(kind="probe", dataset=ds, autoencoder="ae", probe_score=scores[ds] + d, probe_seconds=1.5,
                             probe_linear_gap=scores[ds] + d, probe_seconds_linear=0.3))
    return pd.DataFrame(rows)


def test_validation_rho_ci_and_compute_fraction():
    from scipy.stats import spearmanr

    from latentgap.probe import pair_table, spearman_ci, validation_table

    gaps = {f"d{i}": g for i, g in enumerate([0.01, 0.05, 0.02, 0.10, 0.07, 0.0])}
    noisy = {f"d{i}": s for i, s in enumerate([0.2, 0.4, 0.5, 0.9, 0.6, 0.1])}
    pairs = pair_table(_validation_rows(gaps, noisy))
    assert len(pairs) == 6 and pairs["converged"].all()
    assert pairs.set_index("dataset")["gap"].to_dict() == pytest.approx(gaps)
    # the pair's study compute: 3 RS + 3 LS + 3 IS cells of 10 s
    assert set(pairs["study_seconds"]) == {90.0}
    v = validation_table(pairs, n_boot=500).set_index("score").loc["score"]
    want = spearmanr(list(noisy.values()), list(gaps.values())).statistic
    assert v["rho_gap"] == pytest.approx(want) and v["rho_gap_lo"] <= want <= v["rho_gap_hi"]
    assert v["rho_latent"] == pytest.approx(spearmanr(list(noisy.values()), [0.71 - g for g in gaps.values()]).statistic)
    assert v["compute_fraction"] == v["probe_fraction"] == pytest.approx(1.5 / 90)  # no timed family: the probe
    lin = validation_table(pairs, n_boot=50).set_index("score").loc["linear_gap"]
    assert lin["compute_fraction"] == pytest.approx(0.3 / 90) and lin["probe_fraction"] == pytest.approx(1.5 / 90)
    # an autoencoder trained per fold has a probe per fold: scores averaged, seconds summed
    per_fold = pair_table(_validation_rows(gaps, noisy, per_fold=True))
    assert per_fold["probe_score"].to_numpy() == pytest.approx(list(noisy.values()))
    assert set(per_fold["probe_seconds"]) == {4.5} and per_fold["probe_seconds_linear"].to_numpy() == pytest.approx([0.9] * 6)
    with pytest.raises(UserError, match="at least 3"):
        validation_table(pairs.iloc[:2])
    with pytest.raises(UserError, match="no probe rows"):
        pair_table(_validation_rows(gaps, noisy).query("kind != 'probe'"))
    rho, lo, hi = spearman_ci(np.arange(8), np.arange(8) ** 2, n_boot=200)
    assert rho == 1.0 and lo == pytest.approx(1.0) and hi == pytest.approx(1.0)  # monotone: every resample agrees


def test_probe_subsampling_is_stratified_and_capped():
    from latentgap.probe.probes import _subsample

    y = np.array([0] * 900 + [1] * 90 + [2] * 10)
    idx = np.arange(1000)
    sub = _subsample(idx, y, 100, seed=0)
    assert len(sub) == 100 and np.bincount(y[sub]).tolist() == [90, 9, 1] and np.all(np.diff(sub) > 0)
    assert _subsample(idx[:50], y, 100, seed=0) is not None and len(_subsample(idx[:50], y, 100, seed=0)) == 50


def test_multilabel_dataset_gets_the_geometric_measures_only(tmp_path, capsys):
    main(["probe", "--data", "phantom:n=120,size=32,classes=3,multilabel=1,imbalance=2", "--ae", "taef2", "--root", str(tmp_path),
          "--images", "8", "--out", str(tmp_path / "p.json"), "--device", "cpu"])
    assert "linear and k-NN probes (single-label) were skipped" in " ".join(capsys.readouterr().out.split())
    s = json.loads((tmp_path / "p.json").read_text())[0]["scores"]
    assert "linear_latent" not in s and {"equiv_hflip", "equiv_shift", "hf_energy", "sensitivity"} <= set(s)


def test_probe_prints_the_packaged_validation(tmp_path, monkeypatch):
    import latentgap.cli.probe as cp

    monkeypatch.setattr(cp, "VALIDATION_FILE", tmp_path / "missing.json")
    assert cp._validation_text() == cp.VALIDATION
    rec = {"source": "benchmarks/probe_validation.md", "n_pairs": 14,
           "validation": [{"score": "linear_gap", "rho_gap": 0.61, "rho_gap_lo": 0.2, "rho_gap_hi": 0.85,
                           "rho_latent": -0.3, "rho_latent_lo": -0.7, "rho_latent_hi": 0.25, "compute_fraction": 0.012}]}
    (tmp_path / "v.json").write_text(json.dumps(rec))
    monkeypatch.setattr(cp, "VALIDATION_FILE", tmp_path / "v.json")
    text = cp._validation_text()
    assert "14 autoencoder x dataset pairs" in text and "linear_gap" in text
    assert "with the gap +0.61 [+0.20, +0.85]; with LS bACC -0.30 [-0.70, +0.25]" in text
    assert "(1.2 %)" in text
    assert "No score predicts the gap well enough" in text and "best: linear_gap, rho +0.61" in text
    assert "Best predictor of the latent classifier's bACC: linear_gap (rho -0.30 [-0.70, +0.25])" in text
    rec["validation"][0].update(rho_gap=0.85, rho_gap_lo=0.6, rho_gap_hi=0.95)  # a validated score says so
    (tmp_path / "v.json").write_text(json.dumps(rec))
    assert "Best predictor of the gap: linear_gap (rho +0.85)." in cp._validation_text()
