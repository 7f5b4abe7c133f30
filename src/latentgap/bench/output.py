"""Bench results as files (JSON + CSV, named by device, dtype and resolution like timm's benchmark CSVs)
and as a rich table with the ratios next to the paper's."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from rich.table import Table

from ..errors import UserError
from ..storage import atomic_write_text
from .throughput import fmt_ratio, paper_reference


def result_stem(result: dict) -> str:
    s = result["setup"]
    dev = s["device"].replace(":", "")
    return f"bench-{dev}-{s['dtype']}-{s['resolution']}px-b{s['batch_size']}"


def save_results(result: dict, out_dir: str | os.PathLike, stem: str | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (rows, ratios, setup) and ``<stem>.csv`` (rows) into ``out_dir``.

    Finished results are never overwritten: an existing file is a UserError.
    """
    out_dir = Path(out_dir)
    stem = stem or result_stem(result)
    paths = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    for p in paths:
        if p.exists():
            raise UserError(f"bench result '{p}' already exists", "pass another --out folder or --name, or remove the old file")
    atomic_write_text(paths[0], json.dumps(result, indent=2, default=str) + "\n")
    buf = io.StringIO()
    rows = [{k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()} for r in result["rows"]]
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(paths[1], buf.getvalue())
    return paths


def _mb(v) -> str:
    return "n/a" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def render_table(result: dict) -> Table:
    """Samples/s (median [min-max] over rounds), GFLOPs, memory per case; ratios in the caption."""
    s = result["setup"]
    title = (f"latent vs decode-then-classify @ {s['resolution']} px, batch {s['batch_size']}, {s['dtype']}, "
             f"{s['device']} ({s['device_name']}, {s['threads']} threads)")
    t = Table(title=title)
    for col in ("case", "models", "samples/s", "min-max", "samples/CPU-s", "GFLOP/sample", "peak tensor MB", "resident MB",
                "RSS growth MB"):
        t.add_column(col, justify="left" if col in ("case", "models") else "right")
    for r in result["rows"]:
        g = r["gflops_per_sample"]
        t.add_row(r["case"], r["models"], f"{r['samples_per_s']:,.2f}",
                  f"{r['samples_per_s_min']:,.2f}-{r['samples_per_s_max']:,.2f}", f"{r['samples_per_cpu_s']:,.2f}",
                  "n/a" if g is None else f"{g:,.2f}", _mb(r.get("peak_tensor_mb")), _mb(r.get("resident_mb")),
                  _mb(r.get("rss_growth_mb")))
    ratios, paper = result["ratios"], paper_reference()
    lines = []
    for mode in ("infer", "train"):
        tp = ratios.get(f"throughput_{mode}")
        if tp is None:
            continue
        cpu = ratios[f"throughput_cpu_time_{mode}"]
        lines.append(f"{mode}: throughput latent/decode {fmt_ratio(tp['median'])} "
                     f"(rounds {fmt_ratio(tp['min'])}-{fmt_ratio(tp['max'])}; per CPU-second {fmt_ratio(cpu['median'])}), FLOPs {fmt_ratio(ratios.get(f'flops_{mode}'))}, "
                     f"peak memory decode/latent {fmt_ratio(ratios.get(f'memory_{mode}'))}")
    lines.append(f"paper (GH200, inference): throughput {paper['throughput_ratio']}x "
                 f"({paper['latent_samples_per_s']:,} vs {paper['decode_samples_per_s']} samples/s), memory "
                 f"{paper['memory_ratio']}x ({paper['latent_memory_mb']} MB vs {paper['decode_memory_mb'] // 1000} GB)")
    lines.append(f"autoencoder: {s['autoencoder']}; {s['weights']}")
    t.caption = "\n".join(lines)
    return t
