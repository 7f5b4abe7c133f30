"""Segmentation data and metrics: MONAI-backed Dice / IoU on fixtures with empty and full masks, the aggregation
named, calibration by hand, grouped folds, one-line errors for bad pairs."""

from __future__ import annotations

import numpy as np
import pytest

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
