"""Segmentation data and metrics: MONAI-backed Dice / IoU on fixtures with empty and full masks, the aggregation
named, calibration by hand, grouped folds, one-line errors for bad pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentgap.errors import UserError
from latentgap.seg.data import SegDataset, open_seg_dataset, seg_splits
from latentgap.seg.metrics import calibration, overlap, uncertainty_auroc


def test_dice_iou_per_image_and_global_on_empty_and_full_masks():
    from monai.metrics import DiceMetric

    t = np.zeros((4, 8, 8), np.uint8)
    p = np.zeros_like(t)
    t[0], p[0] = 1, 1                      # full / full: 1
    t[1, :4], p[1, :2] = 1, 1              # half vs quarter: dice 2*16/(32+16) = 2/3, iou 16/32 = 1/2
    # image 2: empty / empty: a correct "no lesion" scores 1; image 3: empty truth, one predicted pixel: 0
    p[3, 0, 0] = 1
    r = overlap(p, t)
    assert r["dice_values"].tolist() == pytest.approx([1.0, 2 / 3, 1.0, 0.0])
    assert r["dice_per_image"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    assert r["iou_per_image"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    inter, ps, ts = 64 + 16, 64 + 16 + 1, 64 + 32
    assert r["dice_global"] == pytest.approx(2 * inter / (ps + ts)) and r["iou_global"] == pytest.approx(inter / (ps + ts - inter))
    assert r["empty_truth"] == 2 and r["hd95_images"] == 2 and "per image" in r["aggregation"]
    # the per-image values are MONAI's own
    import torch
    want = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(
        torch.as_tensor(p[:, None] > 0).float(), torch.as_tensor(t[:, None] > 0).float()).flatten().numpy()
    assert np.allclose(r["dice_values"], want)
    assert r["hd95_per_image"] >= 0


def test_calibration_and_uncertainty_auroc_by_hand():
    prob = np.array([[0.1, 0.9], [0.8, 0.3]])[None]
    truth = np.array([[0, 1], [0, 1]])[None]
    c = calibration(prob, truth, bins=2)
    # bin [0, .5): p .1, .3 -> conf .4, acc 1 (the .3 pixel is foreground); bin [.5, 1]: .9, .8 -> conf 1.7, acc 1
    assert c["ece"] == pytest.approx((abs(1 - 0.4) + abs(1 - 1.7)) / 4)
    assert c["brier"] == pytest.approx(np.mean((prob.ravel() - truth.ravel()) ** 2))
    rng = np.random.default_rng(0)
    truth = (rng.random((20, 16, 16)) > 0.5).astype(np.uint8)
    pred = truth.copy()
    flip = rng.random(truth.shape) < 0.2
    pred[flip] = 1 - pred[flip]
    informative = flip + 0.3 * rng.random(truth.shape)  # higher where wrong
    a = uncertainty_auroc(informative, pred, truth, n_boot=50)
    assert a["auroc"] > 0.9 and a["ci_low"] > 0.5
    b = uncertainty_auroc(rng.random(truth.shape), pred, truth, n_boot=50)
    assert 0.4 < b["auroc"] < 0.6 and b["ci_low"] < 0.5 < b["ci_high"]


def test_shared_seg_sets_load_with_grouped_folds(shared_data):
    busi = open_seg_dataset("busi_seg_128")
    assert busi.image_size == (128, 128) and busi.channels == 1 and busi.empty.sum() > 0  # normal images: empty masks
    kv = open_seg_dataset("kvasir_seg_128")
    assert kv.channels == 3 and kv.ids is not None
    sp = seg_splits(busi, k=3, seed=0)
    for f in sp.folds:  # disjoint parts, every image tested once, no group in two parts
        assert not set(f.train) & set(f.test) and not set(f.val) & set(f.test)
        assert not set(busi.ids[f.train]) & set(busi.ids[f.test])
    assert sorted(np.concatenate([f.test for f in sp.folds]).tolist()) == list(range(len(busi)))


def test_bad_pairs_are_refused_in_one_line(tmp_path):
    img = np.zeros((3, 8, 8), np.uint8)
    with pytest.raises(UserError, match="3 images but 2 masks"):
        SegDataset("x", img, np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(UserError, match="masks are 4x4, images 8x8"):
        SegDataset("x", img, np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(UserError, match="mask value 7 is outside the label set 0..1"):
        SegDataset("x", img, np.full((3, 8, 8), 7, np.uint8))
    ok = SegDataset("x", img, np.full((3, 8, 8), 255, np.uint8))  # 0/255 PNG masks map to 0/1
    assert ok.masks.max() == 1
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(UserError, match="mask of a.png is 6x6, the image 8x8"):
        open_seg_dataset(tmp_path)


def _discs(n=40, size=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    imgs, masks = [], []
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        if i % 5:  # every fifth image has no lesion (an empty mask)
            cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(3, 7))]
            m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        img = (rng.normal(0.3, 0.08, (size, size)) + 0.4 * m).clip(0, 1)
        imgs.append((img * 255).astype(np.uint8))
        masks.append(m)
    return SegDataset("discs", np.stack(imgs), np.stack(masks), ids=np.arange(n))


UNET = dict(dataset="discs", k=3, encoder="resnet18", encoder_depth=3, decoder_channels=[32, 16, 8], batch_size=8,
            lr=3e-3, device="cpu")


@pytest.mark.usefixtures("one_thread")
def test_unet_baseline_learns_discs(tmp_path):
    from latentgap.seg.baseline import UNetConfig, train_unet

    ds = _discs()
    sp = seg_splits(ds, k=3, seed=0)
    row = train_unet(UNetConfig(**UNET, epochs=12, patience=12), tmp_path / "u", ds, sp, progress=False)
    assert row["dice_per_image"] > 0.6 and row["n_test"] == len(sp.folds[0].test)
    assert {"dice_global", "iou_per_image", "hd95_per_image", "ece", "brier", "seconds_per_image"} <= set(row)
    assert train_unet(UNetConfig(**UNET, epochs=12, patience=12), tmp_path / "u", ds, sp)["config_hash"] == row["config_hash"]


def test_multiclass_masks_load_and_split_but_training_refuses_them_in_one_line(tmp_path):
    from latentgap.seg.baseline import UNetConfig, train_unet
    from latentgap.seg.mask_ae import MaskAEConfig, train_mask_ae

    base = _discs(n=12)
    masks = base.masks.copy()
    masks[:, :4] = 2 * (base.masks[:, :4] > 0)  # a third label where the disc crosses the top rows
    masks[0, 0, 0] = 2
    ds = SegDataset("three", base.images, masks, num_classes=3, ids=np.arange(12))
    assert ds.describe()["num_classes"] == 3 and len(seg_splits(ds, k=3, seed=0).folds) == 3
    sp = seg_splits(ds, k=3, seed=0)
    with pytest.raises(UserError, match="3-class masks load and split, but the segmentation models train binary"):
        train_unet(UNetConfig(**{**UNET, "dataset": "three"}, epochs=1), tmp_path / "u", ds, sp, progress=False)
    with pytest.raises(UserError, match="binary masks only"):
        train_mask_ae(MaskAEConfig(dataset="three", k=3, epochs=1, device="cpu"), tmp_path / "m", ds, sp, progress=False)
    assert not (tmp_path / "u").exists() and not (tmp_path / "m").exists()
    with pytest.raises(UserError, match=r"outside the label set 0..1.*num_classes=K"):
        SegDataset("three", base.images, masks)


@pytest.mark.usefixtures("one_thread")
def test_unet_fed_taef2_latents_is_the_deterministic_control(tmp_path, shared_data, capsys):
    """--unet-latents: the U-Net also reads the real TAEF2's latents (upsampled, concatenated); the autoencoder stays
    out of the checkpoint, the run applies to new images through seg eval (encoding them itself, resized), and the
    plain U-Net's configuration hash is the one it had before the option existed (the record's runs still match)."""
    import json

    from latentgap.cli import main
    from latentgap.runs import load_checkpoint
    from latentgap.seg.apply import load_seg_model
    from latentgap.seg.baseline import UNetConfig, predict_probs
    from latentgap.storage import stable_hash

    ds = _discs(n=30)
    np.savez(tmp_path / "discs.npz", train_images=ds.images, train_masks=ds.masks, train_ids=ds.ids)
    run = tmp_path / "run"
    main(["seg", "train", "--data", str(tmp_path / "discs.npz"), "--method", "unet", "--unet-latents", "--ae", "taef2",
          "--folds", "3", "--epochs", "2", "--out", str(run), "--device", "cpu"])
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["method"] == "unet-latent" and 0 <= row["dice_per_image"] <= 1
    assert json.loads((run / "result.json").read_text())["autoencoder"] == "taef2"
    t, _ = load_checkpoint(run / "checkpoint.safetensors")
    assert any(k.startswith("best.net.") for k in t) and not any("image_ae" in k for k in t)
    model = load_seg_model(run)
    assert model.method == "unet-latent"
    sp = seg_splits(open_seg_dataset(tmp_path / "discs.npz"), k=3, seed=0)
    te = np.asarray(sp.folds[0].test)
    own = predict_probs(model.unet, ds, te, "cpu")  # encodes the images itself, as the run's test did
    assert np.abs(own - model.predict(ds.images[te])["prob"]).max() < 1e-5
    other = tmp_path / "other"
    _write_pairs(other, _discs(n=6, seed=5), 48)
    main(["seg", "eval", "--model", str(run), "--data", str(other), "--out", str(tmp_path / "ev"), "--device", "cpu"])
    ev = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert ev["method"] == "unet-latent" and ev["resized_from"] == [48, 48] and ev["n_images"] == 6
    with pytest.raises(SystemExit):
        main(["seg", "train", "--data", str(tmp_path / "discs.npz"), "--method", "latent", "--unet-latents",
              "--out", str(tmp_path / "x")])
    assert "--unet-latents applies to --method unet" in capsys.readouterr().err
    plain = UNetConfig(**{**UNET, "dataset": "discs"})
    assert plain.config_hash() == stable_hash({k: v for k, v in plain.model_dump().items()
                                               if k not in ("device", "latent_ae")})
    assert plain.model_copy(update={"latent_ae": "taef2"}).config_hash() != plain.config_hash()


def _kill_after_second_epoch(script_args: list[str], run_dir):
    """Run ``python -c script args...`` (a training into ``run_dir``), SIGKILL it once its checkpoint holds epoch 1,
    check it left no result; returns the checkpoint path."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from latentgap.runs import read_checkpoint_meta

    proc = subprocess.Popen([sys.executable, "-c", *script_args], env={**os.environ, "OMP_NUM_THREADS": "1"})
    ckpt = run_dir / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt.exists() and read_checkpoint_meta(ckpt).get("epoch", -1) >= 1):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "result.json").exists()
    return ckpt


SCRIPT = """
import sys, numpy as np
sys.path.insert(0, sys.argv[3])
from test_seg import _discs, UNET
from latentgap.seg.data import seg_splits
from latentgap.seg.baseline import UNetConfig, train_unet
ds = _discs()
train_unet(UNetConfig(**UNET, epochs=int(sys.argv[2]), patience=50), sys.argv[1], ds, seg_splits(ds, k=3, seed=0), progress=False)
"""


@pytest.mark.usefixtures("one_thread")
def test_killed_unet_training_resumes_to_identical_weights(tmp_path):
    import os

    from latentgap.runs import load_checkpoint
    from latentgap.seg.baseline import UNetConfig, train_unet

    tests = os.path.dirname(__file__)
    ds = _discs()
    sp = seg_splits(ds, k=3, seed=0)
    cfg = UNetConfig(**UNET, epochs=8, patience=50)
    train_unet(cfg, tmp_path / "ref", ds, sp, progress=False)
    ckpt = _kill_after_second_epoch([SCRIPT, str(tmp_path / "run"), "8", tests], tmp_path / "run")
    train_unet(cfg, tmp_path / "run", ds, sp, progress=False)
    a, _ = load_checkpoint(tmp_path / "ref" / "checkpoint.safetensors")
    b, _ = load_checkpoint(ckpt)
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "best.")))


# --------------------------------------------------------------------------- latent diffusion segmenter

MASK_AE = {"downsample": 4, "width": 8, "epochs": 20, "patience": 20, "latent_channels": 2, "lr": 3e-3, "batch_size": 4}
SEG = dict(dataset="discs", k=3, width=16, batch_size=4, lr=2e-3, samples=4, steps=2, device="cpu", mask_ae=MASK_AE)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_latent_diffusion_segmenter_learns_discs_with_informative_confidence(tmp_path):
    """Mask autoencoder ceiling, segmenter Dice below it, calibrated mean map, confidence that predicts errors."""
    from latentgap.seg.apply import evaluate_model, load_seg_model
    from latentgap.seg.segmenter import SegmenterConfig, load_segmenter, train_segmenter

    ds = _discs(n=60)
    sp = seg_splits(ds, k=3, seed=0)
    cfg = SegmenterConfig(**SEG, objective="flow", condition=["image", "encoder"], epochs=15, patience=15)
    row = train_segmenter(cfg, tmp_path / "lat", ds, sp, progress=False)
    assert row["method"] == "latent-diffusion" and row["target_shape"] == [2, 8, 8]
    assert row["mask_ae_ceiling_dice_per_image"] > 0.85
    assert 0.8 < row["dice_per_image"] <= row["mask_ae_ceiling_dice_per_image"] + 0.03
    assert row["ece"] < 0.05 and row["uncertainty_auroc_std"] > 0.7 and row["uncertainty_auroc_std_ci"][0] > 0.5
    assert row["cost_steps_x_samples"] == 8 and row["seconds_per_image"] > 0
    assert "per image" in row["aggregation"]
    # the saved model predicts the same test part again; one step is the single-step mode
    seg = load_segmenter(tmp_path / "lat")
    from latentgap.data import to_float

    te = np.asarray(sp.folds[0].test)
    one = seg.predict(to_float(ds.images[te]), samples=3, steps=1)
    assert one["samples"].shape == (3, len(te), 32, 32) and one["prob"].min() >= 0 and one["prob"].max() <= 1
    assert overlap(one["mask"], ds.masks[te])["dice_per_image"] > 0.7
    m = load_seg_model(tmp_path / "lat")
    again, _, _ = evaluate_model(m, SegDataset("discs", ds.images[te], ds.masks[te]), seed=1)
    assert again["dice_per_image"] == pytest.approx(row["dice_per_image"], abs=0.03)
    assert again["resized"] is False and again["cost_steps_x_samples"] == 8


SEG_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[2])
from test_seg import _discs, SEG
from latentgap.seg.data import seg_splits
from latentgap.seg.segmenter import SegmenterConfig, train_segmenter
ds = _discs()
train_segmenter(SegmenterConfig(**SEG, space="pixel", condition=["image"], epochs=8, patience=50), sys.argv[1], ds,
                seg_splits(ds, k=3, seed=0), progress=False)
"""


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_killed_segmenter_training_resumes_to_identical_weights(tmp_path):
    import os

    from latentgap.runs import load_checkpoint
    from latentgap.seg.segmenter import SegmenterConfig, train_segmenter

    ds = _discs()
    sp = seg_splits(ds, k=3, seed=0)
    cfg = SegmenterConfig(**SEG, space="pixel", condition=["image"], epochs=8, patience=50)
    train_segmenter(cfg, tmp_path / "ref", ds, sp, progress=False)
    _kill_after_second_epoch([SEG_SCRIPT, str(tmp_path / "run"), os.path.dirname(__file__)], tmp_path / "run")
    row = train_segmenter(cfg, tmp_path / "run", ds, sp, progress=False)
    a, _ = load_checkpoint(tmp_path / "ref" / "segmenter.safetensors")
    b, _ = load_checkpoint(tmp_path / "run" / "segmenter.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert row["dice_per_image"] == train_segmenter(cfg, tmp_path / "ref", ds, sp)["dice_per_image"]
    # the weight average (on by default) is checkpointed and resumed with the rest
    ca, ma = load_checkpoint(tmp_path / "ref" / "checkpoint.safetensors")
    cb, mb = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert ma["ema_n"] == mb["ema_n"] > 0 and ma["ema"] == mb["ema"]
    assert all(torch.equal(ca[f"ema.{i}"], cb[f"ema.{i}"]) for i in range(ma["ema_n"]))


def test_segmenter_refuses_bad_input_in_one_line(tmp_path, shared_data):
    from latentgap.seg.segmenter import SegmenterConfig, train_segmenter

    ds = _discs(n=12, size=36)
    sp = seg_splits(ds, k=3, seed=0)
    with pytest.raises(UserError, match="not a multiple of 8"):  # TAEF2's factor 8 does not divide 36
        train_segmenter(SegmenterConfig(**SEG, condition=["latent"], autoencoder="taef2"), tmp_path / "a", ds, sp)
    ds = _discs(n=12, size=40)
    sp = seg_splits(ds, k=3, seed=0)
    with pytest.raises(UserError, match="grid divisible by 4, this one is 10x10"):  # mask factor 4: a 10x10 grid
        train_segmenter(SegmenterConfig(**{**SEG, "mask_ae": {**MASK_AE, "epochs": 1}}, condition=["image"]),
                        tmp_path / "d", ds, sp, progress=False)
    with pytest.raises(UserError, match="configured for 32x32 images"):
        train_segmenter(SegmenterConfig(**SEG, image_size=[32, 32]), tmp_path / "b", ds, sp)
    with pytest.raises(UserError, match="needs a condition"):
        train_segmenter(SegmenterConfig(**SEG, condition=[]), tmp_path / "c", ds, sp)


def _write_pairs(folder, ds, size):
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i, (im, m) in enumerate(zip(ds.images, ds.masks)):
        Image.fromarray(im.squeeze(-1)).resize((size, size), Image.BILINEAR).save(folder / "images" / f"{i:03d}.png")
        Image.fromarray(m * 255).resize((size, size), Image.NEAREST).save(folder / "masks" / f"{i:03d}.png")


@pytest.mark.slow
def test_seg_cli_trains_with_taef2_latents_then_evaluates_and_predicts_resized_folders(tmp_path, shared_data, capsys):
    """seg train (latent condition from the real TAEF2), then seg eval / predict on 48-px folders: resized to the
    training size and recorded; predictions are never overwritten."""
    import json

    from latentgap.cli import main

    ds = _discs(n=30)
    np.savez(tmp_path / "discs.npz", train_images=ds.images, train_masks=ds.masks, train_ids=ds.ids)
    run = tmp_path / "run"
    main(["seg", "train", "--data", str(tmp_path / "discs.npz"), "--method", "latent", "--folds", "3",
          "--condition", "latent,encoder", "--ae", "taef2", "--width", "16", "--mask-downsample", "4",
          "--mask-epochs", "2", "--epochs", "2", "--samples", "2", "--steps", "1", "--val-steps", "2",
          "--ema-decay", "0.99", "--out", str(run), "--device", "cpu"])
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    assert row["method"] == "latent-diffusion" and 0 <= row["dice_per_image"] <= 1
    import yaml

    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["val_steps"] == 2 and saved["ema_decay"] == 0.99
    assert json.loads((run / "result.json").read_text())["autoencoder"] == "taef2"
    other = tmp_path / "other"
    _write_pairs(other, _discs(n=6, seed=5), 48)
    main(["seg", "eval", "--model", str(run), "--data", str(other), "--out", str(tmp_path / "ev"), "--device", "cpu"])
    ev = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert ev["resized_from"] == [48, 48] and ev["resized_to"] == [32, 32] and ev["n_images"] == 6
    assert ev["method"] == "latent-diffusion"  # the resize record does not overwrite the model's method
    assert (tmp_path / "ev" / "overlays.png").stat().st_size > 0
    images_only = tmp_path / "imgs"
    images_only.mkdir()
    for p in sorted((other / "images").iterdir()):
        (images_only / p.name).write_bytes(p.read_bytes())
    main(["seg", "predict", "--model", str(run), "--data", str(images_only), "--out", str(tmp_path / "pr"), "--device", "cpu"])
    with np.load(tmp_path / "pr" / "predictions.npz") as z:
        assert z["prob"].shape == (6, 32, 32) and z["std"].shape == (6, 32, 32)
    rec = json.loads((tmp_path / "pr" / "predict.json").read_text())
    assert rec["resized_from"] == [48, 48] and rec["files"][0] == "000.png" and rec["samples"] == 2
    with pytest.raises(SystemExit):
        main(["seg", "predict", "--model", str(run), "--data", str(images_only), "--out", str(tmp_path / "pr")])
    assert "never overwritten" in capsys.readouterr().err
    # a synthetic classification set (latentgap synth sample's layout): its images can be segmented, but it has
    # no masks to train or evaluate on
    syn = tmp_path / "syn"
    syn.mkdir()
    np.savez(syn / "images.npz", train_images=_discs(n=4, seed=7).images, train_labels=np.zeros((4, 1), np.int64))
    (syn / "synthetic.json").write_text(json.dumps({"source": "synthetic", "dataset": "discs", "fold": 0,
                                                    "generator": "g"}))
    main(["seg", "predict", "--model", str(run), "--data", str(syn), "--out", str(tmp_path / "ps"), "--device", "cpu"])
    assert json.loads((tmp_path / "ps" / "predict.json").read_text())["files"][:2] == ["synthetic-000000",
                                                                                       "synthetic-000001"]
    for cmd in (["seg", "eval", "--model", str(run), "--out", str(tmp_path / "es")],
                ["seg", "train", "--method", "unet", "--out", str(tmp_path / "ts")]):
        with pytest.raises(SystemExit):
            main([*cmd, "--data", str(syn)])
        assert "synthetic classification dataset (latentgap synth sample): it has class labels but no masks" in \
            capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_segmentation_study_runs_resumes_and_reports(tmp_path):
    """A seg-only study through the study runner: U-Net and pixel diffusion on two folds, rows of kind seg, a
    second run re-runs nothing, and the report's segmentation section holds the table, the paired test and overlays."""
    from latentgap.reports import build_report
    from latentgap.study import StudySpec
    from latentgap.study.runner import run_study

    ds = _discs(n=30)
    np.savez(tmp_path / "discs.npz", train_images=ds.images, train_masks=ds.masks, train_ids=ds.ids)
    spec = StudySpec(name="segstudy", seg={
        "datasets": [str(tmp_path / "discs.npz")], "methods": ["unet", "pixel"], "k": 3, "folds": [0, 1],
        "unet": {k: v for k, v in UNET.items() if k not in ("dataset", "k", "device")} | {"epochs": 2},
        "segmenter": {"condition": ["image"], "width": 16, "batch_size": 4, "epochs": 2, "samples": 2, "steps": 1}},
        executor={"kind": "local", "workers": 1}, device="cpu")
    s = run_study(spec, tmp_path / "study")
    assert s.ok and s.total == 4
    rows = [json.loads(p.read_text()) for p in sorted((tmp_path / "study" / "rows").glob("*.json"))]
    assert {(r["method"], r["fold"]) for r in rows} == {("unet", 0), ("unet", 1), ("pixel", 0), ("pixel", 1)}
    assert all(r["kind"] == "seg" and 0 <= r["dice_per_image"] <= 1 for r in rows)
    assert run_study(spec, tmp_path / "study").done_before == 4
    out = build_report(tmp_path / "study")
    md = out["md"].read_text()
    assert "## Segmentation" in md and "vs U-Net" in md and "pts, p =" in md
    assert "seg_overlays_0" in md and "## Main results" not in md  # no classifier sections in a seg-only study
    # two epochs at a ceiling of two cannot show a flattened validation curve: every fold is flagged
    assert all(r["convergence"] == "budget-limited" and r["max_epochs"] == 2 for r in rows)
    assert "0 of 2 early-stopped (epochs 2 of 2); budget-limited: fold 0, 1" in md
    with pytest.raises(Exception, match="give at least one dataset"):
        StudySpec(name="empty")


def test_uncertainty_auroc_histogram_bootstrap_matches_sklearn_without_ties():
    """With fewer distinct values than bins, the histogram AUROC of one resample equals scikit-learn's."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    truth = (rng.random((12, 8, 8)) > 0.6).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.25, 1 - truth, truth)
    u = rng.integers(0, 50, truth.shape) / 50.0 + 0.3 * (pred != truth)
    a = uncertainty_auroc(u, pred, truth, n_boot=1, seed=7)
    i = np.random.default_rng(7).integers(0, 12, 12)
    want = roc_auc_score((pred != truth)[i].ravel(), u[i].ravel())
    assert a["ci_low"] == pytest.approx(want) and a["auroc"] == pytest.approx(roc_auc_score((pred != truth).ravel(), u.ravel()))


def test_seg_table_names_how_each_arms_training_ended():
    """The training column counts early-stopped folds, gives the epoch range against the ceiling and names
    budget-limited folds; rows from before the record (no convergence field) show a dash. ``training_end`` counts an
    early stop that falls exactly on the ceiling, and nothing else at the ceiling."""
    import pandas as pd

    from latentgap.reports.tables import seg_table

    base = dict(kind="seg", dataset="d", n_test=10, n_train=20, seconds_per_image=0.1, dice_per_image=0.5)
    rows = pd.DataFrame([
        {**base, "method": "unet", "fold": 0, "epochs": 32, "max_epochs": 60, "convergence": "early-stopped"},
        {**base, "method": "unet", "fold": 1, "epochs": 60, "max_epochs": 60, "convergence": "early-stopped"},
        {**base, "method": "unet", "fold": 2, "epochs": 60, "max_epochs": 60, "convergence": "budget-limited"},
        {**base, "method": "latent-diffusion", "fold": 0, "epochs": 8},
        {**base, "method": "pixel-diffusion", "fold": 0, "epochs": 8, "max_epochs": 60, "convergence": "early-stopped",
         "mask_ae_convergence": "budget-limited"}])
    t = seg_table(rows).set_index("method")["training"]
    assert t["unet"] == "2 of 3 early-stopped (epochs 32–60 of 60); budget-limited: fold 2"
    assert t["latent-diffusion"] == "–"
    assert t["pixel-diffusion"] == "1 of 1 early-stopped (epochs 8 of 60); mask AE budget-limited: fold 0"
    from latentgap.seg.fit import training_end

    assert training_end(32, 23, 60, 8) == "early-stopped"  # patience ran out before the ceiling
    assert training_end(60, 51, 60, 8) == "early-stopped"  # ... exactly at the ceiling
    assert training_end(60, 52, 60, 8) == "budget-limited"  # improved within the last `patience` epochs
    assert training_end(30, 26, 30, 6) == "budget-limited"  # the first pass's kvasir U-Net


def test_fit_epochs_validates_and_keeps_the_weight_average(tmp_path):
    """With an EMA, validation sees the averaged weights and the best state is the average, while training goes
    on from the raw weights (a toy weight pulled from 0 towards 1: the average lags behind it)."""
    from diffusers.training_utils import EMAModel

    from latentgap.seg.fit import fit_epochs

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    ema = EMAModel(model.parameters(), decay=0.9, use_ema_warmup=False)
    seen = []

    def validate():
        seen.append(float(model.weight))
        return seen[-1]
    fit = fit_epochs(tmp_path, "h", model, opt, sched, np.arange(4), lambda idx, g: (model.weight - 1).pow(2).sum(),
                     validate, epochs=3, patience=5, batch_size=2, seed=0, desc="toy", progress=False, ema=ema)
    raw = float(model.weight)
    # 2 steps per epoch; SGD: w <- w + 0.2 (1 - w); diffusers' decay without warm-up: 0 at the first update (a
    # copy), then min(0.9, (1 + t) / (10 + t)) at update t = 1, 2, ...; average <- d avg + (1 - d) w
    w, avg, t, expected = 0.0, 0.0, 0, []
    for _ in range(3):
        for _ in range(2):
            w = w + 0.2 * (1 - w)
            d = min(0.9, (1 + t) / (10 + t)) if t else 0.0
            avg, t = d * avg + (1 - d) * w, t + 1
        expected.append(avg)
    assert seen == pytest.approx(expected, abs=1e-6) and raw == pytest.approx(w, abs=1e-6)
    assert float(fit.best_state["weight"]) == pytest.approx(expected[-1], abs=1e-6) and fit.best_epoch == 2
