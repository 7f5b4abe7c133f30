"""Synthetic-data fidelity and privacy against closed forms, hand-computed fixtures and constructed generators."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import linalg

from latentgap.errors import UserError
from latentgap.synth.fidelity import RandomConvFeatures, extract, fidelity, timm_features
from latentgap.synth.privacy import copies, denoising_losses, membership_auc, nearest


def _closed_form_fd(m1, s1, m2, s2):
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_frechet_distance_of_gaussians_against_the_closed_form():
    rng = np.random.default_rng(0)
    d = 4
    a = rng.normal(size=(d, d))
    s1, s2 = a @ a.T / d + np.eye(d), np.diag([0.5, 1.0, 2.0, 3.0])
    m1, m2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    x = rng.multivariate_normal(m1, s1, size=8000)
    y = rng.multivariate_normal(m2, s2, size=8000)
    r = fidelity(x, y, kid_subsets=2, kid_subset_size=100)
    # exact against the closed form of the samples' own moments ...
    assert r["fd"] == pytest.approx(_closed_form_fd(x.mean(0), np.cov(x.T), y.mean(0), np.cov(y.T)), rel=1e-6)
    # ... and close to that of the true Gaussians
    assert r["fd"] == pytest.approx(_closed_form_fd(m1, s1, m2, s2), rel=0.1)
    assert r["fd_reliable"] and r["lead"] == "fd"
    same = fidelity(x[:4000], x[4000:], kid_subsets=2, kid_subset_size=100)
    assert same["fd"] < 0.02


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 3)), rng.normal(0.5, 1.0, size=(40, 3))
    r = fidelity(x, y, kid_subsets=1, kid_subset_size=40)  # one subset of every sample: no sampling left
    k = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m = len(x)
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    assert r["kid_mean"] == pytest.approx(mmd, rel=1e-6) and r["kid_std"] == 0.0
    assert r["fd_reliable"] and r["lead"] == "fd"  # 40 samples in 3 dimensions
    few = fidelity(np.random.rand(20, 16), np.random.rand(20, 16), kid_subsets=2, kid_subset_size=10)
    assert not few["fd_reliable"] and few["lead"] == "kid"  # 20 samples in 16 dimensions: lead with KID


def test_precision_recall_density_coverage_on_a_hand_fixture():
    real = np.arange(6, dtype=float)[:, None]  # 0..5, 1-NN radius 1 each
    fake = np.array([[0.5], [10.0], [20.0]])  # 1-NN radii among fakes: 9.5, 9.5, 10
    r = fidelity(real, fake, nearest_k=1, kid_subsets=1, kid_subset_size=3)
    assert r["precision"] == pytest.approx(1 / 3)  # 0.5 lies in a real ball, 10 and 20 do not
    assert r["recall"] == pytest.approx(1.0)  # every real lies in 0.5's ball of radius 9.5
    assert r["density"] == pytest.approx(2 / 3)  # (2 + 0 + 0) / (k * M)
    assert r["coverage"] == pytest.approx(2 / 6)  # reals 0 and 1 have a fake within their radius


def test_chunked_prdc_equals_prdc():
    import contextlib
    import io

    from prdc import compute_prdc

    from latentgap.synth.fidelity import prdc_chunked

    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(300, 8)), rng.normal(0.3, 1.2, size=(250, 8))
    with contextlib.redirect_stdout(io.StringIO()):
        want = compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    got = prdc_chunked(real, fake, 5, chunk=37)
    assert got == pytest.approx({k: float(v) for k, v in want.items()}, abs=1e-6)


def test_fidelity_refuses_what_it_cannot_measure():
    with pytest.raises(UserError, match="cannot be compared"):
        fidelity(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(UserError, match="needs at least 7 real and 7 synthetic"):
        fidelity(np.random.rand(20, 3), np.random.rand(4, 3))


def test_feature_spaces_offline_and_through_the_timm_path(tmp_path):
    import timm

    imgs = (np.random.default_rng(0).random((5, 32, 32)) * 255).astype(np.uint8)
    f1 = extract(RandomConvFeatures(1, seed=3), imgs)
    f2 = extract(RandomConvFeatures(1, seed=3), imgs)
    f3 = extract(RandomConvFeatures(1, seed=4), imgs)
    assert f1.shape == (5, 384) and np.array_equal(f1, f2) and not np.allclose(f1, f3)
    # a user's pretrained backbone (DINOv2, Inception) goes through timm_features; here a small local file
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", num_classes=10)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    feats = timm_features("resnet10t", weights=str(tmp_path / "w.pth"))
    out = extract(feats, imgs)
    assert out.shape == (5, feats.num_features)
    ref = net.eval()
    x = torch.from_numpy(imgs)[:, None].float().div(255).expand(-1, 3, -1, -1)
    x = torch.nn.functional.interpolate(x, size=feats.size, mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        want = ref.forward_head(ref.forward_features((x - feats.mean) / feats.std), pre_logits=True)
    assert np.allclose(out, want.numpy(), atol=1e-5)
    with pytest.raises(UserError, match="could not be loaded"):
        timm_features("resnet10t", weights=str(tmp_path / "missing.pth"))


def test_nearest_is_chunked_and_exact():
    rng = np.random.default_rng(2)
    q, r = rng.normal(size=(50, 6)), rng.normal(size=(70, 6))
    d, i = nearest(q, r, chunk=7)
    full = np.linalg.norm(q[:, None] - r[None], axis=2)
    assert np.array_equal(i, full.argmin(1)) and np.allclose(d, full.min(1))
    with pytest.raises(UserError, match="same size and channels"):
        nearest(q, r[:, :5])


def test_copies_of_training_samples_and_of_new_samples():
    rng = np.random.default_rng(3)
    train, heldout, fresh = rng.normal(size=(300, 16)), rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    copied = copies(train[rng.integers(0, 300, 200)], train, heldout)
    assert copied["copy_rate"] == 1.0 and copied["median_synthetic"] == 0.0
    new = copies(fresh, train, heldout)
    assert new["copy_rate"] < 0.05 and 0.8 < new["ratio"] < 1.25


class _EmpiricalDenoiser(torch.nn.Module):
    """The optimal flow-matching denoiser of a finite point set: a generator that reproduces those points."""

    def __init__(self, points: torch.Tensor):
        super().__init__()
        self.register_buffer("p", points.float())
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, z, model_time, labels):
        t = (model_time / 1000).view(-1, 1).clamp(1e-3, 1 - 1e-3)
        zf, pf = z.flatten(1), self.p.flatten(1)
        logw = -((zf[:, None] - (1 - t)[:, :, None] * pf[None]) ** 2).sum(-1) / (2 * t ** 2)
        x0 = torch.softmax(logw, 1) @ pf
        eps = (zf - (1 - t) * x0) / t
        return (eps - x0).view_as(z)


def test_membership_inference_flags_a_memorising_generator_and_not_an_independent_one():
    from types import SimpleNamespace

    from latentgap.diffusion.objectives import FlowMatching

    g = torch.Generator().manual_seed(0)
    members, nonmembers, other = (torch.randn(80, 2, 2, 2, generator=g) for _ in range(3))
    y = torch.zeros(80, dtype=torch.long)

    def attack(points):
        gen = SimpleNamespace(model=_EmpiricalDenoiser(points), objective=FlowMatching())
        lm = denoising_losses(gen, members, y, levels=(0.1, 0.2))
        ln = denoising_losses(gen, nonmembers, y, levels=(0.1, 0.2))
        return membership_auc(-lm, -ln)  # lower loss = more likely a member

    leak = attack(members)
    assert leak["auc"] > 0.95 and leak["tpr_at_1pct_fpr"] > 0.5
    fair = attack(other)  # reproduces real images that are neither members nor the non-members tested
    assert 0.35 < fair["auc"] < 0.65
    with pytest.raises(UserError, match="at least 2 members"):
        membership_auc([0.1], [0.2, 0.3])


@pytest.mark.usefixtures("one_thread")
def test_external_folder_evaluated_end_to_end(tmp_path, capsys):
    """Your own generator's images as class sub-folders: imported as a synthetic set of the fold, then utility
    (TRTR vs TSTR), fidelity and copies; membership inference skipped with the reason."""
    import json

    from PIL import Image

    from latentgap.cli import main
    from latentgap.data import open_dataset

    real = "phantom:n=60,size=32,classes=2,imbalance=1"
    ds = open_dataset(real)
    other = open_dataset("phantom:n=40,size=32,classes=2,imbalance=1,seed=7")  # "generated": other phantom images
    ext = tmp_path / "ext"
    for i in range(len(other)):
        c = int(np.asarray(other.labels)[i])
        d = ext / ds.class_names[c]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(other.load_uint8([i])[0, ..., 0]).save(d / f"{i}.png")
    main(["synth", "eval", "--real", real, "--synthetic", str(ext), "--folds", "3", "--epochs", "1",
          "--out", str(tmp_path / "ev"), "--device", "cpu"])
    out = json.loads(capsys.readouterr().out.splitlines()[0])
    assert out["n_synthetic"] == 40 and 0 <= out["copy_rate_pixel_l2"] <= 1
    assert "needs the generator" in out["membership"] and 0 <= out["tstr_bacc"] <= 1
    summ = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summ["fidelity"]["random"]["overall"]["n_synthetic"] == 40 and (tmp_path / "ev" / "gallery.png").is_file()
    imported = open_dataset(str(tmp_path / "ev" / "imported"))
    assert imported.synthetic and sorted(set(np.asarray(imported.labels).ravel())) == [0, 1]
    # unknown labels, wrong size: one line each
    for name in ("tumour", ds.class_names[0]):
        (tmp_path / "bad" / name).mkdir(parents=True)
        Image.fromarray(other.load_uint8([0])[0, ..., 0]).save(tmp_path / "bad" / name / "0.png")
    with pytest.raises(SystemExit):
        main(["synth", "eval", "--real", real, "--synthetic", str(tmp_path / "bad"), "--folds", "3", "--no-utility",
              "--out", str(tmp_path / "ev2")])
    assert "synthetic class 'tumour' is not a class" in capsys.readouterr().err
    for name in ds.class_names:
        (tmp_path / "small" / name).mkdir(parents=True)
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "small" / name / "0.png")
    with pytest.raises(SystemExit):
        main(["synth", "eval", "--real", real, "--synthetic", str(tmp_path / "small"), "--folds", "3", "--no-utility",
              "--out", str(tmp_path / "ev3")])
    assert "synthetic images are 16x16x1, the real ones 32x32x1" in capsys.readouterr().err
