"""ISIC-8 (64 px) x TAEF2 x 5 folds: the five arms of the learnability-gap paper, from the command line.

Arms per fold (learnability-gap paper, Setup): IS (images), RS (decode(encode(x))), LS (latents),
LS + FiLM noise conditioning, LS + distillation from the RS run of the same fold (``--teacher``). Each arm is
one ``latentgap train`` command; this driver only builds the commands, runs them under ``nice`` with one
thread, and copies each finished result row (small JSON) into ``rows/`` so that ``aggregate.py`` works from
the rows alone. Run folders (checkpoints, hundreds of MB) stay in ``--work``, outside the repository.

Re-running the driver skips finished runs and resumes unfinished ones from their last checkpoint, so it can
be stopped at any time. Folds are independent, so two drivers with disjoint ``--folds`` can share a machine.

    python benchmarks/isic_taef2/run.py --folds 0 2 4 &
    python benchmarks/isic_taef2/run.py --folds 1 3 &
    python benchmarks/isic_taef2/aggregate.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))
from classifier_env import machine, versions  # noqa: E402

# the order matters: RS first, because it is the distillation teacher of its fold
ARMS = ("RS", "IS", "LS", "LS+noise", "LS+distill")


def arm_args(arm: str, fold: int, work: Path, a) -> list[str]:
    """The ``latentgap train`` options of one arm (everything else is shared, see ``common``)."""
    img_model = ["--model", a.image_model]
    lat_model = ["--model", a.latent_model]
    return {
        "IS": ["--space", "image", *img_model],
        "RS": ["--ae", "taef2", "--space", "recon", *img_model],
        "LS": ["--ae", "taef2", "--space", "latent", *lat_model],
        "LS+noise": ["--ae", "taef2", "--space", "latent", *lat_model, "--noise-cond"],
        "LS+distill": ["--ae", "taef2", "--space", "latent", *lat_model, "--distill",
                       "--teacher", str(run_dir("RS", fold, work)), "--alpha", "1", "--temperature", "4"],
    }[arm]


def run_dir(arm: str, fold: int, work: Path) -> Path:
    return work / "runs" / f"isic_taef2-{arm.replace('+', '_')}-fold{fold}"


def child_cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--drw-epoch", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--image-model", default="resnet18")
    ap.add_argument("--latent-model", default="convnext_tiny")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--nice", type=int, default=5)
    ap.add_argument("--work", default="/tmp/lgx/work")
    a = ap.parse_args()
    work = Path(a.work)
    rows = HERE / "rows"
    rows.mkdir(exist_ok=True)
    common = ["--data", "isic_skin8_64", "--pretrained", "false", "--epochs", str(a.epochs), "--patience",
              str(a.patience), "--drw-epoch", str(a.drw_epoch), "--batch-size", str(a.batch_size), "--seed", "0",
              "--folds", "5", "--split-seed", "0", "--device", "cpu", "--root", str(work)]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    (HERE / "machine.json").write_text(json.dumps({"machine": machine(), "versions": versions(),
                                                   "driver": " ".join(sys.argv[1:])}, indent=2) + "\n")
    for fold in a.folds:
        for arm in a.arms:
            name = f"{arm.replace('+', '_')}-fold{fold}"
            if (rows / f"{name}.json").exists():
                print(f"skip {name}: row exists", flush=True)
                continue
            out = run_dir(arm, fold, work)
            cmd = ["nice", "-n", str(a.nice), "latentgap", "train", *arm_args(arm, fold, work, a), "--fold",
                   str(fold), *common, "--out", str(out)]
            print("$", shlex.join(cmd), flush=True)
            t0, c0, load0 = time.perf_counter(), child_cpu_seconds(), os.getloadavg()[0]
            subprocess.run(cmd, check=True, env=env)
            row = json.loads((out / "result.json").read_text())
            row["arm"] = arm
            # timing of this invocation (after a resume it covers only the epochs run now)
            row["bench"] = {"command": shlex.join(cmd[3:]), "wall_seconds": round(time.perf_counter() - t0, 1),
                            "cpu_seconds": round(child_cpu_seconds() - c0, 1), "threads": a.threads,
                            "loadavg_start": round(load0, 2), "loadavg_end": round(os.getloadavg()[0], 2)}
            tmp = rows / f".{name}.json.tmp"
            tmp.write_text(json.dumps(row, indent=1) + "\n")
            os.replace(tmp, rows / f"{name}.json")  # atomic: a row is either complete or absent
            print(f"done {name}: bacc {row['bacc']:.3f} auc {row['auc']:.3f} mcc {row['mcc']:.3f} "
                  f"wall {row['bench']['wall_seconds']} s cpu {row['bench']['cpu_seconds']} s", flush=True)


if __name__ == "__main__":
    main()
