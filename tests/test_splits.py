"""Folds: disjoint and complete, stratified, grouped by patient, multi-label, official, and refused when mismatched."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latentgap.cli import main
from latentgap.data import Splits, load_or_make_splits, make_splits, open_dataset
from latentgap.errors import UserError


def _check_partition(s: Splits, n: int) -> None:
    tests = np.concatenate([f.test for f in s.folds])
    assert np.array_equal(np.sort(tests), np.arange(n))                 # every sample is test exactly once
    for f in s.folds:
        parts = [f.train, f.val, f.test]
        assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in parts)
        assert len(np.concatenate(parts)) == len(np.unique(np.concatenate(parts))) == n  # disjoint, covering


@pytest.mark.parametrize("k", [3, 5])
def test_kfold_is_a_stratified_partition(k):
    ds = open_dataset("phantom:n=1500,classes=4,imbalance=30,size=16")
    s = make_splits(ds, k=k, seed=3)
    assert s.protocol == "kfold" and s.k == k and len(s.folds) == k and s.fingerprint == ds.fingerprint()
    _check_partition(s, len(ds))
    counts = np.bincount(ds.labels, minlength=4)
    for f in s.folds:
        test_counts = np.bincount(ds.labels[f.test], minlength=4)
        assert np.all(np.abs(test_counts - counts / k) <= 1)            # within one sample of exact stratification
        train = np.concatenate([f.train, f.val])
        val_counts, tv_counts = np.bincount(ds.labels[f.val], minlength=4), np.bincount(ds.labels[train], minlength=4)
        assert np.all(np.abs(val_counts - 0.1 * tv_counts) <= 1) and np.all(val_counts >= 1)
    assert make_splits(ds, k=k, seed=3).digest() == s.digest() != make_splits(ds, k=k, seed=4).digest()


def test_patient_groups_are_never_split():
    ds = open_dataset("phantom:n=1200,classes=3,imbalance=10,size=16,patients=150")
    s = make_splits(ds, k=5)
    _check_partition(s, len(ds))
    pid = ds.patient_ids
    for f in s.folds:
        sets = [set(pid[p]) for p in (f.train, f.val, f.test)]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
        assert len(f.val) > 0
    # still stratified: tail-class share of each test fold close to the overall share
    share = np.mean(ds.labels == 2)
    for f in s.folds:
        assert abs(np.mean(ds.labels[f.test] == 2) - share) < 0.03


def test_multilabel_iterative_stratification_keeps_prevalence():
    ds = open_dataset("phantom:n=3000,classes=5,imbalance=20,multilabel=1,size=16")
    s = make_splits(ds, k=5)
    _check_partition(s, len(ds))
    prev = ds.labels.mean(0)
    for f in s.folds:
        assert np.all(np.abs(ds.labels[f.test].sum(0) - ds.labels.sum(0) / 5) <= 2)   # positives per label per fold
        assert np.allclose(ds.labels[f.val].mean(0), prev, atol=0.02)


def test_grouped_multilabel_stratifies_patients():
    ds = open_dataset("phantom:n=2000,classes=3,imbalance=5,multilabel=1,size=16,patients=400")
    s = make_splits(ds, k=4)
    _check_partition(s, len(ds))
    for f in s.folds:
        assert not set(ds.patient_ids[f.test]) & set(ds.patient_ids[f.train])
        assert np.allclose(ds.labels[f.test].mean(0), ds.labels.mean(0), atol=0.04)


def test_official_protocol_equals_the_files_own_split(shared_data):
    ds = open_dataset("busi_128")
    s = make_splits(ds, protocol="official")
    raw = np.load(shared_data / "datasets" / "busi_128.npz")
    n_tr, n_va, n_te = (len(raw[f"{p}_labels"]) for p in ("train", "val", "test"))
    (f,) = s.folds
    assert s.k == 1 and f.train.tolist() == list(range(n_tr)) and f.val.tolist() == list(range(n_tr, n_tr + n_va))
    assert f.test.tolist() == list(range(n_tr + n_va, n_tr + n_va + n_te))
    assert np.array_equal(ds.labels[f.test], raw["test_labels"][:, 0])


def test_official_without_val_carves_it_from_train(tmp_path):
    img = np.zeros((40, 8, 8), np.uint8)
    np.savez(tmp_path / "d.npz", train_images=img[:30], train_labels=np.arange(30) % 2, test_images=img[:10],
             test_labels=np.arange(10) % 2)
    (f,) = make_splits(open_dataset(str(tmp_path / "d.npz")), protocol="official", val_fraction=0.2).folds
    assert len(f.val) == 6 and len(f.train) == 24 and f.test.tolist() == list(range(30, 40))


def test_save_load_round_trip_and_reuse(tmp_path):
    ds = open_dataset("phantom:n=300,size=16")
    path = tmp_path / "splits.json"
    s = load_or_make_splits(path, ds, k=4, seed=1, val_fraction=0.2)
    d = json.loads(path.read_text())
    assert d["fingerprint"] == ds.fingerprint() and d["k"] == 4 and d["seed"] == 1 and d["val_fraction"] == 0.2
    assert d["protocol"] == "kfold" and d["digest"] == s.digest() and len(d["folds"]) == 4
    mtime = path.stat().st_mtime_ns
    again = load_or_make_splits(path, ds, k=4, seed=1, val_fraction=0.2)
    assert again.digest() == s.digest() and path.stat().st_mtime_ns == mtime     # reused, not rewritten
    assert all(np.array_equal(a.train, b.train) for a, b in zip(again.folds, s.folds))
    assert not list(tmp_path.glob(".*tmp"))                                       # atomic write left no temp file


def test_refuses_other_dataset_or_parameters(tmp_path, capsys):
    path = tmp_path / "splits.json"
    load_or_make_splits(path, open_dataset("phantom:n=300,size=16"), k=3)
    with pytest.raises(UserError, match="made for dataset phantom-n300-size16"):
        load_or_make_splits(path, open_dataset("phantom:n=300,size=16,seed=1"), k=3)
    with pytest.raises(UserError, match="k 3 \\(file\\) vs 5"):
        load_or_make_splits(path, open_dataset("phantom:n=300,size=16"), k=5)
    with pytest.raises(UserError, match="already holds different splits"):
        make_splits(open_dataset("phantom:n=300,size=16"), k=4).save(path)
    with pytest.raises(SystemExit) as e:
        main(["data", "splits", "phantom:n=300,size=16,seed=1", "--out", str(path), "--folds", "3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "fingerprint" in err and "Fix:" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,needle", [
    (["phantom:n=60,size=16,imbalance=50", "--folds", "5"], "fewer than the 5 folds"),   # tail class has 2 images
    (["phantom:n=60,size=16", "--protocol", "official"], "no official"),
    (["phantom:n=60,size=16", "--protocol", "random"], "unknown split protocol"),
    (["phantom:n=60,size=16", "--folds", "1"], "--folds 2 or more"),
    (["phantom:n=60,size=16", "--val-fraction", "0.9"], "val fraction"),
])
def test_cli_split_errors(tmp_path, capsys, args, needle):
    with pytest.raises(SystemExit) as e:
        main(["data", "splits", *args, "--out", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and needle in err and "Fix:" in err and "Traceback" not in err
    assert not (tmp_path / "s.json").exists()


def test_cli_writes_and_reuses(tmp_path, capsys):
    out = tmp_path / "s.json"
    main(["data", "splits", "breastmnist_28", "--out", str(out), "--folds", "3", "--seed", "2"])
    first = out.read_text()
    main(["data", "splits", "breastmnist_28", "--out", str(out), "--folds", "3", "--seed", "2"])
    assert out.read_text() == first and "reused" in capsys.readouterr().out
    s = Splits.load(out)
    assert s.k == 3 and s.seed == 2 and s.dataset == "breastmnist_28"
    _check_partition(s, 780)
