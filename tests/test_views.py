"""Encode-time views: the latent an LS batch gets for view v of image i is encode(view_v(image_i)) from the
autoencoder itself (real TAEF2 weights), and IS / RS / LS draw the same view of the same image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentgap.autoencoders import adapt_images, create_autoencoder
from latentgap.data import make_splits, open_dataset, to_uint8
from latentgap.errors import UserError
from latentgap.latents import ensure_cache, space_dataset
from latentgap.latents.views import apply_view, apply_view_uint8, check_views
from latentgap.train.loop import Batches

VIEWS = ["identity", "hflip", "vflip", "rot90"]


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory):
    src = np.load(shared_data / "datasets" / "isic_skin8_64.npz")
    path = tmp_path_factory.mktemp("views") / "isic24.npz"
    n = 24
    np.savez(path, train_images=src["train_images"][:n], train_labels=src["train_labels"][:n])
    ds = open_dataset(str(path))
    ae = create_autoencoder("taef2", device="cpu")
    cache = ensure_cache(ds, ae, path.parent / "root", dtype="float32", batch_size=8, views=VIEWS, device="cpu",
                         progress=False)
    splits = make_splits(ds, protocol="kfold", k=3, seed=0, val_fraction=0.2)
    return ds, ae, cache, splits


def test_latent_of_view_is_encode_of_viewed_image(setup):
    ds, ae, cache, splits = setup
    part = space_dataset("latent", ds, cache, splits, 0, "train", views=VIEWS)
    mean, std = part.normalisation
    pos = np.arange(8)
    views = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    z, _ = part.get_batch(pos, views)
    z = z * torch.as_tensor(std, dtype=torch.float32)[None, :, None, None] + torch.as_tensor(mean, dtype=torch.float32)[None, :, None, None]
    x = ds.load(part.indices[pos])
    with torch.inference_mode():
        for i, v in enumerate(views):
            want = ae.encode(adapt_images(apply_view(VIEWS[v], x[i:i + 1]), ae.info))[0]
            assert torch.allclose(z[i], want, atol=1e-4, rtol=1e-4), VIEWS[v]
    # and a flipped latent is not the latent of a flipped image: the reason views exist
    with torch.inference_mode():
        z0 = ae.encode(adapt_images(x[:1], ae.info))[0]
        z1 = ae.encode(adapt_images(x[:1].flip(-1), ae.info))[0]
    assert (z1 - z0.flip(-1)).norm() / z1.norm() > 0.3


def test_recon_and_image_of_view(setup):
    ds, ae, cache, splits = setup
    rec = space_dataset("recon", ds, cache, splits, 1, "train", views=VIEWS)
    img = space_dataset("image", ds, cache, splits, 1, "train", views=VIEWS)
    pos, views = np.arange(6), np.array([1, 3, 0, 2, 1, 3])
    xr, _ = rec.get_batch(pos, views)
    xi, _ = img.get_batch(pos, views)
    x = ds.load(rec.indices[pos])
    with torch.inference_mode():
        for i, v in enumerate(views):
            xv = apply_view(VIEWS[v], x[i:i + 1])
            assert torch.equal(xi[i], xv[0])  # images: the view itself, exactly
            want = ae.decode(ae.encode(adapt_images(xv, ae.info))).float().clamp(0, 1)
            diff = np.abs(to_uint8(xr[i:i + 1]).astype(int) - to_uint8(want).astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.05  # uint8 rounding of batch-size-dependent float noise
    # the uint8 and tensor forms of a view agree
    u = ds.load_uint8(np.arange(3))
    for v in VIEWS:
        assert np.array_equal(apply_view_uint8(v, u), to_uint8(apply_view(v, ds.load(np.arange(3)))))


def test_spaces_draw_the_same_views_and_eval_reads_identity(setup):
    ds, _, cache, splits = setup
    seen = {}
    for space in ("image", "recon", "latent"):
        part = space_dataset(space, ds, cache, splits, 2, "train", views=VIEWS)
        calls = []
        orig = part.get_batch
        part.get_batch = lambda p, v=None, _o=orig, _c=calls: (_c.append((np.asarray(p).tolist(), None if v is None else np.asarray(v).tolist())), _o(p, v))[1]
        g = torch.Generator().manual_seed(7)
        for _ in range(2):
            list(Batches(part, 5, shuffle=True, generator=g))
        seen[space] = calls
        drawn = {x for _, v in calls for x in v}
        assert drawn == {0, 1, 2, 3}  # all views are drawn
        val = space_dataset(space, ds, cache, splits, 2, "val", views=VIEWS)
        calls_val = []
        val.get_batch = lambda p, v=None, _o=val.get_batch, _c=calls_val: (_c.append(v), _o(p, v))[1]
        list(Batches(val, 4))
        assert calls_val and all(v is None for v in calls_val)  # validation / test: identity only
    assert seen["image"] == seen["recon"] == seen["latent"]


def test_view_names_are_checked(setup):
    ds, ae, cache, splits = setup
    with pytest.raises(UserError, match="unknown view 'mirror'"):
        check_views(["identity", "mirror"])
    with pytest.raises(UserError, match="must start with 'identity'"):
        check_views(["hflip", "identity"])
    with pytest.raises(UserError, match="needs square images"):
        check_views(["identity", "rot90"], (32, 48))
    with pytest.raises(UserError, match="holds the views .* not 'hvflip'"):
        space_dataset("latent", ds, cache, splits, 0, "train", views=["identity", "hvflip"])
    assert cache.views == tuple(VIEWS)


def test_identity_only_cache_keeps_its_request(setup, tmp_path):
    """Adding views did not rename existing caches: an identity-only request has no ``views`` key."""
    from latentgap.latents.cache import _request

    ds, ae, _, _ = setup
    base = _request(ds, ae, dtype="float32", grey_to_rgb=True, with_recon=True)
    assert "views" not in base
    assert _request(ds, ae, dtype="float32", grey_to_rgb=True, with_recon=True, views=("identity", "hflip"))["views"] \
        == ["identity", "hflip"]
