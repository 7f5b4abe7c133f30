"""The latent diffusion generator: objectives against hand-computed values and diffusers' SNR, the diffusers
backbones, and a killed ``train_generator`` resuming to bit-identical weights."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from latentgap.errors import UserError
from latentgap.runs import load_checkpoint, read_checkpoint_meta
from latentgap.synth.models import build_denoiser, dit_patch_size
from latentgap.diffusion.objectives import FlowMatching, VPrediction, weighted_mse
from latentgap.synth.train import SynthConfig, train_generator


def test_flow_matching_by_hand():
    x = torch.tensor([1.0, -2.0, 0.5, 3.0]).view(1, 1, 2, 2)
    eps = torch.tensor([0.5, 0.5, -1.0, 2.0]).view(1, 1, 2, 2)
    nb = FlowMatching().noisy(x, torch.tensor([0.25]), eps)
    assert torch.allclose(nb.z_t, 0.75 * x + 0.25 * eps)
    assert torch.allclose(nb.target, eps - x) and float(nb.model_time) == 250.0
    s = (0.75 ** 2 + 0.25 ** 2) ** 0.5
    assert float(nb.scale) == pytest.approx(s) and float(nb.sigma) == pytest.approx(0.25 / s)
    x0, e = FlowMatching.x0_eps(nb.z_t, nb.target, torch.tensor([0.25]))  # a perfect velocity recovers both
    assert torch.allclose(x0, x, atol=1e-6) and torch.allclose(e, eps, atol=1e-6)
    # loss: mean squared error of the velocity, unit weights
    pred = torch.zeros_like(x)
    assert float(weighted_mse(pred, nb)) == pytest.approx(float(((eps - x) ** 2).mean()))
    # logit-normal times: sigmoid of N(0, 1) has median 0.5 and lies in (0, 1)
    t = FlowMatching().draw(torch.zeros(4000, 1, 1, 1), torch.Generator().manual_seed(0)).model_time / 1000
    assert 0 < float(t.min()) and float(t.max()) < 1 and abs(float(t.median()) - 0.5) < 0.03


def test_v_prediction_and_min_snr_weights_against_diffusers():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    obj = VPrediction(min_snr_gamma=5.0)
    t = torch.tensor([0, 10, 300, 999])
    x = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    eps = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(2))
    nb = obj.noisy(x, t, eps)
    abar = sched.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    assert torch.allclose(nb.z_t, sched.add_noise(x, eps, t), atol=1e-6)
    assert torch.allclose(nb.target, sched.get_velocity(x, eps, t), atol=1e-6)
    snr = compute_snr(sched, t)
    assert torch.allclose(nb.weight, torch.minimum(snr, torch.full_like(snr, 5.0)) / (snr + 1), rtol=1e-5)
    assert torch.allclose(nb.sigma, (1 - abar).sqrt().flatten(), atol=1e-6)
    x0, e = obj.x0_eps(nb.z_t, nb.target, t)
    assert torch.allclose(x0, x, atol=1e-5) and torch.allclose(e, eps, atol=1e-5)


@pytest.mark.parametrize("backbone", ["dit", "unet"])
def test_denoisers_take_the_null_class_and_do_not_drop_labels_themselves(backbone):
    torch.manual_seed(0)
    m = build_denoiser(backbone, "tiny", 8, 8, num_classes=3).train()
    z, t = torch.randn(4, 8, 8, 8), torch.tensor([1.0, 200.0, 500.0, 999.0])
    y = torch.tensor([0, 1, 2, 3])  # 3 = "no class"
    out = m(z, t, y)
    assert out.shape == z.shape
    torch.manual_seed(123)  # a model-internal label drop would use the global RNG: outputs would differ
    assert torch.equal(m(z, t, y), out)
    assert m.build["num_classes"] == 3 and m.build["parameters"] > 0


def test_dit_patch_size_rule():
    assert [dit_patch_size(g) for g in (4, 8, 16, 32, 64)] == [1, 1, 1, 2, 4]
    with pytest.raises(UserError, match="unknown generator size"):
        build_denoiser("dit", "huge", 4, 8, 2)


SCRIPT = """
import sys
from latentgap.synth.train import SynthConfig, train_generator
cfg = SynthConfig.model_validate_json(sys.argv[1])
train_generator(cfg, sys.argv[2], progress=False)
"""


def _cfg(tmp: Path, **kw) -> SynthConfig:
    return SynthConfig(**{"dataset": "phantom:n=48,size=32,classes=2,imbalance=1", "autoencoder": "taef2", "k": 3,
                          "steps": 300, "batch_size": 8, "checkpoint_every": 5, "log_every": 5, "device": "cpu",
                          "root": str(tmp / "root"), "dtype": "float32", "views": ["identity", "hflip"], **kw})


@pytest.mark.usefixtures("one_thread")
def test_killed_training_resumes_to_identical_weights(tmp_path):
    cfg = _cfg(tmp_path)
    ref = train_generator(cfg, tmp_path / "ref", progress=False)  # also builds the shared cache
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, cfg.model_dump_json(), str(tmp_path / "run")], env=env)
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt.exists() and read_checkpoint_meta(ckpt).get("step", 0) >= 10):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_checkpoint_meta(ckpt)["step"]
    assert 10 <= killed_at < cfg.steps and not (tmp_path / "run" / "result.json").exists()
    row = train_generator(cfg, tmp_path / "run", progress=False)
    a, _ = load_checkpoint(tmp_path / "ref" / "checkpoint.safetensors")
    b, _ = load_checkpoint(ckpt)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "ema.")))
    assert row["final_loss"] == ref["final_loss"] and row["config_hash"] == ref["config_hash"]


@pytest.mark.usefixtures("one_thread")
def test_float16_training_resumes_at_the_loss_scale_it_reached(tmp_path, monkeypatch, interrupt_at_call):
    """Under float16 autocast (CUDA without bfloat16; forced here on the CPU) the GradScaler's state is part of the
    checkpoint: a run interrupted after its step-10 checkpoint resumes to the uninterrupted run's weights and scaler."""
    import latentgap.device
    import latentgap.synth.train as st

    monkeypatch.setattr(latentgap.device, "autocast_dtype", lambda device: torch.float16)
    cfg = _cfg(tmp_path, steps=20)
    train_generator(cfg, tmp_path / "ref", progress=False)
    interrupt_at_call(st, "weighted_mse", 13)  # during step 13, after the checkpoint of step 10
    with pytest.raises(KeyboardInterrupt):
        train_generator(cfg, tmp_path / "run", progress=False)
    ckpt = tmp_path / "run" / "checkpoint.safetensors"
    assert read_checkpoint_meta(ckpt)["grad_scaler"]["_growth_tracker"] == 10
    train_generator(cfg, tmp_path / "run", progress=False)
    a, ma = load_checkpoint(tmp_path / "ref" / "checkpoint.safetensors")
    b, mb = load_checkpoint(ckpt)
    assert ma["grad_scaler"] == mb["grad_scaler"] and ma["grad_scaler"]["_growth_tracker"] == 20
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith(("model.", "ema.")))


def test_run_folder_of_other_settings_is_refused(tmp_path):
    cfg = _cfg(tmp_path, steps=2, checkpoint_every=1)
    train_generator(cfg, tmp_path / "run", progress=False)
    with pytest.raises(UserError, match="another generator configuration"):
        train_generator(_cfg(tmp_path, steps=3), tmp_path / "run", progress=False)
    row = train_generator(cfg, tmp_path / "run", progress=False)  # finished: returned, not retrained
    assert row["steps"] == 2 and row["n_train"] > 0 and row["views"] == ["identity", "hflip"]
    rec = __import__("json").loads((tmp_path / "run" / "inputs.json").read_text())
    assert rec["fold"] == 0 and len(rec["normalisation"]["mean"]) == rec["latent_shape"][0]


# --------------------------------------------------------------------------- sampling and guidance

class _LinearGuide:
    """A stand-in noise-conditioned classifier: logits = W z (sigma ignored), with a run's attributes."""

    def __init__(self, gen, k):
        from types import SimpleNamespace

        c, h, w = gen.inputs["latent_shape"]
        torch.manual_seed(5)
        lin = torch.nn.Linear(c * h * w, k)
        self.model = lambda z, sigma: lin(z.flatten(1))
        from latentgap.train.config import TrainConfig

        noise = {k: f.default for k, f in TrainConfig.model_fields.items() if k.startswith("noise_")}
        self.config = SimpleNamespace(**{**noise, "noise_cond": True, "dataset": "toy"})
        self.inputs = {**gen.inputs, "space": "latent"}


@pytest.fixture(scope="module")
def tiny_gens(tmp_path_factory):
    from latentgap.synth.sample import load_generator

    tmp = tmp_path_factory.mktemp("gens")
    out = {}
    for obj in ("flow", "vpred"):
        cfg = _cfg(tmp, steps=3, checkpoint_every=3, objective=obj, views=["identity"])
        train_generator(cfg, tmp / obj, progress=False)
        out[obj] = load_generator(tmp / obj)
    return out


@pytest.mark.parametrize("objective", ["flow", "vpred"])
def test_guidance_shift_is_the_eps_form_in_every_parameterisation(tiny_gens, objective):
    """eps' = eps - s * sigma * grad log p(y | z_vp): recover eps from the shifted prediction and compare."""
    from latentgap.synth.sample import _guidance_shift, _log_prob_grad

    gen = tiny_gens[objective]
    guide = _LinearGuide(gen, gen.num_classes)
    c, h, w = gen.inputs["latent_shape"]
    z = torch.randn(3, c, h, w, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 0])
    mt = torch.tensor([200.0, 500.0, 800.0])
    pred = torch.randn(3, c, h, w, generator=torch.Generator().manual_seed(4))
    s = 2.5
    shifted = pred + s * _guidance_shift(gen, guide, z, mt, y)
    if objective == "flow":
        t = mt / 1000
        scale, sigma = FlowMatching.vp(t)
        _, eps0 = FlowMatching.x0_eps(z, pred, t)
        _, eps1 = FlowMatching.x0_eps(z, shifted, t)
        grad = _log_prob_grad(guide, z / scale.view(-1, 1, 1, 1), sigma, y)
        # in VP coordinates z_vp = z / S the noise is the same eps
    else:
        abar = gen.objective.schedule.abar[mt.long() + 1]
        sigma = (1 - abar).sqrt()
        _, eps0 = gen.objective.x0_eps(z, pred, mt)
        _, eps1 = gen.objective.x0_eps(z, shifted, mt)
        grad = _log_prob_grad(guide, z, sigma, y)
    assert torch.allclose(eps1 - eps0, -s * sigma.view(-1, 1, 1, 1) * grad, atol=1e-4)


@pytest.mark.parametrize("objective,sampler", [("flow", "euler"), ("vpred", "ddim"), ("vpred", "dpm++")])
def test_samplers_cfg_and_guidance_run(tiny_gens, objective, sampler):
    from latentgap.synth.sample import sample

    gen = tiny_gens[objective]
    y = torch.tensor([0, 1, 1])
    a = sample(gen, y, steps=4, sampler=sampler, generator=torch.Generator().manual_seed(0))
    b = sample(gen, y, steps=4, sampler=sampler, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, *gen.inputs["latent_shape"]) and torch.equal(a, b) and torch.isfinite(a).all()
    cfg = sample(gen, y, steps=4, sampler=sampler, cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
    gd = sample(gen, y, steps=4, sampler=sampler, guide=_LinearGuide(gen, 2), guide_scale=1.0,
                generator=torch.Generator().manual_seed(0))
    assert not torch.equal(cfg, a) and not torch.equal(gd, a)


def test_sampling_errors_name_the_fix(tiny_gens, tmp_path):
    from latentgap.synth.sample import plan_counts, sample, sample_plan

    gen = tiny_gens["flow"]
    with pytest.raises(UserError, match="not a class of the generator"):
        sample(gen, torch.tensor([5]), steps=2)
    with pytest.raises(UserError, match="does not fit a flow generator"):
        sample(gen, torch.tensor([0]), steps=2, sampler="ddim")
    nodrop = gen.config.model_copy(update={"label_dropout": 0.0})
    with pytest.raises(UserError, match="needs a generator trained with label dropout"):
        sample(type(gen)(gen.model, nodrop, gen.inputs, gen.run_dir, gen.objective), torch.tensor([0]), steps=2,
               cfg_scale=2.0)
    with pytest.raises(UserError, match="not a class of the generator"):
        plan_counts(gen, per_class=2, classes=[7])
    guide = _LinearGuide(gen, 2)
    guide.config.noise_cond = False
    with pytest.raises(UserError, match="no noise conditioning"):
        sample(gen, torch.tensor([0]), steps=2, guide=guide, guide_scale=1.0)
    c = gen.inputs["latent_shape"][0]
    for change, match in (({"space": "image"}, "not a latent-space classifier"),
                          ({"normalisation": {"mean": [0.0] * c, "std": [2.0] * c}}, "normalises latents differently"),
                          ({"normalisation": {"mean": [0.0], "std": [1.0]}}, "normalises latents differently")):
        other = _LinearGuide(gen, 2)
        other.inputs = {**other.inputs, **change}
        with pytest.raises(UserError, match=match):
            sample(gen, torch.tensor([0]), steps=2, guide=other, guide_scale=1.0)
    half = _LinearGuide(gen, 2)
    half.config.noise_max_fraction = 0.5
    with pytest.raises(UserError, match="saw only the first 50% of its noise schedule"):
        sample(gen, torch.tensor([0]), steps=2, guide=half, guide_scale=1.0)
    lin = _LinearGuide(tiny_gens["vpred"], 2)
    lin.config.noise_schedule, lin.config.noise_beta_start, lin.config.noise_beta_end = "linear", 0.0001, 0.02
    with pytest.raises(UserError, match="another noise schedule than the generator"):
        sample(tiny_gens["vpred"], torch.tensor([0]), steps=2, guide=lin, guide_scale=1.0)
    sample(gen, torch.tensor([0]), steps=2, guide=lin, guide_scale=1.0)  # flow: any schedule reaching pure noise
    lin.config.noise_beta_end = 0.002  # abar_T = 0.37: sigma never above 0.8
    with pytest.raises(UserError, match="never saw latents noisier than"):
        sample(gen, torch.tensor([0]), steps=2, guide=lin, guide_scale=1.0)
    other = _LinearGuide(gen, 2)
    other.inputs = {**other.inputs, "fold": 2}
    with pytest.raises(UserError, match="another fold"):
        sample(gen, torch.tensor([0]), steps=2, guide=other, guide_scale=1.0)
    other.inputs = {**gen.inputs, "space": "latent", "autoencoder_sha256": "0" * 64}
    with pytest.raises(UserError, match="another autoencoder"):
        sample_plan(gen, np.array([1, 1]), filter_run=other, steps=2)
    # plans: fill tail classes up to the majority count, or a ratio per class
    real = np.asarray(gen.inputs["class_counts"])
    assert plan_counts(gen, fill=True).tolist() == (real.max() - real).tolist()
    assert plan_counts(gen, ratio=0.5).tolist() == np.rint(0.5 * real).astype(int).tolist()


def test_rejection_filter_records_acceptance(tiny_gens):
    from types import SimpleNamespace

    from latentgap.synth.sample import sample_plan

    gen = tiny_gens["flow"]
    calls = []

    def proba(z):  # accepts every second sample for class 0, all for class 1
        calls.append(len(z))
        p = torch.zeros(len(z), 2)
        p[:, 1] = 1.0
        p[::2, 0] = 1.0
        return p

    filt = SimpleNamespace(predict_proba=proba, config=SimpleNamespace(noise_cond=False, dataset="toy"),
                           inputs={**gen.inputs, "space": "latent"})
    out = sample_plan(gen, np.array([4, 3]), filter_run=filt, threshold=0.5, steps=2)
    assert out["accepted"].tolist() == [4, 3] and out["labels"].tolist() == [0] * 4 + [1] * 3
    assert out["attempts"][0] == 8 and out["acceptance"][0] == pytest.approx(0.5) and out["short"] == []


def test_synthetic_dataset_round_trip_and_never_a_test_split(tiny_gens, tmp_path, capsys):
    from latentgap.cli import main
    from latentgap.data import make_splits, open_dataset

    gen = tiny_gens["flow"]
    out = tmp_path / "syn"
    main(["synth", "sample", "--generator", str(gen.run_dir), "--out", str(out), "--per-class", "3", "--steps", "3",
          "--device", "cpu"])
    ds = open_dataset(str(out))
    assert ds.synthetic and len(ds) == 6 and sorted(np.asarray(ds.labels).tolist()) == [0, 0, 0, 1, 1, 1]
    assert ds.describe()["source"].startswith("synthetic: sampled by the generator")
    man = ds.synthetic_manifest
    assert man["source"] == "synthetic" and man["fold"] == 0 and man["counts"] == [3, 3]
    assert ds.load_uint8(np.arange(2)).shape == (2, 32, 32, 1)
    # the images are the decoded latents of the manifest's autoencoder
    from latentgap.autoencoders import create_autoencoder, restore_channels
    from latentgap.data import to_uint8

    z = torch.from_numpy(np.load(out / "latents.npy"))
    with torch.inference_mode():
        x = to_uint8(restore_channels(create_autoencoder("taef2").decode(z[:2]).float().clamp(0, 1), 1))
    assert np.abs(x.astype(int) - ds.load_uint8(np.arange(2)).astype(int)).max() <= 1
    with pytest.raises(UserError, match="synthetic dataset: it cannot be split"):
        make_splits(ds, "kfold", k=3)
    with pytest.raises(SystemExit):  # the CLI turns the same refusal into a one-line error
        main(["train", "--data", str(out), "--space", "image", "--epochs", "1", "--root", str(tmp_path / "r")])
    assert "synthetic dataset: it cannot be split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "sample", "--generator", str(gen.run_dir), "--out", str(out), "--per-class", "1"])
    assert "never overwritten" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_study_trains_generators_and_samples_guided_filtered_data(tmp_path):
    import json

    from latentgap.data import open_dataset
    from latentgap.reports import build_report
    from latentgap.study import run_study, spec_from_dict
    from latentgap.study.grids import classification_grid

    spec = spec_from_dict(dict(
        name="syn", datasets=["phantom:n=60,size=32,classes=2,imbalance=2"], autoencoders=["taef2"], k=3, folds=[0, 1],
        spaces=["latent"], variants=["plain", "noise-conditioned"], baseline_check=False, examples=0,
        train={"epochs": 1, "batch_size": 16, "pretrained": "false", "drw_switch_epoch": 0, "model": "convnext_atto",
               "model_kwargs": {"dims": [8, 16, 32, 64]}},
        cache={"dtype": "float32"}, device="cpu",
        synth={"train": {"steps": 4, "batch_size": 8, "checkpoint_every": 2},
               "sample": {"steps": 2, "guide": True, "guide_scale": 1.0, "filter": True, "threshold": 0.0}}))
    tasks = classification_grid(spec)
    kinds = [t.kind for t in tasks]
    assert kinds.count("synth-train") == kinds.count("synth-sample") == 2
    sample_task = next(t for t in tasks if t.kind == "synth-sample")
    assert set(sample_task.needs) == {"generator", "guide", "filter"}
    summary = run_study(spec, tmp_path, echo=lambda *_: None)
    assert summary.ok, summary.failed
    rows = [json.loads(p.read_text()) for p in (tmp_path / "rows").glob("*.json")]
    gens = [r for r in rows if r["kind"] == "generator"]
    syns = [r for r in rows if r["kind"] == "synthetic"]
    assert len(gens) == len(syns) == 2 and all(s["guided"] and s["filtered"] for s in syns)
    for s in syns:  # fill: tail class up to the majority count of the fold's training part
        g = next(g for g in gens if g["fold"] == s["fold"])
        assert s["counts"] == [max(g["class_counts"]) - c for c in g["class_counts"]]
        ds = open_dataset(str(tmp_path / s["synthetic_dir"]))
        assert ds.synthetic and len(ds) == s["n"] == sum(s["counts"])
    build_report(tmp_path)
    assert "## Synthesis" in (tmp_path / "report.md").read_text()
    # a rerun does nothing (rows are kept)
    assert run_study(spec, tmp_path, echo=lambda *_: None).ran == 0


def test_synth_spec_errors_name_the_field():
    from latentgap.study import spec_from_dict

    base = dict(name="s", datasets=["phantom:n=60"], autoencoders=["taef2"], k=3)
    with pytest.raises(UserError, match=r"synth.sample.guide: .*add noise-conditioned to variants"):
        spec_from_dict({**base, "synth": {"sample": {"guide": True}}})
    with pytest.raises(UserError, match=r"synth.on.datasets: 'busi' is not one of"):
        spec_from_dict({**base, "synth": {"on": {"datasets": ["busi"]}}})
    with pytest.raises(UserError, match=r"synth.sample.per_class: give exactly one plan"):
        spec_from_dict({**base, "synth": {"sample": {"per_class": 3, "ratio": 1.0}}})
    s = spec_from_dict({**base, "synth": {"sample": {"per_class": 3}}})
    assert s.synth.sample.fill is False and s.synth.train.backbone == "dit"


def test_flux2_generator_works_in_the_patched_normalised_form_and_decodes_through_the_adapter(tmp_path):
    """A tiny AutoencoderKLFlux2 saved with save_pretrained and loaded by path: the generator models the adapter's
    latents (2x2-patched, BatchNorm-normalised: 16 channels at x4 here) and samples decode through the adapter."""
    from conftest import tiny_flux2_vae

    from latentgap.autoencoders import create_autoencoder
    from latentgap.data import open_dataset
    from latentgap.synth.dataset import write_synthetic
    from latentgap.synth.sample import load_generator, sample_plan

    vae = tiny_flux2_vae()
    vae.save_pretrained(tmp_path / "f2")
    cfg = _cfg(tmp_path, autoencoder=str(tmp_path / "f2"), steps=2, checkpoint_every=2, views=["identity"])
    row = train_generator(cfg, tmp_path / "gen", progress=False)
    assert row["latent_shape"] == [16, 8, 8]  # 32 px / 4, patched channels
    gen = load_generator(tmp_path / "gen")
    res = sample_plan(gen, np.array([2, 1]), steps=2)
    write_synthetic(tmp_path / "syn", gen, res, {"sampler": "euler", "steps": 2})
    ds = open_dataset(str(tmp_path / "syn"))
    raw = torch.from_numpy(np.load(tmp_path / "syn" / "latents.npy"))
    ae = create_autoencoder(str(tmp_path / "f2"))
    with torch.inference_mode():
        want = ae.decode(raw).float().clamp(0, 1).mean(1, keepdim=True)  # grey dataset: channel mean
    from latentgap.data import to_uint8

    assert np.abs(to_uint8(want).astype(int) - ds.load_uint8(np.arange(3)).astype(int)).max() <= 1


@pytest.mark.usefixtures("one_thread")
def test_utility_variants_train_on_synthetic_and_test_on_real(tiny_gens, tmp_path):
    """TSTR and real+synthetic cells: the training part is the synthetic set (or both), val / test stay real."""
    import json

    from latentgap.synth.dataset import write_synthetic
    from latentgap.synth.sample import sample_plan
    from latentgap.train import TrainConfig, run_training

    gen = tiny_gens["flow"]
    syn = tmp_path / "syn"
    write_synthetic(syn, gen, sample_plan(gen, np.array([5, 4]), steps=2), {"sampler": "euler"})
    common = dict(dataset=gen.config.dataset, autoencoder="taef2", k=3, fold=0, epochs=1, batch_size=8,
                  pretrained="false", model="resnet18", model_kwargs={"channels": [8, 16, 32, 64]},
                  drw_switch_epoch=0, root=gen.config.root, dtype="float32", device="cpu")
    real = run_training(TrainConfig(**common, space="image"), tmp_path / "trtr")
    tstr = run_training(TrainConfig(**common, space="image", variant="tstr", synthetic=str(syn)), tmp_path / "tstr")
    aug = run_training(TrainConfig(**{**common, "model": "convnext_atto", "model_kwargs": {"dims": [8, 16, 32, 64]}},
                                   space="latent", variant="augmented", synthetic=str(syn)), tmp_path / "aug")
    assert tstr["train_data"] == "synthetic" and tstr["n_train"] == tstr["n_synthetic"] == 9
    assert aug["train_data"] == "real+synthetic" and aug["n_train"] == real["n_train"] + 9
    assert tstr["n_test"] == real["n_test"] and tstr["splits_digest"] == real["splits_digest"]  # the same real test
    assert tstr["variant"] == "tstr" and aug["variant"] == "augmented"
    # a synthetic set of another fold is refused
    man = json.loads((syn / "synthetic.json").read_text())
    other = tmp_path / "syn-other"
    other.mkdir()
    for f in ("images.npz", "latents.npy"):
        (other / f).write_bytes((syn / f).read_bytes())
    (other / "synthetic.json").write_text(json.dumps({**man, "fold": 2}))
    with pytest.raises(UserError, match="made for another fold"):
        run_training(TrainConfig(**common, space="image", variant="tstr", synthetic=str(other)), tmp_path / "bad")
    with pytest.raises(UserError, match="needs a synthetic dataset"):
        TrainConfig(**common, space="image", variant="tstr").resolved()


@pytest.mark.usefixtures("one_thread")
def test_study_evaluates_synthetic_data_utility_fidelity_privacy(tmp_path):
    import json

    import pandas as pd

    from latentgap.reports import build_report
    from latentgap.study import run_study, spec_from_dict
    from latentgap.study import stats as S

    spec = spec_from_dict(dict(
        name="syneval", datasets=["phantom:n=72,size=32,classes=2,imbalance=2"], autoencoders=["taef2"], k=3,
        spaces=["image", "latent"], baseline_check=False, examples=0, cache={"dtype": "float32"}, device="cpu",
        train={"epochs": 1, "batch_size": 16, "pretrained": "false", "drw_switch_epoch": 0},
        space_train={"image": {"model": "resnet18", "model_kwargs": {"channels": [8, 16, 32, 64]}},
                     "latent": {"model": "convnext_atto", "model_kwargs": {"dims": [8, 16, 32, 64]}}},
        synth={"train": {"steps": 3, "batch_size": 8, "checkpoint_every": 3}, "sample": {"per_class": 8, "steps": 2},
               "evaluate": {"utility": ["tstr", "augmented"], "utility_spaces": ["image"]}}))
    summary = run_study(spec, tmp_path, echo=lambda *_: None)
    assert summary.ok, summary.failed
    rows = pd.DataFrame([json.loads(p.read_text()) for p in (tmp_path / "rows").glob("*.json")])
    res = rows[rows["kind"] == "result"]
    assert set(res.loc[res["variant"] == "tstr", "n_synthetic"]) == {16}
    aug = res[res["variant"] == "augmented"].set_index("fold")
    plain = res[(res["variant"] == "plain") & (res["space"] == "image")].set_index("fold")
    assert (aug["n_train"] == plain.loc[aug.index, "n_train"] + 16).all()
    t = S.pair_tests(rows, comparisons=S.UTILITY_COMPARISONS)
    tstr = t[t["comparison"] == "tstr-real (image)"].iloc[0]
    want = (res[res["variant"] == "tstr"].set_index("fold")["bacc"] - plain["bacc"]).mean()
    assert tstr["n"] == 3 and tstr["mean_diff"] == pytest.approx(want)
    ev = rows[rows["kind"] == "synth-eval"]
    assert len(ev) == 3 and {"fd_random", "kid_mean_classifier", "copy_rate_pixel_l2", "mia_auc"} <= set(ev.columns)
    assert ev["mia_auc"].between(0, 1).all() and ev["copy_rate_pixel_l2"].between(0, 1).all()
    build_report(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Synthetic data: utility" in md and "## Synthetic data: fidelity" in md and "## Synthetic data: privacy" in md
    assert "membership inference (denoising loss)" in md and "copies · pixel l2" in md
    assert "tstr-real (image)" in md
