"""The built-in phantom: determinism per index, long tail, and where each feature variant puts the class signal."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from sklearn.metrics import balanced_accuracy_score

from latentgap.cli import main
from latentgap.data import open_dataset
from latentgap.data.phantom import PhantomDataset


def test_same_seed_and_index_give_identical_bytes_whatever_the_batch():
    ds = open_dataset("phantom:n=300,size=32,channels=3,patients=40")
    want = ds.load_uint8(np.arange(300))
    picks = np.array([299, 5, 17, 5, 0, 128])
    assert np.array_equal(ds.load_uint8(picks), want[picks])          # other batch, repeats, reversed order
    again = open_dataset("phantom:n=300,size=32,channels=3,patients=40")  # a fresh object, same spec
    assert np.array_equal(again.load_uint8(picks[::-1]), want[picks[::-1]])
    for i in (7, 250):                                                # one image at a time
        assert np.array_equal(ds.load_uint8([i])[0], want[i])
    other = open_dataset("phantom:n=300,size=32,channels=3,patients=40,seed=1")
    assert not np.array_equal(other.load_uint8(picks), want[picks])
    assert other.fingerprint() != ds.fingerprint()


def test_n_only_changes_labels_not_how_an_index_is_drawn():
    # image i of two phantoms that differ only in n: same random draws, so same pixels wherever labels agree
    a, b = open_dataset("phantom:n=400,size=32"), open_dataset("phantom:n=500,size=32")
    same = np.flatnonzero(a.labels == b.labels[:400])[:20]
    assert np.array_equal(a.load_uint8(same), b.load_uint8(same))


def test_shapes_ranges_and_float_view():
    ds = open_dataset("phantom:n=50,size=48,channels=3")
    x = ds.load(np.arange(10))
    assert x.shape == (10, 3, 48, 48) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.std()) > 0.05
    assert ds.image_size == (48, 48) and ds.channels == 3 and len(ds) == 50


@pytest.mark.parametrize("n,k,imb", [(10000, 5, 50.0), (2000, 3, 20.0), (997, 2, 100.0)])
def test_class_counts_are_geometric_with_the_requested_imbalance(n, k, imb):
    ds = PhantomDataset(n=n, classes=k, imbalance=imb)
    counts = np.asarray(ds.class_counts())
    assert counts.sum() == n and np.all(np.diff(counts) < 0)
    exact = n * imb ** (-np.arange(k) / (k - 1))
    exact = exact / exact.sum() * n
    assert np.all(np.abs(counts - exact) < 1)                          # largest-remainder rounding of the geometric law
    assert counts[0] / counts[-1] == pytest.approx(imb, rel=0.02 + 1 / counts[-1])
    assert ds.imbalance() == counts[0] / counts[-1]


def test_default_is_long_tailed_at_least_50_to_1():
    ds = open_dataset("phantom")
    assert len(ds) == 10000 and ds.num_classes == 5 and ds.imbalance() >= 49.5


def test_multilabel_prevalence_is_long_tailed_and_independent():
    ds = open_dataset("phantom:n=20000,classes=4,imbalance=20,multilabel=1,size=32")
    assert ds.multilabel and ds.labels.shape == (20000, 4) and set(np.unique(ds.labels)) == {0, 1}
    prev = ds.labels.mean(0)
    assert prev == pytest.approx(0.4 * 20.0 ** (-np.arange(4) / 3), rel=0.15)
    # independent findings: the co-occurrence of the two commonest equals the product of prevalences
    both = (ds.labels[:, 0] & ds.labels[:, 1]).mean()
    assert both == pytest.approx(prev[0] * prev[1], rel=0.1)
    x = ds.load_uint8(np.arange(16))
    assert x.shape == (16, 32, 32, 1)


def test_patients_share_anatomy():
    ds = open_dataset("phantom:n=400,size=32,patients=50")
    pid = ds.patient_ids
    assert len(np.unique(pid)) == 50 and np.bincount(np.unique(pid, return_inverse=True)[1]).min() == 8
    organ = ndimage.gaussian_filter(ds.load(np.arange(400))[:, 0].numpy(), (0, 1.5, 1.5)) > 0.25

    def iou(i, j):
        return (organ[i] & organ[j]).sum() / (organ[i] | organ[j]).sum()

    rng = np.random.default_rng(0)
    same = [iou(*rng.choice(np.flatnonzero(pid == p), 2, replace=False)) for p in np.unique(pid)]
    diff = [iou(i, j) for i, j in rng.integers(0, 400, (50, 2)) if pid[i] != pid[j]]
    assert np.mean(same) > 0.9 and np.mean(same) > np.mean(diff) + 0.1  # texture, lesion and noise stay per image


def _measures(x: np.ndarray, k: int) -> np.ndarray:
    """Per image: lesion contrast and area (low-pass), and the nearest class orientation of the 0.27-0.48
    cycles/pixel texture (high-pass). Independent of the generator's internals: measured on pixels only."""
    s = x.shape[-1]
    f = np.fft.fftfreq(s)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    band = (np.hypot(fx, fy) > 0.27) & (np.hypot(fx, fy) < 0.48)
    ang = np.arctan2(fy, fx)[band] % np.pi
    thetas = np.pi * np.arange(k) / k
    out = []
    for im in x:
        b = ndimage.gaussian_filter(im, 1.5)            # removes the 2-3 px stripes (gain < 0.02)
        organ = b > 0.25
        med = np.median(b[organ])
        con = b.max() - med
        p = np.abs(np.fft.fft2((im - b) * organ)) ** 2  # high-pass power spectrum
        th = (np.angle((p[band] * np.exp(2j * ang)).sum()) / 2) % np.pi  # doubled-angle mean orientation
        out.append((con, (b > med + con / 2).sum(), np.argmin(np.abs((th - thetas + np.pi / 2) % np.pi - np.pi / 2))))
    return np.array(out, dtype=float)


@pytest.mark.parametrize("feature", ["coarse", "intensity", "fine"])
def test_each_feature_variant_puts_the_class_signal_in_its_own_band(feature):
    ds = open_dataset(f"phantom:n=3000,size=64,feature={feature},imbalance=5")
    idx = np.arange(400)
    y = ds.labels[idx]
    m = _measures(ds.load(idx)[:, 0].numpy(), ds.num_classes)
    rho_con, rho_area = stats.spearmanr(y, m[:, 0])[0], stats.spearmanr(y, m[:, 1])[0]
    bacc_orient = balanced_accuracy_score(y, m[:, 2].astype(int))
    # measured (400 images): coarse area 0.88, intensity contrast 0.87, fine orientation bACC 0.88; the
    # other two measures at chance (|rho| <= 0.09, bACC 0.19 with chance 0.2)
    signal = {"coarse": rho_area, "intensity": rho_con, "fine": bacc_orient}
    assert signal[feature] > 0.7
    assert bacc_orient < 0.3 or feature == "fine"
    assert abs(rho_area) < 0.15 or feature == "coarse"
    assert abs(rho_con) < 0.15 or feature == "intensity"


def test_ram_holds_labels_only():
    t = time.perf_counter()
    ds = open_dataset("phantom:n=1000000")
    assert time.perf_counter() - t < 10
    assert ds.labels.nbytes == 8_000_000 and not any(isinstance(v, np.ndarray) and v.nbytes > 9_000_000
                                                     for v in vars(ds).values())
    assert ds.load_uint8([999_999]).shape == (1, 64, 64, 1)


def test_resize_is_recorded_and_changes_the_fingerprint():
    a, b = open_dataset("phantom:n=50,size=64"), open_dataset("phantom:n=50,size=64", resize=32)
    assert b.image_size == (32, 32) and b.describe()["resize"] == 32 and b.describe()["native_size"] == [64, 64]
    assert a.fingerprint() != b.fingerprint()
    assert b.load_uint8([3]).shape == (1, 32, 32, 1)


@pytest.mark.parametrize("spec", ["phantom:colour=2", "phantom:n=abc", "phantom:feature=medium", "phantom:classes=1"])
def test_bad_phantom_options_exit_2_with_one_line(spec, capsys):
    with pytest.raises(SystemExit) as e:
        main(["data", "info", spec])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "Fix:" in err and "Traceback" not in err


def _train_tiny_cnn(ds, idx_train, idx_test, epochs=12, seed=0):
    """A 3-layer CNN (BatchNorm, global max pool: the lesion is small), class-balanced sampling and a cosine
    learning rate; returns balanced accuracy on ``idx_test``."""
    torch.manual_seed(seed)
    layers = []
    for cin, cout in [(ds.channels, 16), (16, 32), (32, 64)]:
        layers += [torch.nn.Conv2d(cin, cout, 3, padding=1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]
        layers += [torch.nn.MaxPool2d(2)] if cout < 64 else []
    net = torch.nn.Sequential(*layers, torch.nn.AdaptiveMaxPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, ds.num_classes))
    x, y = ds.load(idx_train), torch.as_tensor(ds.labels[idx_train])
    mean, std = x.mean(), x.std()
    x = (x - mean) / std
    # long tail: draw classes uniformly (each epoch = len(y) draws) rather than re-weighting a 19-image tail
    p = (1.0 / torch.bincount(y, minlength=ds.num_classes).float())[y]
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * (len(y) // 64))
    for _ in range(epochs):
        net.train()
        for b in torch.multinomial(p, len(y) // 64 * 64, replacement=True, generator=g).view(-1, 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[b]), y[b]).backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        pred = net((ds.load(idx_test) - mean) / std).argmax(1).numpy()
    return balanced_accuracy_score(ds.labels[idx_test], pred)


@pytest.mark.slow
@pytest.mark.parametrize("feature", ["coarse", "intensity", "fine"])
def test_a_small_cnn_learns_each_variant_above_chance(feature):
    # n=2000 at 32 px with the default 50:1 tail; chance balanced accuracy = 0.2
    ds = open_dataset(f"phantom:n=2000,size=32,feature={feature}")
    idx = np.random.default_rng(0).permutation(len(ds))
    bacc = _train_tiny_cnn(ds, idx[:1500], idx[1500:])
    print(f"phantom feature={feature}: tiny CNN balanced accuracy {bacc:.3f}")
    # measured 0.396 / 0.459 / 0.625 (coarse / intensity / fine); 0.3 leaves room for other CPUs and threads
    assert bacc > 0.3
