"""A real, tiny study end to end: the study trains the built-in autoencoder, encodes, trains image /
reconstruction / latent (and distilled) classifiers, writes the report, and the report renders in
headless Chromium. Then the same with SIGKILL midway: the resumed study's rows equal an uninterrupted
run's and no finished task is trained twice.

Everything is real training at toy scale (16 px phantom, a few AE steps, 2 epochs, narrow networks), so
the numbers mean nothing; what is checked is the plumbing between the stages.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from latentgap.reports import build_report
from latentgap.study import run_study, spec_from_dict

from test_report import _CHECK_JS, CHROMIUM

NARROW_RESNET = {"model": "resnet18", "model_kwargs": {"channels": [8, 16, 16, 16]}}
TINY = dict(
    name="tiny", datasets=["phantom:n=48,size=16,classes=2,imbalance=2,feature=intensity"],
    autoencoders=[{"name": "kl-builtin", "train": {"steps": 6, "batch_size": 8, "checkpoint_every": 2}}],
    spaces=["image", "recon", "latent"], k=2, seeds=[0],
    train={"epochs": 2, "batch_size": 16, "pretrained": "false", "drw_switch_epoch": 1},
    space_train={"image": NARROW_RESNET, "recon": NARROW_RESNET,
                 "latent": {"model": "convnext_atto", "model_kwargs": {"dims": [8, 16, 16, 16]}}},
    cache={"dtype": "float32", "batch_size": 16}, device="cpu", examples=4)

# differ between two runs of the same task: timings, and the cache folder's name, which holds the trained
# autoencoder's absolute path (create_autoencoder names a model loaded from a folder by its path)
VOLATILE = {"task_seconds", "train_seconds", "seconds_per_epoch", "ae_train_seconds", "cache_dir"}


def _rows(study: Path) -> dict[str, dict]:
    return {f.stem: {k: v for k, v in json.loads(f.read_text()).items() if k not in VOLATILE}
            for f in (study / "rows").glob("*.json")}


@pytest.mark.slow
@pytest.mark.browser
def test_tiny_real_study_report_renders(tmp_path):
    spec = spec_from_dict({**TINY, "variants": ["plain", "distilled"]})
    s = run_study(spec, tmp_path, echo=lambda *_: None, live=False)
    assert s.ok, s.failed
    rows = _rows(tmp_path)
    kinds = [r["kind"] for r in rows.values()]
    # the default `train.data: fold`: one autoencoder and one cache per fold (k = 2)
    # cells: image (+ its baseline check), recon, latent, distilled latent, each on 2 folds
    assert kinds.count("autoencoder") == 2 and kinds.count("fidelity") == 2 and kinds.count("result") == 5 * 2
    for ae_row in (r for r in rows.values() if r["kind"] == "autoencoder"):
        assert ae_row["steps"] == 6 and (tmp_path / ae_row["weights_dir"] / "model" / "config.json").is_file()
    res = [r for r in rows.values() if r["kind"] == "result"]
    # every recon/latent cell and the cache read the autoencoder the study trained for its fold, not a random one
    trained_sha = {r["fold"]: r["autoencoder_sha256"] for r in res if r["space"] != "image"}
    assert len(set(trained_sha.values())) == 2 and all(r["autoencoder"] == "kl-builtin" for r in res
                                                       if r["space"] != "image")
    assert not any(r["ae_in_sample"] for r in res if r["space"] != "image")
    caches = {json.loads((c / "manifest.json").read_text())["autoencoder"]["weights_sha256"]
              for c in (tmp_path / "caches").iterdir()}
    assert caches == set(trained_sha.values())
    assert {(r["space"], r["variant"]) for r in res} == {("image", "plain"), ("image", "baseline"), ("recon", "plain"),
                                                        ("latent", "plain"), ("latent", "distilled")}
    assert all(r["loss"] == "wce" for r in res if r["variant"] == "baseline")
    # distilled cells were taught by the study's recon cells: logits cached there, no extra teacher trained
    assert not (tmp_path / "teachers").exists()
    for r in res:
        if r["variant"] == "distilled":
            recon = next(t for t in res if t["space"] == "recon" and t["fold"] == r["fold"])
            assert (tmp_path / recon["run_dir"] / f"logits-fold{r['fold']}-train.npy").is_file()
    assert all(0 <= r["bacc"] <= 1 and r["epochs"] == 2 for r in res)

    paths = build_report(tmp_path)
    md = paths["md"].read_text()
    assert "## Autoencoders trained by the study" in md and "| kl-builtin |" in md
    html = paths["html"].read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", _CHECK_JS))
    res_ = subprocess.run(CHROMIUM + [f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=5000",
                                      "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    m = re.search(r"images (\d+)/(\d+) tables (\d+) rows (\d+)", res_.stdout)
    assert m, f"check script did not run; chromium stderr: {res_.stderr[-500:]}"
    ok, total, n_tables, n_rows = map(int, m.groups())
    # figures: PSNR vs gap, bACC per space with CIs, validation curves, the originals / reconstructions grid;
    # every one decoded by the browser
    assert total == html.count("<img") >= 4 and ok == total
    # main results, baseline check, paired tests, across pairs, fidelity, AE training, ablation, per-class recall
    assert n_tables == html.count("<table") == 8 and n_rows >= 4 + 1 + 2 + 1 + 1 + 1
    assert "Main results" in res_.stdout and "kl-builtin" in res_.stdout


def test_cell_hash_does_not_depend_on_the_study_folder(tmp_path):
    from latentgap.train import TrainConfig

    def cfg(study, ae="autoencoders/kl-builtin-abc", **kw):
        return TrainConfig(dataset="phantom", space="latent", autoencoder=str(tmp_path / study / ae),
                           root=str(tmp_path / study), **kw)

    assert cfg("a").config_hash() == cfg("b").config_hash()  # same cell, two study folders
    assert cfg("a").config_hash() != cfg("a", ae="autoencoders/other").config_hash()
    assert cfg("a", distill_teacher=str(tmp_path / "a" / "runs" / "c1")).config_hash() == \
        cfg("b", distill_teacher=str(tmp_path / "b" / "runs" / "c1")).config_hash()
    # a folder outside the study enters the hash as given (a user's own trained autoencoder)
    out = lambda ae, root: TrainConfig(dataset="phantom", space="latent", autoencoder=str(tmp_path / ae),
                                       root=str(tmp_path / root)).config_hash()
    assert out("x", "a") == out("x", "b") != out("y", "a")
    assert TrainConfig(dataset="phantom", space="latent", autoencoder="taef2", root="/r1").config_hash() == \
        TrainConfig(dataset="phantom", space="latent", autoencoder="taef2", root="/r2").config_hash()


_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from latentgap.study import run_study, spec_from_dict
run_study(spec_from_dict({spec!r}), sys.argv[1], live=False)
"""


def _mtimes(study: Path) -> dict[str, int]:
    files = list((study / "runs").glob("*/checkpoint.safetensors")) + list((study / "autoencoders").glob("*/model/*"))
    return {str(p.relative_to(study)): p.stat().st_mtime_ns for p in files}


@pytest.mark.slow
def test_sigkill_real_training_resumes_to_identical_rows(tmp_path):
    spec = dict(TINY, train={**TINY["train"], "epochs": 3})
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(spec=spec))
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen([sys.executable, str(script), str(killed)], stdout=subprocess.DEVNULL)
    # kill while a classifier is mid-training: the autoencoder, the cache and two cells are done and the
    # third cell has written at least one epoch checkpoint
    # (run folders are runs/<dataset>-<ae>-<space>-<variant>-f<k>-s<seed>-<hash>)
    deadline = time.time() + 600
    while time.time() < deadline:
        done = {f.stem for f in (killed / "rows").glob("*.json")}
        running = [p.parent.name for p in (killed / "runs").glob("*/checkpoint.safetensors")
                   if p.parent.name.rsplit("-", 1)[1] not in done]
        if len(done) >= 6 and running:  # autoencoders, caches, image cells done; a recon/latent cell running
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = {f.stem for f in (killed / "rows").glob("*.json")}
    assert 6 <= len(done_at_kill) < 12, "the study must be killed midway"
    running_log = {h: (killed / "runs" / h / "metrics.jsonl").read_text()
                   for h in running if (killed / "runs" / h / "metrics.jsonl").exists()}
    assert running_log, "a cell was mid-training"
    before = _mtimes(killed)
    finished_runs = {k: v for k, v in before.items()
                     if k.split("/")[1].rsplit("-", 1)[1] in done_at_kill or k.startswith("autoencoders")}
    subprocess.run([sys.executable, str(script), str(killed)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, str(script), str(ref)], check=True, stdout=subprocess.DEVNULL)
    rows_killed, rows_ref = _rows(killed), _rows(ref)
    assert len(rows_ref) == 2 + 2 + 4 * 2 and rows_killed == rows_ref  # cells: image, baseline, recon, latent
    after = _mtimes(killed)
    for k, v in finished_runs.items():  # a finished cell or autoencoder was never trained (written) again
        assert after[k] == v, f"{k} was rewritten after the resume"
    # the interrupted cell continued from its checkpoint (its logged epochs, with their timings, are kept)
    # instead of starting over, and predicts exactly what the uninterrupted cell predicts
    for h, log in running_log.items():
        new = (killed / "runs" / h / "metrics.jsonl").read_text()
        assert new.startswith(log) and [json.loads(ln)["epoch"] for ln in new.splitlines()] == [0, 1, 2]
        assert np.array_equal(np.load(killed / "runs" / h / "test_probs.npy"), np.load(ref / "runs" / h / "test_probs.npy"))


def test_labelled_autoencoder_entry_without_training(tmp_path, shared_data, one_thread):
    """``{name: taef2, label: t2}``: rows and reports say t2, the prepare task loads taef2 (the real TAEF2
    weights), and the latent cell opens the cache its prepare row recorded."""
    spec = spec_from_dict({
        "name": "label", "datasets": ["phantom:n=40,size=32,classes=2,imbalance=2,feature=intensity"],
        "autoencoders": [{"name": "taef2", "label": "t2"}], "spaces": ["latent"], "k": 2, "folds": [0],
        "train": {"epochs": 1, "batch_size": 16, "pretrained": "false", "precise_bn_batches": 0,
                  "model": "convnext_atto", "model_kwargs": {"dims": [8, 16, 16, 16]}},
        "cache": {"dtype": "float32", "batch_size": 16}, "device": "cpu", "examples": 2})
    s = run_study(spec, tmp_path, echo=lambda *_: None, live=False)
    assert s.ok, s.failed
    rows = [json.loads(f.read_text()) for f in (tmp_path / "rows").glob("*.json")]
    pair = next(r for r in rows if r["kind"] == "fidelity")
    cell = next(r for r in rows if r["kind"] == "result")
    assert pair["autoencoder"] == "t2" and pair["ae_spec"] == "taef2" and not pair["ae_in_study"]
    assert cell["autoencoder"] == "t2" and cell["autoencoder_sha256"]  # identity from the cache manifest
    assert cell["run_dir"].startswith("runs/phantom") and "-t2-latent-plain-f0-s0-c" in cell["run_dir"]


def test_study_autoencoder_per_fold_never_sees_its_test_part(tmp_path, one_thread):
    """``train.data: fold`` (the default): each fold's autoencoder trains on that fold's training part only,
    and its fidelity row is measured on the fold's test part."""
    from latentgap.data import load_or_make_splits, open_dataset
    from latentgap.storage import stable_hash
    from latentgap.workspace import splits_path

    ds_spec = "phantom:n=48,size=16,classes=2,imbalance=2,feature=intensity"
    spec = spec_from_dict({**TINY, "datasets": [ds_spec], "spaces": ["recon"], "train": {**TINY["train"], "epochs": 1},
                           "autoencoders": [{"name": "kl-builtin", "train": {"steps": 2, "batch_size": 8}}]})
    s = run_study(spec, tmp_path, echo=lambda *_: None, live=False)
    assert s.ok, s.failed
    ds = open_dataset(ds_spec)
    splits = load_or_make_splits(splits_path(tmp_path, ds, "kfold", 2, 0), ds, k=2, seed=0, val_fraction=0.1)
    rows = [json.loads(f.read_text()) for f in (tmp_path / "rows").glob("*.json")]
    trained = {r["task_hash"]: r for r in rows if r["kind"] == "autoencoder"}
    assert len(trained) == 2
    for r in trained.values():
        rec = json.loads((tmp_path / r["weights_dir"] / "training.json").read_text())
        fold = int(r["weights_dir"].split("-f")[1].split("-")[0])
        part = np.asarray(splits.folds[fold].train).tolist()
        assert rec["settings"]["pool"] == stable_hash(part)  # exactly the fold's training part
        assert not set(part) & set(np.asarray(splits.folds[fold].test).tolist())
    for r in (r for r in rows if r["kind"] == "fidelity"):
        assert r["split"] == f"fold {r['ae_fold']} test" and r["n"] == len(splits.folds[r["ae_fold"]].test)
        assert r["ae_in_sample"] is False
