"""Training loops on tensors: augmentation, determinism, early stopping, noise-conditioned evaluation."""

import numpy as np
import pytest
import torch

from latentgap.models import NoiseConditioned, NoiseSchedule, create_classifier
from latentgap.train import (Augment, Batches, EarlyStopping, LDAMLoss, NoiseSampling, evaluate, fit,
                             recalibrate_batchnorm, train_one_epoch)

TINY = dict(dims=(8, 16, 16, 32), depths=(1, 1, 1, 1))
CPU = torch.device("cpu")


class _Tensors:
    """A fold part as tensors, with the SpaceDataset ``get_batch`` interface."""

    def __init__(self, x, y):
        self.inputs, self.targets = x, y

    def __len__(self):
        return len(self.targets)

    def get_batch(self, pos):
        return self.inputs[pos], self.targets[pos]


def _toy(n=96, c=4, side=8, k=3, seed=0):
    """Latent-like data whose class is the mean of channel 0 (learnable in a few epochs)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % k
    x = torch.randn(n, c, side, side, generator=g) * 0.5
    x[:, 0] += (y.float() - 1.0)[:, None, None] * 1.5
    return _Tensors(x, y)


def _train(seed=0, epochs=3, noise=False):
    torch.manual_seed(seed)
    model = create_classifier("convnext_atto", 4, 3, 8, pretrained=False, cosine_head=True, **TINY)
    if noise:
        model = NoiseConditioned(model, 16)
    tr, va = _toy(seed=1), _toy(48, seed=2)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    ns = NoiseSampling(NoiseSchedule(), 0.3, 1.0) if noise else None
    hist = []
    st = fit(model, opt, None, LDAMLoss([32, 32, 32]), Batches(tr, 16, shuffle=True, generator=g), Batches(va, 64),
             CPU, g, epochs=epochs, patience=10, augment=Augment.preset("flip"), noise=ns,
             on_epoch=lambda e, m, s: hist.append(m))
    return model, st, hist, va


def test_augment_flip_and_shift():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(Augment(hflip=1.0)(x, g), x.flip(3))
    assert torch.equal(Augment(hflip=0.0, vflip=1.0)(x, g), x.flip(2))
    assert torch.equal(Augment(hflip=0.0)(x, g), x)
    y = Augment(hflip=0.0, shift=0.25)(x, g)  # 1-pixel reflect-padded shifts keep the shape
    assert y.shape == x.shape
    assert Augment.preset("none") is None


def test_same_seed_gives_identical_training():
    m1, s1, h1, va = _train(seed=0)
    m2, s2, h2, _ = _train(seed=0)
    assert h1 == [{**a, "seconds": b["seconds"]} for a, b in zip(h2, h1)]  # identical but for the clock
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    _, _, h3, _ = _train(seed=1)
    assert [h["train_loss"] for h in h3] != [h["train_loss"] for h in h1]


def test_training_learns_and_early_stopping_keeps_best():
    model, st, hist, va = _train(seed=0, epochs=6)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert st.best == max(h["val_bacc"] for h in hist)
    model.load_state_dict(st.best_state)
    res = evaluate(model, Batches(va, 64), CPU)
    assert res["bacc"] == pytest.approx(st.best) and res["bacc"] > 0.6
    assert res["probs"].shape == (48, 3) and np.allclose(res["probs"].sum(1), 1, atol=1e-5)


def test_early_stopping_counts_patience():
    st, m = EarlyStopping(patience=2), torch.nn.Linear(1, 1)
    assert not st.step(0.5, 0, m) and not st.step(0.4, 1, m) and st.step(0.5, 2, m)
    assert st.best_epoch == 0 and st.state_dict() == {"best": 0.5, "best_epoch": 0, "bad_epochs": 2}


def test_noise_conditioned_training_reports_quartiles():
    model, st, hist, va = _train(seed=0, epochs=2, noise=True)
    res = evaluate(model, Batches(va, 64), CPU, noise=NoiseSchedule(), seed=0)
    assert {"acc_q0", "acc_q1", "acc_q2", "acc_q3"} <= set(res)
    assert all(0.0 <= res[f"acc_q{i}"] <= 1.0 for i in range(4))
    again = evaluate(model, Batches(va, 64), CPU, noise=NoiseSchedule(), seed=0)
    assert [again[f"acc_q{i}"] for i in range(4)] == [res[f"acc_q{i}"] for i in range(4)]


def test_distillation_batches_carry_teacher_logits():
    tr = _toy(10)
    teacher = torch.randn(10, 3)
    batches = list(Batches(tr, 4, extra=teacher))
    assert len(batches) == 3 and torch.equal(batches[0][2], teacher[:4])
    assert len(list(Batches(_toy(9), 4, drop_last_single=True))) == 2  # a lone last sample is skipped

    torch.manual_seed(0)
    model = create_classifier("convnext_atto", 4, 3, 8, pretrained=False, **TINY)
    from latentgap.train import DistillationLoss
    out = train_one_epoch(model, Batches(tr, 4, extra=teacher), torch.optim.SGD(model.parameters(), 0.01),
                          DistillationLoss(alpha=0.5, temperature=2.0), CPU, torch.Generator().manual_seed(0))
    assert np.isfinite(out["loss"]) and 0 <= out["acc"] <= 1


def test_precise_bn_equals_statistics_of_the_training_batches():
    """Running stats after recalibration = average of the per-batch mean / unbiased var (hand oracle), momentum
    and train/eval mode restored, and a model without BatchNorm is left alone."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    net.eval()
    ds = _Tensors(torch.randn(40, 2, 6, 6) * 3 + 1, torch.zeros(40, dtype=torch.long))
    assert recalibrate_batchnorm(net, Batches(ds, 8), CPU, max_batches=4) == 1
    with torch.no_grad():
        feats = [net[0](ds.inputs[i:i + 8]) for i in range(0, 32, 8)]  # the first 4 batches only
    mean = torch.stack([f.mean((0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).reshape(3, -1).var(1, unbiased=True) for f in feats]).mean(0)
    bn = net[1]
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-5)
    assert bn.momentum == 0.1 and not net.training and int(bn.num_batches_tracked) == 4
    assert recalibrate_batchnorm(torch.nn.Conv2d(2, 3, 3), Batches(ds, 8), CPU) == 0


def test_precise_bn_does_not_touch_the_training_random_stream():
    """fit draws the recalibration order from its own seed: same weights with and without it for a
    BatchNorm-free model (ConvNeXt), so resuming and reproducibility are unaffected."""
    outs = []
    for pbn in (0, 8):
        torch.manual_seed(0)
        model = create_classifier("convnext_atto", 4, 3, 8, pretrained=False, cosine_head=True, **TINY)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        fit(model, opt, None, LDAMLoss([32, 32, 32]), Batches(_toy(seed=1), 16, shuffle=True, generator=g),
            Batches(_toy(48, seed=2), 64), CPU, g, epochs=2, precise_bn_batches=pbn)
        outs.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*outs))


def test_until_converged_halves_the_lr_on_a_validation_plateau():
    """train.until = converged: the schedule follows validation bACC (halved after patience // 3 flat epochs),
    not the epoch ceiling; early stopping ends the run."""
    from torch.utils.data import TensorDataset

    from latentgap.train import TrainConfig, build_optimizer
    from latentgap.train.loop import Batches, fit

    cfg = TrainConfig(dataset="phantom", until="converged", epochs=50, patience=6, lr=1e-3)
    lin = torch.nn.Linear(4, 2)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    lin.weight.requires_grad_(False)  # logits stay 0 (balanced classes: the bias gradient is 0) -> a flat val bACC
    model = torch.nn.Sequential(torch.nn.Flatten(), lin)
    opt, sched = build_optimizer(cfg, model)
    assert isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 2, 2, generator=g), torch.tensor([0, 1] * 16)
    lrs = []
    st = fit(model, opt, sched, torch.nn.CrossEntropyLoss(), Batches(TensorDataset(x, y), 8, shuffle=True, generator=g),
             Batches(TensorDataset(x, y), 32), CPU, g, epochs=cfg.epochs, patience=cfg.patience, precise_bn_batches=0,
             on_epoch=lambda e, m, s: lrs.append(m["lr"]))
    # validation bACC never improves after epoch 0 -> stop after 1 + patience epochs, lr halved on the way
    # (ReduceLROnPlateau, patience 6 // 3 = 2: halved after the 3rd and the 6th flat epoch)
    assert len(lrs) == 1 + cfg.patience and st.best_epoch == 0
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-3 / 4)
    assert TrainConfig(dataset="phantom").until == "epochs"


def test_ldam_drw_runs_do_not_stop_before_the_reweighted_phase_and_the_baseline_runs_until_converged():
    """Early stopping may not end an LDAM-DRW run before the DRW switch + patience epochs (the shared-data study
    stopped a BUSI cell at epoch 10 with the switch at 10), and the baseline recipe (one-cycle) works under
    until=converged: one-cycle over the epoch ceiling, run to its end (best validation epoch kept)."""
    from latentgap.train.build import min_epochs
    from latentgap.train.config import TrainConfig
    from latentgap.train.loop import EarlyStopping

    cfg = TrainConfig(dataset="phantom", epochs=40, patience=8, drw_switch_epoch=10).resolved()
    assert min_epochs(cfg, False) == 18 and min_epochs(cfg, True) == 0
    assert min_epochs(cfg.model_copy(update={"loss": "wce"}), False) == 0
    st = EarlyStopping(patience=2, min_epochs=6)
    stops = [st.step(v, e, torch.nn.Linear(1, 1)) for e, v in enumerate([0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])]
    assert stops == [False, False, False, False, False, True, True]  # plateau from epoch 2, but not before 6 epochs
    base = TrainConfig(dataset="phantom", variant="baseline", until="converged", epochs=40).resolved()
    assert base.schedule == "onecycle" and base.until == "epochs" and base.loss == "wce"
    # one-cycle is a fixed budget: no early stop during its warm-up (30 % of 40 epochs) or before it has annealed
    assert min_epochs(base, False) == 40 and min_epochs(base, True) == 40
