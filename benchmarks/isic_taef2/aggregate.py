"""Mean +- std of bACC, AUC and MCC per arm over the folds, from the result rows in ``rows/`` only.

Writes ``results.md`` (table, settings read back from the rows, the machine from ``machine.json``) and prints
the table. Re-runnable at any time: arms with fewer than 5 finished folds are marked as such.

    python benchmarks/isic_taef2/aggregate.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ARMS = ("IS", "RS", "LS", "LS+noise", "LS+distill")
SETTINGS = ("model", "pretrained", "max_epochs", "batch_size", "lr", "weight_decay", "loss", "augment",
            "stem_stride", "input_shape", "image_size", "device_name")


def load_rows(folder: Path = HERE / "rows") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def summarise(rows: list[dict]) -> list[dict]:
    """One line per arm: n folds and mean / sample std (ddof = 1) of bACC, AUC, MCC, epochs and seconds."""
    out = []
    for arm in ARMS:
        sel = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["fold"])
        if not sel:
            continue
        line = {"arm": arm, "folds": [r["fold"] for r in sel]}
        for key in ("bacc", "auc", "mcc", "acc", "epochs", "train_seconds"):
            v = np.array([r[key] for r in sel], dtype=float)
            line[key] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"))
        line["cpu_seconds"] = float(sum(r["bench"]["cpu_seconds"] for r in sel))
        line["settings"] = {k: sel[0].get(k) for k in SETTINGS}
        line["variant"] = sel[0]["variant"]
        out.append(line)
    return out


def to_markdown(summary: list[dict], machine: dict) -> str:
    pm = lambda t, d=3: f"{t[0]:.{d}f} ± {t[1]:.{d}f}"  # noqa: E731
    lines = ["| arm | variant | folds | bACC | AUC (macro OvR) | MCC | accuracy | epochs run | train s / fold |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        folds = ",".join(map(str, s["folds"])) + ("" if len(s["folds"]) == 5 else " (incomplete)")
        lines.append(f"| {s['arm']} | {s['variant']} | {folds} | {pm(s['bacc'])} | {pm(s['auc'])} | {pm(s['mcc'])} | "
                     f"{pm(s['acc'])} | {pm(s['epochs'], 1)} | {pm(s['train_seconds'], 0)} |")
    lines += ["", "Settings read back from the rows (first fold of each arm):", "",
              "| arm | " + " | ".join(SETTINGS) + " |", "|---" * (len(SETTINGS) + 1) + "|"]
    for s in summary:
        lines.append(f"| {s['arm']} | " + " | ".join(str(s["settings"][k]) for k in SETTINGS) + " |")
    m = machine.get("machine", {})
    lines += ["", f"Machine: {m.get('cpu')}, {m.get('logical_cores')} logical cores (shared with other jobs; load "
              f"average {m.get('loadavg')} when the driver started), {m.get('os')}. Versions: "
              + ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    summary = summarise(load_rows())
    machine_file = HERE / "machine.json"
    machine = json.loads(machine_file.read_text()) if machine_file.exists() else {}
    table = to_markdown(summary, machine)
    head = (HERE / "results_header.md").read_text() if (HERE / "results_header.md").exists() else ""
    (HERE / "results.md").write_text(head + table)
    print(table)


if __name__ == "__main__":
    main()
