"""The architecture-matched control: the latent cell's ConvNeXt behind a patch stem runs the same body on
images as on latents, and a study with ``matched_control`` pairs matched image / reconstruction cells with the
plain latent cells."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from latentgap.errors import UserError
from latentgap.models import create_classifier
from latentgap.study import run_study, spec_from_dict
from latentgap.study import stats as S
from latentgap.study.grids import classification_grid


def _stage_shapes(model, x):
    shapes = []
    hooks = [st.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape[1:])))
             for st in model.backbone.stages]
    model.forward_features(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("side,factor,chans", [(32, 8, 32), (64, 8, 32), (128, 8, 32), (64, 4, 4), (128, 16, 128)])
def test_patch_stem_gives_the_latent_classifiers_maps(side, factor, chans):
    grid = side // factor
    img = create_classifier("convnext_atto", 3, 3, side, pretrained=False, stem_patch=factor)
    lat = create_classifier("convnext_atto", chans, 3, grid, pretrained=False, image_input=False)
    # every stage sees maps of the same shape; the bodies have identical parameter shapes
    assert _stage_shapes(img, torch.rand(2, 3, side, side)) == _stage_shapes(lat, torch.rand(2, chans, grid, grid))
    body = lambda m: {k: v.shape for k, v in m.backbone.state_dict().items() if not k.startswith("stem.0")}  # noqa: E731
    assert body(img) == body(lat)
    k = img.backbone.stem[0]
    assert k.kernel_size == k.stride == (factor * lat.build_info["stem_stride"],) * 2


def test_patch_stem_is_refused_where_it_cannot_work():
    with pytest.raises(UserError, match="needs a ConvNeXt"):
        create_classifier("resnet18", 3, 2, 32, pretrained=False, stem_patch=8)
    with pytest.raises(UserError, match="does not divide"):
        create_classifier("convnext_atto", 3, 2, 36, pretrained=False, stem_patch=8)


SPEC = dict(name="matched", datasets=["phantom:n=90,size=32,classes=2,imbalance=1"], autoencoders=["taef2"], k=3, seeds=[0],
            baseline_check=False, matched_control=True, spaces=["image", "recon", "latent"],
            train={"epochs": 2, "batch_size": 16, "pretrained": "false", "drw_switch_epoch": 1, "patience": 2},
            space_train={"image": {"model": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}},
                         "recon": {"model": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}},
                         "latent": {"model": "convnext_atto", "model_kwargs": {"dims": [8, 16, 32, 64]}, "lr": 2e-3}},
            cache={"dtype": "float32", "views": ["identity", "hflip"]}, device="cpu",
            executor={"kind": "local", "workers": 1}, examples=0)


def test_grid_adds_matched_cells_with_the_latent_settings():
    tasks = classification_grid(spec_from_dict(SPEC))
    matched = [t for t in tasks if t.kind == "classifier" and t.config["variant"] == "matched"]
    assert sorted({t.config["space"] for t in matched}) == ["image", "recon"] and len(matched) == 2 * 3
    for t in matched:
        assert t.config["train"]["model"] == "convnext_atto" and t.config["train"]["lr"] == 2e-3
        assert "pair" in t.needs and t.identity["autoencoder"] == "taef2"  # the latent grid sets the stem
    assert len(classification_grid(spec_from_dict({**SPEC, "matched_control": False}))) == len(tasks) - 6


@pytest.mark.usefixtures("one_thread")
def test_study_with_matched_control(tmp_path):
    from latentgap.reports import build_report

    summary = run_study(spec_from_dict(SPEC), tmp_path, echo=lambda *_: None)
    assert summary.ok, summary
    rows = pd.DataFrame([json.loads(p.read_text()) for p in (tmp_path / "rows").glob("*.json")])
    res = rows[rows["kind"] == "result"]
    m_img = res[(res["space"] == "image") & (res["variant"] == "matched")]
    assert len(m_img) == 3 and set(m_img["autoencoder"]) == {"taef2"}
    assert set(m_img["stem_patch"]) == {8} and set(m_img["model"]) == {"convnext_atto"}
    assert all(v == ["identity", "hflip"] for v in res["views"])
    # the matched image cells stay with their autoencoder; the plain image cells are shared
    b = S.broadcast_image_rows(res)
    assert len(b[(b["space"] == "image") & (b["variant"] == "matched")]) == 3
    # the matched recon-latent test pairs matched recon cells with the plain latent cells, fold by fold
    t = S.pair_tests(rows, comparisons=S.MATCHED_COMPARISONS)
    rl = t[t["comparison"] == "recon-latent (matched)"].iloc[0]
    rec = res[(res["space"] == "recon") & (res["variant"] == "matched")].set_index("fold")["bacc"]
    lat = res[(res["space"] == "latent") & (res["variant"] == "plain")].set_index("fold")["bacc"]
    assert rl["n"] == 3 and rl["mean_diff"] == pytest.approx(float((rec - lat.loc[rec.index]).mean()))
    ir = t[t["comparison"] == "image-recon (matched)"].iloc[0]
    img = m_img.set_index("fold")["bacc"]
    assert ir["mean_diff"] == pytest.approx(float((img - rec.loc[img.index]).mean()))
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Architecture-matched control" in md and "recon-latent (matched)" in md
    assert "matched control" in md.split("## Main results")[0]  # a findings sentence
