"""Throughput and memory measurement: latent classifier vs decode-then-classify (the paper's Table 3)."""

from .memory import (RssWatcher, cpu_step_peak_bytes, measure_step_memory, module_state_tensors, peak_from_events,
                     tensor_bytes)
from .output import render_table, save_results
from .throughput import BenchConfig, build_cases, paper_reference, run_bench, sd_vae_config

__all__ = ["BenchConfig", "RssWatcher", "build_cases", "cpu_step_peak_bytes", "measure_step_memory",
           "module_state_tensors", "paper_reference", "peak_from_events", "render_table", "run_bench",
           "save_results", "sd_vae_config", "tensor_bytes"]
