"""LDAM margins, DRW weights, distillation and multi-label BCE against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from latentgap.train.losses import (DistillationLoss, LDAMLoss, MultiLabelBCELoss, distillation_loss, drw_weights,
                                    ldam_loss, ldam_margins, multilabel_distillation_loss, pos_weights)


def test_ldam_margins_hand_values():
    m = ldam_margins([100, 10, 1])
    # 1/n^(1/4) = 0.316228, 0.562341, 1 -> scaled so that the largest is 0.5
    assert m.tolist() == pytest.approx([0.5 * 100 ** -0.25, 0.5 * 10 ** -0.25, 0.5], abs=1e-7)
    assert m.tolist() == pytest.approx([0.158114, 0.281171, 0.5], abs=1e-6)
    assert float(ldam_margins([5, 5]).max()) == pytest.approx(0.5)


def test_ldam_margins_reject_empty_class():
    with pytest.raises(ValueError, match="at least one"):
        ldam_margins([3, 0])


def test_ldam_loss_hand_computed():
    s = 30.0
    cos = torch.tensor([[0.2, 0.1, -0.3], [0.0, 0.4, 0.1]])
    y = torch.tensor([0, 2])
    m = ldam_margins([100, 10, 1])
    loss = ldam_loss(s * cos, y, m, s=s)

    def ce(row, target):  # -log softmax by hand
        return -(row[target] - math.log(sum(math.exp(v) for v in row)))
    rows = [[s * c for c in r] for r in cos.tolist()]
    rows[0][0] = s * (0.2 - float(m[0]))
    rows[1][2] = s * (0.1 - float(m[2]))
    want = (ce(rows[0], 0) + ce(rows[1], 2)) / 2
    assert float(loss) == pytest.approx(want, rel=1e-6)


def test_ldam_loss_with_class_weights_is_weighted_mean():
    s, m = 30.0, ldam_margins([50, 5])
    logits, y = torch.tensor([[0.3, 0.1], [0.2, 0.4]]) * s, torch.tensor([0, 1])
    w = torch.tensor([0.5, 1.5])
    per = torch.nn.functional.cross_entropy(logits - torch.tensor([[s * m[0], 0.0], [0.0, s * m[1]]]), y, reduction="none")
    want = (0.5 * per[0] + 1.5 * per[1]) / (0.5 + 1.5)
    assert float(ldam_loss(logits, y, m, s, weight=w)) == pytest.approx(float(want), rel=1e-6)


def test_drw_weights_hand_computed():
    counts, beta = [100, 10], 0.9999
    assert drw_weights(counts, epoch=9, switch_epoch=10).tolist() == [1.0, 1.0]
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]  # 0.0100496..., 0.1000450...
    want = [r / sum(raw) * 2 for r in raw]
    got = drw_weights(counts, epoch=10, switch_epoch=10, beta=beta)
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    assert float(got.sum()) == pytest.approx(2.0)
    assert got[1] / got[0] == pytest.approx(9.955, abs=1e-3)  # rare class weighs ~10x


def test_ldam_module_switches_weights_at_drw_epoch():
    loss = LDAMLoss([100, 10], drw_switch_epoch=2)
    loss.set_epoch(1)
    assert loss.weight.tolist() == [1.0, 1.0]
    loss.set_epoch(2)
    assert loss.weight.tolist() == pytest.approx(drw_weights([100, 10], 2, 2).tolist())
    assert "margins" in dict(loss.named_buffers()) and "weight" in dict(loss.named_buffers())


def test_distillation_loss_hand_computed():
    student = torch.tensor([[1.0, 0.0], [0.5, 1.5]])
    teacher = torch.tensor([[2.0, -1.0], [0.0, 0.0]])
    y = torch.tensor([0, 1])
    alpha, T = 0.7, 2.0

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]
    ce = sum(-math.log(softmax(s)[t]) for s, t in zip(student.tolist(), y.tolist())) / 2
    kl = 0.0
    for s, t in zip(student.tolist(), teacher.tolist()):
        ps, pt = softmax([v / T for v in s]), softmax([v / T for v in t])
        kl += sum(a * math.log(a / b) for a, b in zip(pt, ps))
    want = ce + alpha * T * T * kl / 2
    assert float(distillation_loss(student, teacher, y, alpha, T)) == pytest.approx(want, rel=1e-6)
    mod = DistillationLoss(alpha=alpha, temperature=T)
    assert float(mod(student, y, teacher)) == pytest.approx(want, rel=1e-6)


def test_distillation_equals_ce_when_teacher_agrees_or_alpha_zero():
    s, y = torch.randn(5, 3), torch.randint(0, 3, (5,))
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, s.clone(), y, 1.0, 3.0), ce, atol=1e-6)
    assert torch.allclose(distillation_loss(s, torch.randn(5, 3), y, 0.0, 3.0), ce)


def test_multilabel_distillation_hand_computed():
    """BCE + alpha T^2 x mean per-label binary KL(teacher || student) at temperature T."""
    student = torch.tensor([[1.0, -2.0, 0.0], [0.5, 1.5, -1.0]])
    teacher = torch.tensor([[2.0, -1.0, 3.0], [0.0, 0.0, -2.0]])
    y = torch.tensor([[1, 0, 1], [0, 1, 0]])
    alpha, T = 0.5, 2.0

    def sig(v):
        return 1 / (1 + math.exp(-v))
    bce = -sum(t * math.log(sig(s)) + (1 - t) * math.log(1 - sig(s))
               for row_s, row_t in zip(student.tolist(), y.tolist()) for s, t in zip(row_s, row_t)) / 6
    kl = 0.0
    for row_s, row_t in zip(student.tolist(), teacher.tolist()):
        for s, t in zip(row_s, row_t):
            ps, pt = sig(s / T), sig(t / T)
            kl += pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps))
    want = bce + alpha * T * T * kl / 6
    assert float(multilabel_distillation_loss(student, teacher, y, alpha, T)) == pytest.approx(want, rel=1e-6)
    mod = DistillationLoss(alpha=alpha, temperature=T, multilabel=True)
    assert float(mod(student, y, teacher)) == pytest.approx(want, rel=1e-6)
    assert float(multilabel_distillation_loss(student, student, y, alpha, T)) == pytest.approx(bce, rel=1e-6)


def test_pos_weight_and_bce_hand_computed():
    y = np.array([[1, 0], [0, 0], [0, 1], [0, 1]])
    assert pos_weights(y).tolist() == pytest.approx([3.0 / 1.0, 2.0 / 2.0])  # n_neg / n_pos
    loss = MultiLabelBCELoss(y)
    logits = torch.tensor([[0.5, -1.0]])
    t = torch.tensor([[1.0, 0.0]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = (-3.0 * math.log(sig(0.5)) - math.log(1 - sig(-1.0))) / 2
    assert float(loss(logits, t)) == pytest.approx(want, rel=1e-6)


def test_class_weighted_cross_entropy_matches_hand_computed_weights():
    """loss "wce" (the baseline recipe): weights n / (K n_j), normalised to mean 1; equals torch's weighted CE
    with those hand-computed weights."""
    import numpy as np
    import torch

    from latentgap.train import TrainConfig, build_loss

    labels = np.array([0] * 6 + [1] * 3 + [2] * 1)  # n = 10, K = 3
    loss = build_loss(TrainConfig(dataset="phantom", loss="wce"), labels, 3, False)
    w = np.array([10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)])
    w = w / w.mean()
    assert torch.allclose(loss.weight, torch.tensor(w, dtype=torch.float32))
    logits, y = torch.randn(5, 3, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 2, 0])
    want = -(torch.tensor(w, dtype=torch.float32)[y] * torch.log_softmax(logits, 1)[torch.arange(5), y]).sum() \
        / torch.tensor(w, dtype=torch.float32)[y].sum()
    assert torch.allclose(loss(logits, y), want)


def test_baseline_variant_is_the_plain_recipe():
    from latentgap.train import TrainConfig, build_optimizer

    cfg = TrainConfig(dataset="phantom", variant="baseline", epochs=4, lr=1e-2, model="resnet18").resolved()
    assert (cfg.loss, cfg.schedule, cfg.variant) == ("wce", "onecycle", "baseline")
    model = torch.nn.Linear(2, 2)
    opt, sched = build_optimizer(cfg, model, steps_per_epoch=5)
    lrs = []
    for _ in range(20):  # one-cycle over every optimiser step (4 epochs x 5 steps): up to lr, then down
        lrs.append(opt.param_groups[0]["lr"])  # the lr this step uses
        opt.step()
        sched.step()
    assert max(lrs) == pytest.approx(1e-2, rel=0.05) and lrs[-1] < 1e-5 and lrs[0] < lrs[4]
