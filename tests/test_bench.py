"""latentgap bench: memory accounting against hand-computed byte counts, FLOPs against hand-computed counts,
samples/s and ratios against steps of known duration and known allocations, the side-by-side measurement on a
tiny configuration, and the CLI (table, files, refusal to overwrite, bad input)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from latentgap.bench import (BenchConfig, cpu_step_peak_bytes, measure_step_memory, module_state_tensors,
                             peak_from_events, run_bench, sd_vae_config, tensor_bytes)
from latentgap.bench import throughput
from latentgap.bench.throughput import Case, _flops_per_sample, build_decoder
from latentgap.cli import main
from latentgap.errors import UserError

TINY = dict(resolution=32, batch_size=2, iters=1, min_time=0.0, warmup=1, rounds=2, ae="kl-builtin",
            latent_model="convnext_atto", image_model="resnet18", device="cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny steps on a shared 2-core machine are fastest (and steadiest) that way."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- memory accounting

def test_peak_from_events_is_the_running_maximum():
    # +4, +8 (12 live), -4, +2 (10), -8, -2; a free and an allocation at one instant do not stack
    ev = [(1, 4), (2, 8), (3, -4), (4, 2), (5, -8), (6, -2)]
    assert peak_from_events(ev) == 12
    assert peak_from_events([(1, 5), (2, -5), (2, 5)]) == 5
    assert peak_from_events([]) == 0


def test_cpu_profiler_peak_matches_hand_counted_allocations():
    def step():
        a = torch.empty(1_000_000)          # 4 MB
        b = torch.empty(2_000_000)          # 8 MB -> 12 MB live
        del a
        c = torch.empty(500_000)            # 2 MB -> 10 MB live
        del b, c

    assert cpu_step_peak_bytes(step) == 12_000_000


def test_tensor_bytes_counts_each_storage_once():
    x = torch.zeros(10, 10)
    assert tensor_bytes([x, x[2:], x.view(100), None, torch.zeros(3, dtype=torch.float16)]) == 400 + 6


def test_measure_step_memory_of_a_linear_layer():
    torch.manual_seed(0)
    lin = nn.Linear(256, 128)
    x = torch.randn(64, 256)

    def step():
        with torch.inference_mode():
            return lin(x)

    m = measure_step_memory(step, torch.device("cpu"), lambda: [*module_state_tensors(lin), x])
    assert m["resident_bytes"] == (256 * 128 + 128 + 64 * 256) * 4
    assert m["step_peak_bytes"] == 64 * 128 * 4  # addmm allocates its output and nothing else
    assert m["peak_tensor_bytes"] == m["resident_bytes"] + m["step_peak_bytes"]
    assert m["rss_growth_bytes"] >= 0


def test_training_step_counts_gradients_and_optimizer_state_once():
    torch.manual_seed(0)
    lin = nn.Linear(512, 512, bias=False)                   # 1 MiB of weights
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9, foreach=False)
    x = torch.randn(4, 512)

    def step():
        opt.zero_grad(set_to_none=True)
        lin(x).sum().backward()
        opt.step()

    step()  # the momentum buffer now exists
    m = measure_step_memory(step, torch.device("cpu"), lambda: [*module_state_tensors(lin, optimizer=opt), x],
                            prepare=lambda: opt.zero_grad(set_to_none=True))
    w = 512 * 512 * 4
    # resident: weight + momentum + input; the step adds one gradient (in-place SGD update) plus the
    # (4, 512) output and a few scalars -- an old gradient counted again would add another w
    assert m["resident_bytes"] == 2 * w + 4 * 512 * 4
    assert w <= m["step_peak_bytes"] <= w + 4 * 512 * 4 + 1024


# ----------------------------------------------------------------------------- the comparison

def test_sd_vae_random_has_stable_diffusion_sizes():
    from diffusers import AutoencoderKL

    # 83,653,863 parameters: the Stable Diffusion 1.x VAE (CompVis/stable-diffusion-v1-4/vae)
    with torch.device("meta"):  # count without initialising 84M weights
        assert sum(p.numel() for p in AutoencoderKL(**sd_vae_config()).parameters()) == 83_653_863
    dec, latent_shape, img_ch, _ = build_decoder("sd-vae-random", 16, torch.device("cpu"))
    assert latent_shape == (4, 2, 2) and img_ch == 3
    with torch.inference_mode():
        x = dec(torch.randn(1, 4, 2, 2))
    assert x.shape == (1, 3, 16, 16) and 0.0 <= float(x.mean()) <= 1.0


def test_bench_rows_ratios_flops_and_memory():
    torch.manual_seed(0)
    result = run_bench(BenchConfig(**TINY))
    rows = {r["case"]: r for r in result["rows"]}
    assert set(rows) == {"latent_infer", "decode_classify_infer", "latent_train", "decode_classify_train"}
    for r in rows.values():
        assert len(r["samples_per_s_rounds"]) == 2 and all(v > 0 for v in r["samples_per_s_rounds"])
        assert r["samples_per_s_min"] <= r["samples_per_s"] <= r["samples_per_s_max"]
        assert r["peak_tensor_mb"] >= r["resident_mb"] > 0
        assert r["weights"].startswith("random weights") and r["torch"] == torch.__version__
        assert r["latent_shape"] == [4, 8, 8] and r["image_shape"] == [1, 32, 32]
        # peak = resident + in-step peak (memory.py's definition), from the row's own parts
        assert r["peak_tensor_mb"] == pytest.approx(r["resident_mb"] + r["step_peak_mb"])
    # ratios are paired per round (latent over decode for throughput); the ratios against an independent
    # clock and hand-counted bytes are in test_bench_samples_per_s_and_ratios_of_steps_with_known_cost
    tp = result["ratios"]["throughput_infer"]
    lat, dec = rows["latent_infer"]["samples_per_s_rounds"], rows["decode_classify_infer"]["samples_per_s_rounds"]
    assert tp["rounds"] == pytest.approx([a / b for a, b in zip(lat, dec)])

    # FLOPs counted on meta copies equal a count over a real forward of the same models
    from latentgap.autoencoders import create_autoencoder
    from latentgap.models import create_classifier

    ae = create_autoencoder("kl-builtin")
    lat_clf = create_classifier("convnext_atto", 4, 2, 8, pretrained=False).eval()
    img_clf = create_classifier("resnet18", 1, 2, 32, pretrained=False).eval()
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        lat_clf(z)
    assert rows["latent_infer"]["gflops_per_sample"] == pytest.approx(fc.get_total_flops() / 1e9)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        img_clf(ae.decode(z))
    assert rows["decode_classify_infer"]["gflops_per_sample"] == pytest.approx(fc.get_total_flops() / 1e9)

    # resident bytes of the latent inference step: classifier weights and buffers + the latent batch
    expect = sum(t.numel() * 4 for t in [*lat_clf.parameters(), *lat_clf.buffers()]) + 2 * 4 * 8 * 8 * 4
    assert rows["latent_infer"]["resident_mb"] * 2**20 == pytest.approx(expect)


# FLOPs as torch's FlopCounterMode counts them: 2*in*out per sample for a linear layer, 2*k*k*Cin*Cout*H*W for a
# convolution (bias, activation and reshuffle ops are not counted); a training step adds the weight gradient of
# every layer (same count as its forward) and the input gradient of every layer but the first (whose input needs
# no gradient).
CONV_L = 2 * 3 * 3 * 4 * 8 * 8 * 8            # latent classifier: 3x3 conv 4 -> 8 channels on 8x8
LIN_L = 2 * (8 * 8 * 8) * 2                   # then a linear 512 -> 2
DEC = 2 * 1 * 1 * 4 * 12 * 8 * 8              # decoder: 1x1 conv 4 -> 12 on 8x8, pixel shuffle to (3, 16, 16)
CONV_I = 2 * 5 * 5 * 3 * 6 * 16 * 16          # image classifier: 5x5 conv 3 -> 6 on 16x16
LIN_I = 2 * (6 * 16 * 16) * 2                 # then a linear 1536 -> 2
FLOPS = {"latent_infer": CONV_L + LIN_L, "latent_train": 2 * CONV_L + 3 * LIN_L,
         "decode_classify_infer": DEC + CONV_I + LIN_I, "decode_classify_train": DEC + 2 * CONV_I + 3 * LIN_I}


def _tiny_models():
    lat = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 2))
    dec = nn.Sequential(nn.Conv2d(4, 12, 1), nn.PixelShuffle(2))
    img = nn.Sequential(nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16 * 16, 2))
    return lat, dec, img


def test_flops_per_sample_of_a_tiny_conv_linear_stack_match_the_hand_count():
    lat, dec, img = _tiny_models()
    assert _flops_per_sample(None, lat, (4, 8, 8), False) * 1e9 == pytest.approx(FLOPS["latent_infer"], rel=1e-9)
    assert _flops_per_sample(None, lat, (4, 8, 8), True) * 1e9 == pytest.approx(FLOPS["latent_train"], rel=1e-9)
    # decode-then-classify: the decoder's forward (no grad) is counted, then the classifier on its output
    assert _flops_per_sample(dec, img, (4, 8, 8), False) * 1e9 == pytest.approx(FLOPS["decode_classify_infer"], rel=1e-9)
    assert _flops_per_sample(dec, img, (4, 8, 8), True) * 1e9 == pytest.approx(FLOPS["decode_classify_train"], rel=1e-9)
    assert all(p.device.type == "cpu" for p in [*lat.parameters(), *dec.parameters()])  # counted on copies


# Steps of known cost: each burns ``cpu`` seconds of process CPU time, then sleeps ``sleep`` seconds, and allocates
# two float32 tensors of known size (alive together) on top of a known resident set.
BATCH, ITERS, ROUNDS, MB = 4, 4, 3, 2**20
KNOWN = {  # case: (cpu s, sleep s, resident numel, step numel a, step numel b)
    "latent_infer": (0.005, 0.005, 250_000, 1_000_000, 500_000),
    "decode_classify_infer": (0.020, 0.020, 2_250_000, 5_000_000, 2_500_000),
    "latent_train": (0.005, 0.005, 250_000, 3_000_000, 0),
    "decode_classify_train": (0.010, 0.010, 2_250_000, 6_000_000, 0),
}


def _known_case(name: str, flops: float) -> Case:
    cpu, sleep, res_n, a_n, b_n = KNOWN[name]
    resident = [torch.zeros(res_n)]
    resident.append(resident[0][10:])  # a view of the same storage: counted once

    def step():
        a = torch.empty(a_n)
        b = torch.empty(b_n) if b_n else None
        t0 = time.process_time()
        while time.process_time() - t0 < cpu:
            pass
        time.sleep(sleep)
        del a, b

    path = "latent" if name.startswith("latent") else "decode+classify"
    return Case(name, path, name.rsplit("_", 1)[1], "known", step, lambda: resident, flops / 1e9)


def test_bench_samples_per_s_and_ratios_of_steps_with_known_cost(monkeypatch):
    """run_bench on four steps whose wall time, CPU time, bytes and FLOPs are fixed by the test: every figure in
    the rows and every ratio is checked against the values that follow from those (not from the code's formulas)."""
    lat, dec, img = _tiny_models()
    gflops = {"latent_infer": _flops_per_sample(None, lat, (4, 8, 8), False),
              "decode_classify_infer": _flops_per_sample(dec, img, (4, 8, 8), False),
              "latent_train": _flops_per_sample(None, lat, (4, 8, 8), True),
              "decode_classify_train": _flops_per_sample(dec, img, (4, 8, 8), True)}

    def known_cases(cfg, device):
        cases = [_known_case(n, gflops[n] * 1e9) for n in KNOWN]
        return cases, {"autoencoder": "none (known-cost steps)", "latent_shape": [4, 8, 8], "image_shape": [3, 16, 16],
                       "weights": throughput.WEIGHTS_NOTE}

    monkeypatch.setattr(throughput, "build_cases", known_cases)
    result = run_bench(BenchConfig(**{**TINY, "batch_size": BATCH, "iters": ITERS, "rounds": ROUNDS}))
    rows = {r["case"]: r for r in result["rows"]}
    assert list(rows) == list(KNOWN)
    for name, (cpu, sleep, res_n, a_n, b_n) in KNOWN.items():
        r = rows[name]
        assert r["timed_iters"] == ITERS
        # wall clock: a step lasts at least cpu + sleep, and (even on a loaded 2-core machine) < 3x that;
        # a rate that ignored the batch size or miscounted the steps per block falls outside
        assert len(r["samples_per_s_rounds"]) == ROUNDS
        for v in r["samples_per_s_rounds"]:
            assert BATCH / (3 * (cpu + sleep)) < v <= 1.01 * BATCH / (cpu + sleep), (name, v)
        # CPU clock: the step burns cpu seconds plus a little loop/sleep overhead, whatever the load
        for v in r["samples_per_cpu_s_rounds"]:
            assert BATCH / (1.25 * cpu) < v <= 1.01 * BATCH / cpu, (name, v)
        srt = sorted(r["samples_per_s_rounds"])
        assert (r["samples_per_s_min"], r["samples_per_s"], r["samples_per_s_max"]) == (srt[0], srt[1], srt[-1])
        # memory: hand-counted bytes (numel x 4 bytes for float32)
        assert r["resident_mb"] * MB == res_n * 4
        assert r["step_peak_mb"] * MB == (a_n + b_n) * 4
        assert r["peak_tensor_mb"] * MB == (res_n + a_n + b_n) * 4
        assert r["rss_growth_mb"] >= 0
        assert r["gflops_per_sample"] * 1e9 == pytest.approx(FLOPS[name], rel=1e-9)

    ratios = result["ratios"]
    for mode in ("infer", "train"):
        lat_n, dec_n = f"latent_{mode}", f"decode_classify_{mode}"
        # paired per round, latent over decode, recomputed from the rows' raw per-round samples/s
        per_round = [a / b for a, b in zip(rows[lat_n]["samples_per_s_rounds"], rows[dec_n]["samples_per_s_rounds"])]
        assert ratios[f"throughput_{mode}"]["rounds"] == pytest.approx(per_round)
        assert ratios[f"throughput_{mode}"]["median"] == pytest.approx(sorted(per_round)[1])
        # ... and against the known durations: decode steps take 4x (infer) and 2x (train) as long
        expect = sum(KNOWN[dec_n][:2]) / sum(KNOWN[lat_n][:2])
        assert expect / 2 < ratios[f"throughput_{mode}"]["median"] < expect * 2
        expect_cpu = KNOWN[dec_n][0] / KNOWN[lat_n][0]
        assert expect_cpu / 1.25 < ratios[f"throughput_cpu_time_{mode}"]["median"] < expect_cpu * 1.25
        # memory: decode over latent, from hand-counted bytes; FLOPs: decode over latent, from hand counts
        assert ratios[f"memory_{mode}"] == pytest.approx(sum(KNOWN[dec_n][2:]) / sum(KNOWN[lat_n][2:]))
        assert ratios[f"flops_{mode}"] == pytest.approx(FLOPS[dec_n] / FLOPS[lat_n])
    assert ratios["memory_infer"] == pytest.approx(39 / 7) and ratios["flops_infer"] == pytest.approx(242688 / 38912)


def test_bench_refuses_bad_settings():
    with pytest.raises(UserError, match="dtype"):
        run_bench(BenchConfig(**{**TINY, "dtype": "float8"}))
    with pytest.raises(UserError, match="multiple of"):
        run_bench(BenchConfig(**{**TINY, "ae": "sd-vae-random", "resolution": 60}))
    with pytest.raises(UserError, match="batch-size"):
        run_bench(BenchConfig(**{**TINY, "batch_size": 0}))


# ----------------------------------------------------------------------------- CLI

def test_cli_bench_prints_table_writes_rows_and_never_overwrites(tmp_path, capsys):
    args = ["bench", "-r", "32", "-b", "2", "--iters", "1", "--rounds", "2", "--ae", "kl-builtin",
            "--latent-model", "convnext_atto", "--image-model", "resnet18", "--no-train", "--no-memory",
            "--min-time", "0", "--device", "cpu",
            "--out", str(tmp_path), "--name", "tiny"]
    main(args)
    out = capsys.readouterr().out
    assert "latent_infer" in out and "decode_classify_infer" in out and "paper (GH200" in out
    rec = json.loads((tmp_path / "tiny.json").read_text())
    assert [r["case"] for r in rec["rows"]] == ["latent_infer", "decode_classify_infer"]
    header = (tmp_path / "tiny.csv").read_text().splitlines()[0].split(",")
    assert {"samples_per_s", "samples_per_cpu_s", "device_name", "torch", "resolution", "dtype"} <= set(header)
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and "already exists" in capsys.readouterr().err


def test_cli_bench_bad_dtype_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "--dtype", "float8", "--device", "cpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: unknown dtype 'float8'") and len(err.strip().splitlines()) == 1
