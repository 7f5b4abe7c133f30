"""Dataset adapters: real MedMNIST-format files, MedMNIST names, folders, CSV manifests, DICOM, resize, errors."""

from __future__ import annotations

import time

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from latentgap.cli import main
from latentgap.data import open_dataset, to_float, to_uint8
from latentgap.errors import UserError

# /work/shared/data/README.md, "class counts (train / val / test)"
ISIC_COUNTS = {"train": [103, 338, 85, 323, 251, 416, 163, 125], "val": [11, 38, 10, 36, 28, 46, 18, 14],
               "test": [14, 16, 16, 16, 16, 16, 16, 3]}
BUSI_COUNTS = {"train": [306, 147, 93], "val": [44, 21, 13], "test": [87, 42, 27]}


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    return e.value.code, capsys.readouterr().err


def assert_one_line_error(args, capsys, *needles):
    code, err = run_cli(args, capsys)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Fix:" in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


# --------------------------------------------------------------------------- real files

@pytest.mark.parametrize("name,counts,channels,side", [("isic_skin8_64", ISIC_COUNTS, 3, 64), ("busi_128", BUSI_COUNTS, 1, 128)])
def test_real_npz_counts_match_the_readme(shared_data, name, counts, channels, side):
    ds = open_dataset(name)
    assert ds.channels == channels and ds.image_size == (side, side) and not ds.multilabel
    for split, want in counts.items():
        got = np.bincount(ds.labels[ds.official_split == split], minlength=ds.num_classes)
        assert got.tolist() == want
    assert len(ds) == sum(map(sum, counts.values()))
    raw = np.load(shared_data / "datasets" / f"{name}.npz")
    assert ds.class_names == [str(c) for c in raw["class_names"]]
    # pooled in train, val, test order; load() is the raw bytes / 255
    i = np.array([0, len(raw["train_images"]), len(ds) - 1])
    ref = np.concatenate([raw["train_images"][:1], raw["val_images"][:1], raw["test_images"][-1:]]).astype(np.float32) / 255
    x = ds.load(i)
    assert x.shape == (3, channels, side, side) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(ref.reshape(3, side, side, channels)).permute(0, 3, 1, 2))
    assert 0.0 <= float(ds.load(np.arange(64)).min()) and float(ds.load(np.arange(64)).max()) <= 1.0


def test_pneumoniamnist_name_resolves_to_the_shared_file_with_medmnist_class_names(shared_data):
    ds = open_dataset("pneumoniamnist")
    assert ds.name == "pneumoniamnist_28" and str(shared_data / "datasets" / "pneumoniamnist_28.npz") in ds.source
    assert ds.class_names == ["normal", "pneumonia"] and len(ds) == 5856 and ds.channels == 1


def test_fingerprint_is_the_file_content_plus_resize(tmp_path, shared_data):
    a = open_dataset("breastmnist_28")
    copy = tmp_path / "b.npz"
    copy.write_bytes((shared_data / "datasets" / "breastmnist_28.npz").read_bytes())
    assert open_dataset(str(copy)).fingerprint() == a.fingerprint()
    assert open_dataset("breastmnist_28", resize=32).fingerprint() != a.fingerprint()


# --------------------------------------------------------------------------- conversions and resize

def test_to_float_to_uint8_round_trip_and_ties_to_even():
    u = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    f = to_float(u)
    assert f.shape == (1, 1, 16, 16) and torch.allclose(f.flatten(), torch.arange(256) / 255.0)
    assert np.array_equal(to_uint8(f), u)
    x = torch.tensor([0.5, 1.5, 2.5, 253.5, -3.0, 300.0]).reshape(1, 1, 1, 6) / 255
    assert to_uint8(x).flatten().tolist() == [0, 2, 2, 254, 0, 255]  # numpy/IEEE round half to even, clamped


def test_resize_matches_pil_bilinear(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (4, 50, 50, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", train_images=img, train_labels=np.array([0, 1, 0, 1]))
    ds = open_dataset(str(tmp_path / "d.npz"), resize=20)
    got = ds.load_uint8(np.arange(4)).astype(int)
    ref = np.stack([np.asarray(Image.fromarray(im).resize((20, 20), Image.BILINEAR)) for im in img]).astype(int)
    assert got.shape == (4, 20, 20, 3) and np.abs(got - ref).max() <= 1
    assert ds.describe()["resize"] == 20 and ds.describe()["image_size"] == [20, 20]


# --------------------------------------------------------------------------- npz errors through the CLI

def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_npz_errors_are_one_line(tmp_path, capsys):
    img = np.zeros((4, 8, 8), np.uint8)
    assert_one_line_error(["data", "info", str(tmp_path / "nope.npz")], capsys, "nope.npz", "not found")
    (tmp_path / "text.npz").write_text("hello")
    assert_one_line_error(["data", "info", str(tmp_path / "text.npz")], capsys, "not a readable .npz")
    assert_one_line_error(["data", "info", _npz(tmp_path / "keys.npz", images=img, labels=np.zeros(4))],
                          capsys, "train_images", "found ['images', 'labels']")
    assert_one_line_error(["data", "info", _npz(tmp_path / "half.npz", train_images=img, train_labels=np.zeros(4),
                                                test_images=img)], capsys, "test_labels")
    assert_one_line_error(["data", "info", _npz(tmp_path / "neg.npz", train_images=img, train_labels=np.array([0, 1, -1, 0]))],
                          capsys, "out of range", "-1")
    assert_one_line_error(["data", "info", _npz(tmp_path / "big.npz", train_images=img, train_labels=np.array([0, 1, 2, 0]),
                                                class_names=np.array(["a", "b"]))], capsys, "out of range", "2")
    assert_one_line_error(["data", "info", _npz(tmp_path / "ml.npz", train_images=img,
                                                train_labels=np.array([[0, 1], [1, 2], [0, 0], [1, 1]]))], capsys, "0/1")
    assert_one_line_error(["data", "info", _npz(tmp_path / "count.npz", train_images=img, train_labels=np.zeros(3, int))],
                          capsys, "4 images", "3 labels")
    assert_one_line_error(["data", "info", "no_such_dataset_name"], capsys, "no_such_dataset_name")


def test_multilabel_npz(tmp_path):
    y = np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 0]])
    ds = open_dataset(_npz(tmp_path / "ml.npz", train_images=np.zeros((4, 8, 8, 3), np.uint8), train_labels=y))
    assert ds.multilabel and ds.num_classes == 3 and ds.class_counts() == [2, 2, 1] and ds.labels.dtype == np.int64


# --------------------------------------------------------------------------- MedMNIST names

def test_medmnist_name_from_data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTGAP_DATA_ROOT", str(tmp_path))
    img = np.random.default_rng(0).integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)
    np.savez(tmp_path / "dermamnist_64.npz", train_images=img, train_labels=np.arange(7)[:, None],
             val_images=img[:2], val_labels=np.zeros((2, 1), int), test_images=img[:3], test_labels=np.ones((3, 1), int))
    ds = open_dataset("dermamnist_64")
    assert ds.name == "dermamnist_64" and len(ds) == 12 and ds.num_classes == 7
    assert ds.class_names[5] == "melanocytic nevi" and ds.official_split.tolist().count("val") == 2


def test_medmnist_offline_fails_fast_naming_file_and_folder(tmp_path, monkeypatch, capsys):
    import medmnist

    monkeypatch.setenv("LATENTGAP_DATA_ROOT", str(tmp_path))
    # an address that refuses at once, whatever the machine's network (this one is offline anyway)
    monkeypatch.setitem(medmnist.INFO["pneumoniamnist"], "url_128", "http://127.0.0.1:9/pneumoniamnist_128.npz")
    t = time.perf_counter()
    assert_one_line_error(["data", "info", "pneumoniamnist_128"], capsys, "pneumoniamnist_128.npz", str(tmp_path))
    assert time.perf_counter() - t < 10
    assert list(tmp_path.iterdir()) == []  # no half-written download left behind
    assert_one_line_error(["data", "info", "dermamnist_100"], capsys, "dermamnist_64")


# --------------------------------------------------------------------------- folders, CSV, DICOM

def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_folder_of_pngs(tmp_path, capsys):
    rng = np.random.default_rng(1)
    imgs = {}
    for cls, n in [("benign", 3), ("malignant", 2)]:
        for i in range(n):
            imgs[(cls, i)] = rng.integers(0, 256, (12, 10), dtype=np.uint8)
            _png(tmp_path / "set" / cls / f"{i}.png", imgs[(cls, i)])
    _png(tmp_path / "set" / "malignant" / "rgb.png", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))  # minority RGB
    (tmp_path / "set" / "notes").mkdir()  # a folder without images is not a class
    ds = open_dataset(str(tmp_path / "set"))
    assert ds.class_names == ["benign", "malignant"] and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.channels == 1 and ds.image_size == (12, 10)                      # majority mode: grey
    x = ds.load_uint8(np.arange(6))
    assert np.array_equal(x[0, ..., 0], imgs[("benign", 0)]) and np.array_equal(x[4, ..., 0], imgs[("malignant", 1)])
    rgb = np.asarray(Image.open(tmp_path / "set" / "malignant" / "rgb.png").convert("L"))
    assert np.array_equal(x[5, ..., 0], rgb)                                   # ITU-R 601 luma, as PIL
    # mixed sizes: refused with the resize hint, accepted with --resize
    _png(tmp_path / "set" / "benign" / "odd.png", rng.integers(0, 256, (20, 20), dtype=np.uint8))
    assert_one_line_error(["data", "info", str(tmp_path / "set")], capsys, "different sizes", "--resize")
    ds = open_dataset(str(tmp_path / "set"), resize=16)
    assert ds.load_uint8(np.arange(7)).shape == (7, 16, 16, 1)


def test_csv_single_and_multi_label(tmp_path, capsys):
    rng = np.random.default_rng(2)
    rows = []
    for i in range(6):
        arr = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        _png(tmp_path / "img" / f"{i}.png", arr)
        rows.append(f"img/{i}.png,{['cyst', 'mass'][i % 2]},{i % 2},{int(i > 3)},P{i // 2},{['train', 'test', 'val'][i % 3]}")
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,effusion,nodule,patient_id,split\n" + "\n".join(rows) + "\n")
    ds = open_dataset(str(csv))
    assert ds.class_names == ["cyst", "mass"] and ds.labels.tolist() == [0, 1, 0, 1, 0, 1] and ds.channels == 3
    assert ds.patient_ids.tolist() == ["P0", "P0", "P1", "P1", "P2", "P2"]
    assert ds.official_split.tolist() == ["train", "test", "val"] * 2
    assert np.array_equal(ds.load_uint8([3])[0], np.asarray(Image.open(tmp_path / "img" / "3.png")))
    ml = open_dataset(f"{csv}:labels=effusion+nodule")
    assert ml.multilabel and ml.class_names == ["effusion", "nodule"] and ml.labels[:, 1].tolist() == [0, 0, 0, 0, 1, 1]
    # bad manifests
    (tmp_path / "nolabel.csv").write_text("path\nimg/0.png\n")
    assert_one_line_error(["data", "info", str(tmp_path / "nolabel.csv")], capsys, "label", "labels=col1+col2")
    (tmp_path / "missing.csv").write_text("path,label\nimg/0.png,a\nimg/99.png,b\n")
    assert_one_line_error(["data", "info", str(tmp_path / "missing.csv")], capsys, "99.png")
    (tmp_path / "badml.csv").write_text("path,a,b\nimg/0.png,0,1\nimg/1.png,2,0\n")
    assert_one_line_error(["data", "info", f"{tmp_path / 'badml.csv'}:labels=a+b"], capsys, "0/1")


def _dicom(path, pixels: np.ndarray, photometric="MONOCHROME2", slope=1.0, intercept=0.0):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CT", "anon"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_dicom_rescale_invert_and_window(tmp_path):
    raw = np.array([[0, 100, 400, 1000], [2000, 3000, 4000, 4095]] * 2, dtype=np.uint16)  # (4, 4) 12-bit
    _dicom(tmp_path / "ct" / "normal" / "a.dcm", raw, slope=2.0, intercept=-1024.0)
    _dicom(tmp_path / "ct" / "lesion" / "b.dcm", raw, photometric="MONOCHROME1", slope=-1.0, intercept=0.0)
    assert pydicom.dcmread(tmp_path / "ct" / "normal" / "a.dcm").RescaleSlope == 2
    ds = open_dataset(str(tmp_path / "ct"))
    assert ds.class_names == ["lesion", "normal"] and ds.channels == 1 and ds.image_size == (4, 4)
    x = ds.load_uint8([0, 1])[..., 0].astype(int)
    hu = raw * 2.0 - 1024.0                                            # Hounsfield-like values
    want_normal = np.round((hu - hu.min()) / (hu.max() - hu.min()) * 255)
    v = -(raw * -1.0)                                                  # slope -1, then MONOCHROME1 inverted back
    want_lesion = np.round((v - v.min()) / (v.max() - v.min()) * 255)
    assert np.array_equal(x[1], want_normal) and np.array_equal(x[0], want_lesion)
    assert x[1, 0, 0] == 0 and x[1, 1, 3] == 255


def test_unknown_extension_and_resize_values(tmp_path, capsys):
    (tmp_path / "x.txt").write_text("1")
    assert_one_line_error(["data", "info", str(tmp_path / "x.txt")], capsys, "x.txt")
    assert_one_line_error(["data", "info", "phantom:n=20", "--resize", "2"], capsys, "resize")
    with pytest.raises(UserError):
        open_dataset("phantom", resize=3)


def test_to_float_gives_standard_nchw_strides_for_grey_images():
    """Permuted NHWC grey images have strides (HW, 1, W, 1): torch calls them contiguous and channels-last at once,
    and CPU convolution backward on them corrupted the heap (torch 2.14.1, a batch of 5 after one of 16). Every
    image tensor latentgap hands to a model is a fresh NCHW tensor."""
    import torch

    from latentgap.data import to_float

    x = to_float(np.arange(5 * 16 * 16, dtype=np.uint8).reshape(5, 16, 16, 1))
    assert x.stride() == (256, 256, 16, 1) and x.shape == (5, 1, 16, 16)
    assert torch.equal(x[:, 0], torch.from_numpy(np.arange(5 * 16 * 16, dtype=np.uint8).reshape(5, 16, 16)).float() / 255)
    rgb = to_float(np.zeros((2, 8, 8, 3), np.uint8))
    assert rgb.stride() == (192, 64, 8, 1)
