"""run_training end to end on a tiny phantom with the real TAEF2 weights, and the `latentgap train` command.

The end-to-end trainings are marked slow (tens of seconds each on a busy 2-core CPU); the command-line
error checks are fast.
"""

import json

import numpy as np
import pytest

from latentgap.cli import main
from latentgap.errors import UserError
from latentgap.train import TrainConfig, run_training
from latentgap.train.distill import _check_teacher

DATA = "phantom:n=90,size=32,classes=3,feature=coarse,imbalance=2"
TINY_CONVNEXT = {"dims": [8, 16, 16, 32], "depths": [1, 1, 1, 1]}
TINY_RESNET = {"layers": [1, 1, 1, 1]}


@pytest.fixture(scope="module")
def root(tmp_path_factory, shared_data):
    return tmp_path_factory.mktemp("lg-root")


def _cfg(root, **kw):
    base = dict(dataset=DATA, autoencoder="taef2", space="latent", k=3, fold=0, seed=0, epochs=2, patience=5,
                batch_size=32, model="convnext_atto", model_kwargs=TINY_CONVNEXT, pretrained="false",
                device="cpu", root=str(root))
    return TrainConfig(**{**base, **kw})


def _cli(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip()
    return e.value.code, err


@pytest.mark.slow
def test_latent_run_writes_folder_and_is_deterministic(root, tmp_path):
    row = run_training(_cfg(root), tmp_path / "a")
    for name in ("config.yaml", "inputs.json", "metrics.jsonl", "result.json", "checkpoint.safetensors",
                 "test_probs.npy"):
        assert (tmp_path / "a" / name).is_file(), name
    assert len((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()) == row["epochs"] == 2
    probs = np.load(tmp_path / "a" / "test_probs.npy")
    assert probs.shape == (row["n_test"], 3) and row["n_test"] == 30
    assert row["input_shape"] == [32, 4, 4] and row["space"] == "latent" and row["variant"] == "plain"
    assert row["pretrained"] is False and row["autoencoder"] == "taef2" and len(row["recall_per_class"]) == 3
    assert json.loads((tmp_path / "a" / "result.json").read_text())["config_hash"] == row["config_hash"]
    # same seed, same data: identical metrics and probabilities in a fresh folder
    again = run_training(_cfg(root), tmp_path / "b")
    assert {k: again[k] for k in ("bacc", "auc", "mcc")} == {k: row[k] for k in ("bacc", "auc", "mcc")}
    assert np.array_equal(np.load(tmp_path / "b" / "test_probs.npy"), probs)
    # a finished folder is returned as is, never retrained or overwritten
    mtime = (tmp_path / "a" / "result.json").stat().st_mtime_ns
    assert run_training(_cfg(root), tmp_path / "a") == row
    assert (tmp_path / "a" / "result.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_resume_from_checkpoint_matches_uninterrupted_run(root, tmp_path, interrupt_at_call, capsys):
    import latentgap.train.loop as loop

    full = run_training(_cfg(root, epochs=3), tmp_path / "full")
    calls = interrupt_at_call(loop, "train_one_epoch", 2)  # during epoch 1; counts every epoch trained
    with pytest.raises(KeyboardInterrupt):
        run_training(_cfg(root, epochs=3), tmp_path / "cut")
    from latentgap.runs import read_checkpoint_meta  # counters live in the checkpoint's own header

    assert read_checkpoint_meta(tmp_path / "cut" / "checkpoint.safetensors")["epoch"] == 0
    assert not (tmp_path / "cut" / "result.json").exists()
    # a checkpoint written by another configuration is refused, in the library and on the command line
    with pytest.raises(UserError, match="another configuration"):
        run_training(_cfg(root, epochs=3, lr=0.01), tmp_path / "cut")
    code, err = _cli(["train", "--data", DATA, "--ae", "taef2", "--space", "latent", "--folds", "3",
                      "--model", "convnext_atto", "--epochs", "7", "--root", str(root), "--out", str(tmp_path / "cut"),
                      "--device", "cpu"], capsys)
    assert code == 2 and "another configuration" in err and len(err.splitlines()) == 1
    resumed = run_training(_cfg(root, epochs=3), tmp_path / "cut")
    assert len(calls) == 2 + 2  # only epochs 1 and 2 were trained after the resume
    assert {k: resumed[k] for k in ("bacc", "auc", "mcc", "best_epoch")} == \
        {k: full[k] for k in ("bacc", "auc", "mcc", "best_epoch")}
    assert np.array_equal(np.load(tmp_path / "cut" / "test_probs.npy"), np.load(tmp_path / "full" / "test_probs.npy"))


@pytest.mark.slow
def test_float16_resume_restores_the_loss_scale(root, tmp_path, monkeypatch, interrupt_at_call):
    """Under float16 autocast (CUDA without bfloat16; forced here on the CPU) the checkpoint holds the GradScaler's
    state, and a run cut during epoch 1 resumes to the uninterrupted run's scaler and test predictions."""
    import torch

    import latentgap.train.loop as loop
    import latentgap.train.run as run

    for mod in (loop, run):
        monkeypatch.setattr(mod, "autocast_dtype", lambda device: torch.float16)
    full = run_training(_cfg(root, epochs=3), tmp_path / "full")
    interrupt_at_call(loop, "train_one_epoch", 2)
    with pytest.raises(KeyboardInterrupt):
        run_training(_cfg(root, epochs=3), tmp_path / "cut")
    from latentgap.runs import read_checkpoint_meta

    steps = read_checkpoint_meta(tmp_path / "full" / "checkpoint.safetensors")["grad_scaler"]["_growth_tracker"]
    assert read_checkpoint_meta(tmp_path / "cut" / "checkpoint.safetensors")["grad_scaler"]["_growth_tracker"] == steps // 3
    resumed = run_training(_cfg(root, epochs=3), tmp_path / "cut")
    assert read_checkpoint_meta(tmp_path / "cut" / "checkpoint.safetensors")["grad_scaler"] == \
        read_checkpoint_meta(tmp_path / "full" / "checkpoint.safetensors")["grad_scaler"]
    assert resumed["bacc"] == full["bacc"]
    assert np.array_equal(np.load(tmp_path / "cut" / "test_probs.npy"), np.load(tmp_path / "full" / "test_probs.npy"))


@pytest.mark.slow
def test_noise_conditioned_and_image_space_rows(root, tmp_path):
    row = run_training(_cfg(root, noise_cond=True, film_embed_dim=16), tmp_path / "nc")
    assert row["variant"] == "noise-conditioned" and all(f"acc_q{i}" in row for i in range(4))
    img = run_training(_cfg(root, space="image", model="resnet18", model_kwargs=TINY_RESNET, autoencoder=None),
                       tmp_path / "img")
    assert img["input_shape"] == [1, 32, 32] and img["autoencoder"] is None and img["stem_stride"] == 2
    # memory format: channels-last for ConvNeXt on CPU (measured faster), NCHW for ResNet on CPU
    assert row["channels_last"] is True and img["channels_last"] is False


@pytest.mark.slow
def test_distillation_teacher_cached_and_checked(root, tmp_path, capsys):
    teacher_dir = tmp_path / "teacher"
    t = run_training(_cfg(root, space="recon", model="resnet18", model_kwargs=TINY_RESNET, epochs=1), teacher_dir)
    assert t["space"] == "recon"
    row = run_training(_cfg(root, distill=True, distill_teacher=str(teacher_dir), distill_alpha=0.5), tmp_path / "st")
    assert row["variant"] == "distilled" and row["distill"] is True
    logits = np.load(teacher_dir / "logits-fold0-train.npy")
    assert logits.shape == (row["n_train"], 3) and np.isfinite(logits).all()
    manifest = json.loads((teacher_dir / "logits-fold0-train.json").read_text())
    assert manifest["fold"] == 0 and manifest["autoencoder"] == "taef2"
    # a teacher of another fold: one-line error, exit 2
    code, err = _cli(["train", "--data", DATA, "--ae", "taef2", "--space", "latent", "--folds", "3", "--fold", "1",
                      "--model", "convnext_atto", "--epochs", "1", "--distill", "--teacher", str(teacher_dir),
                      "--root", str(root), "--out", str(tmp_path / "st1"), "--device", "cpu"], capsys)
    assert code == 2 and "another fold" in err and len(err.splitlines()) == 1
    # a teacher of another autoencoder
    want = {k: t[k] for k in ("dataset_fingerprint", "splits_digest", "fold", "autoencoder", "autoencoder_sha256")}
    with pytest.raises(UserError, match="another autoencoder"):
        _check_teacher(t, {**want, "autoencoder": "sd-vae"}, teacher_dir)


@pytest.mark.slow
def test_hpo_searches_inside_training_part(root, tmp_path):
    row = run_training(_cfg(root, hpo=True, hpo_trials=2, hpo_epochs=1, epochs=1), tmp_path / "hpo")
    hp = json.loads((tmp_path / "hpo" / "hpo.json").read_text())
    assert row["variant"] == "tuned" and len(hp["values"]) == 2 and row["hpo_best"] == hp["params"]
    assert hp["n_inner_train"] + hp["n_inner_val"] == row["n_train"]


def test_hpo_inner_split_refuses_test_samples():
    import torch

    from latentgap.data.splits import Fold
    from latentgap.train.hpo import inner_split

    class Part:
        indices = np.arange(10)
        targets = torch.arange(10) % 2

        def __len__(self):
            return 10
    tr, va = inner_split(Part(), Fold(np.arange(10), np.array([10, 11]), np.array([12, 13])), 0.2, 0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 10
    with pytest.raises(AssertionError, match="test fold"):
        inner_split(Part(), Fold(np.arange(10), np.array([11]), np.array([3, 12])), 0.2, 0)


@pytest.mark.parametrize("args, needle", [
    (["--space", "pixels"], "unknown space 'pixels'"),
    (["--model", "vgg16"], "unknown classifier 'vgg16'"),
    (["--space", "latent"], "needs an autoencoder"),
    (["--precise-bn", "-1"], "--precise-bn: Input should be greater than or equal to 0"),  # the option's name
    (["--folds", "1"], "--folds: Input should be greater than or equal to 2"),
])
def test_cli_bad_input_is_one_line_exit_2(args, needle, capsys, tmp_path):
    code, err = _cli(["train", "--data", DATA, "--out", str(tmp_path / "x"), *args], capsys)
    assert code == 2 and needle in err and len(err.splitlines()) == 1 and err.startswith("error:")


def test_multilabel_runs_end_to_end_with_distillation(root, tmp_path):
    """Multi-label data through run_training: weighted BCE, per-label AUC, sigmoid test probabilities whose
    metrics scikit-learn reproduces, and a distilled latent student of a recon teacher."""
    from sklearn.metrics import roc_auc_score

    from latentgap.data import load_or_make_splits, open_dataset
    from latentgap.workspace import splits_path

    data = "phantom:n=90,size=32,classes=3,feature=coarse,imbalance=2,multilabel=1"
    teacher_dir = tmp_path / "teacher"
    t = run_training(_cfg(root, dataset=data, space="recon", model="resnet18", model_kwargs=TINY_RESNET, epochs=1),
                     teacher_dir)
    row = run_training(_cfg(root, dataset=data, distill=True, distill_teacher=str(teacher_dir)), tmp_path / "st")
    assert t["multilabel"] is True and row["multilabel"] is True and row["variant"] == "distilled"
    assert np.load(teacher_dir / "logits-fold0-train.npy").shape == (row["n_train"], 3)
    probs = np.load(tmp_path / "st" / "test_probs.npy")
    assert probs.shape == (row["n_test"], 3) and ((probs >= 0) & (probs <= 1)).all()
    ds = open_dataset(data)
    splits = load_or_make_splits(splits_path(root, ds, k=3), ds, k=3)
    y = np.asarray(ds.labels)[splits.folds[0].test]
    assert row["auc"] == pytest.approx(roc_auc_score(y, probs, average="macro"), abs=1e-9)
    assert len(row["auc_per_class"]) == 3


def test_hpo_trials_optimise_the_final_objective(monkeypatch):
    """Trials reach the DRW switch at the same fraction of their budget and train with distillation when the
    final run does (they used to stop before the switch and drop distillation)."""
    import numpy as np
    import torch

    from latentgap.train import TrainConfig, hpo
    from latentgap.train.losses import DistillationLoss

    cfg = TrainConfig(dataset="phantom", space="latent", autoencoder="kl-builtin", epochs=60, drw_switch_epoch=10,
                      hpo_epochs=10, distill=True, hpo_trials=1, model="convnext_atto").resolved()
    t = hpo.trial_config(cfg, {"lr": 1e-3})
    assert t.epochs == 10 and t.drw_switch_epoch == 2 and t.lr == 1e-3  # 10 / 60 of the way, as in the final run
    seen = {}

    def fake_fit(model, opt, sched, loss_fn, train_batches, *a, **kw):
        seen.update(loss=loss_fn, extra=train_batches.extra, switch=loss_fn.base.drw_switch_epoch)
        from latentgap.train.loop import EarlyStopping
        st = EarlyStopping(1)
        st.best = 0.5
        return st

    monkeypatch.setattr(hpo, "fit", fake_fit)

    class Part:  # a SpaceDataset-like training part of 20 samples, 2 classes
        indices = np.arange(20)
        targets = torch.tensor([0, 1] * 10)

        def __len__(self):
            return 20

    class Fold:
        test, val = np.arange(100, 110), np.arange(110, 115)

    teacher = torch.arange(40, dtype=torch.float32).view(20, 2)
    res = hpo.search(cfg, Part(), Fold(), (4, 8, 8), 2, False, torch.device("cpu"), teacher)
    assert isinstance(seen["loss"], DistillationLoss) and seen["switch"] == 2
    tr_pos = hpo.inner_split(Part(), Fold(), cfg.hpo_inner_fraction, cfg.seed)[0]  # the trial's inner training part
    assert torch.equal(seen["extra"], teacher[torch.as_tensor(tr_pos)]) and res["best_value"] == 0.5


@pytest.mark.slow
def test_monitor_auc_selects_the_epoch_of_best_validation_auc(root, tmp_path):
    """With monitor=auc the best epoch is the argmax of the validation AUC curve (early stopping on it too); the
    default (bacc) keeps the hash every earlier run has."""
    assert _cfg(root, monitor="auc").config_hash() != _cfg(root).config_hash()
    row = run_training(_cfg(root, monitor="auc", epochs=4, patience=10), tmp_path / "auc")
    aucs = [json.loads(ln)["val_auc"] for ln in (tmp_path / "auc" / "metrics.jsonl").read_text().splitlines()]
    assert row["monitor"] == "auc" and row["curve"]["val_auc"] == aucs
    assert row["best_epoch"] == int(np.argmax(aucs))
