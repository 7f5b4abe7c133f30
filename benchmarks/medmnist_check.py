"""The shared-data study's image-space classifier on the official MedMNIST splits, against MedMNIST v2.

The gap protocol asks that the image-space arm be trained as well as the field trains it: on PneumoniaMNIST and
BreastMNIST the study's own image settings (the `shared-data` preset: half-width ResNet-18 from random init,
LDAM-DRW, until converged under a 40-epoch ceiling, views identity + hflip, 32 px) should reach MedMNIST v2's
ResNet-18 (28 px) test figures — PneumoniaMNIST AUC .944 / ACC .854, BreastMNIST AUC .901 / ACC .863
(Yang et al., Sci. Data 2023; 100 epochs, official split). The study itself uses 3-fold CV on the pooled
images, whose test parts differ from the official test split, so this script trains the same settings on the
official train / val / test split and compares like with like. Also the plain baseline recipe (variant
``baseline``: class-weighted CE, one-cycle, same budget) for each.

    OMP_NUM_THREADS=1 python benchmarks/medmnist_check.py --work /tmp/lgx/medmnist

Writes benchmarks/medmnist_check.json and .md (resumable: finished runs are read back, not retrained).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402

REFERENCE = {"pneumoniamnist_28": {"auc": 0.944, "acc": 0.854}, "breastmnist_28": {"auc": 0.901, "acc": 0.863}}
HERE = Path(__file__).parent


def main() -> None:
    from latentgap.study import load_preset
    from latentgap.train import TrainConfig, run_training

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/lgx/medmnist")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=["plain", "baseline"], choices=["plain", "baseline"])
    ap.add_argument("--full-width", action="store_true", help="ResNet-18 at its standard width instead of the "
                    "preset's half width (what MedMNIST v2 trains)")
    ap.add_argument("--tag", default="", help="suffix of the output files (medmnist_check<tag>.json/.md)")
    args = ap.parse_args()
    spec = load_preset("shared-data")
    settings = {**spec.train, **spec.space_train["image"]}
    if args.full_width:
        settings["model_kwargs"] = {}
    out = {"command": "python benchmarks/medmnist_check.py " + " ".join(sys.argv[1:]), "settings": settings,
           "views": spec.cache.views, "reference": {"source": "MedMNIST v2, ResNet-18 (28), official split",
                                                    **REFERENCE},
           "machine_at_start": machine(), "versions": versions(), "runs": []}
    for ds, ref in REFERENCE.items():
        for variant in args.variants:
            for seed in args.seeds:
                cfg = TrainConfig(**settings, dataset=ds, space="image", variant=variant, protocol="official",
                                  seed=seed, resize=spec.cache.resize[ds], views=spec.cache.views, device="cpu",
                                  root=args.work)
                t0 = time.perf_counter()
                row = run_training(cfg, Path(args.work) / "runs" / f"{ds}-{variant}-s{seed}{'-full' if args.full_width else ''}")
                keep = ("auc", "acc", "bacc", "epochs", "best_epoch", "converged", "convergence", "train_seconds",
                        "n_train", "n_val", "n_test", "model", "loss", "augment", "views", "image_size")
                out["runs"].append({"dataset": ds, "variant": variant, "seed": seed,
                                    "reaches_reference": bool(row["auc"] >= ref["auc"] and row["acc"] >= ref["acc"]),
                                    **{k: row.get(k) for k in keep},
                                    "wall_seconds_this_invocation": round(time.perf_counter() - t0, 1)})
                print(json.dumps(out["runs"][-1]), flush=True)
    out["machine_at_end"] = machine()
    (HERE / f"medmnist_check{args.tag}.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = ["# Image-space classifier at the shared-data study's settings vs MedMNIST v2 (official splits)", "",
             f"Command: `{out['command']}`. Settings: {json.dumps(settings)}, views {spec.cache.views}.", "",
             "| dataset | recipe | seed | test AUC | test ACC | bACC | epochs (best) | converged | MedMNIST v2 ResNet-18 AUC / ACC | reaches both |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in out["runs"]:
        ref = REFERENCE[r["dataset"]]
        lines.append(f"| {r['dataset']} | {r['variant']} | {r['seed']} | {r['auc']:.3f} | {r['acc']:.3f} | {r['bacc']:.3f} "
                     f"| {r['epochs']} ({r['best_epoch']}) | {r['convergence']} | {ref['auc']:.3f} / {ref['acc']:.3f} "
                     f"| {'yes' if r['reaches_reference'] else 'no'} |")
    (HERE / f"medmnist_check{args.tag}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
