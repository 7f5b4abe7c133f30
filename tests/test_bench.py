"""latentgap bench: memory accounting against hand-computed byte counts, the side-by-side measurement on a
tiny configuration, and the CLI (table, files, refusal to overwrite, bad input)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from latentgap.bench import (BenchConfig, cpu_step_peak_bytes, measure_step_memory, module_state_tensors,
                             peak_from_events, run_bench, sd_vae_config, tensor_bytes)
from latentgap.bench.throughput import build_decoder
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
    # ratios are paired per round
    tp = result["ratios"]["throughput_infer"]
    lat, dec = rows["latent_infer"]["samples_per_s_rounds"], rows["decode_classify_infer"]["samples_per_s_rounds"]
    assert tp["rounds"] == pytest.approx([a / b for a, b in zip(lat, dec)])
    assert result["ratios"]["memory_infer"] == pytest.approx(
        rows["decode_classify_infer"]["peak_tensor_mb"] / rows["latent_infer"]["peak_tensor_mb"])

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
