"""Does shift augmentation close the image-space arm's distance to MedMNIST v2 on BreastMNIST? Three seeds each.

The shared-data preset's image recipe (half-width ResNet-18, LDAM-DRW, until converged, 32 px) on the official
BreastMNIST split, with three augmentations: A — the preset's encode-time views identity + hflip, no other
augmentation; B — no views, on-the-fly flip + shift (10 % reflect-padded translation, what latent cells cannot get);
E — views identity + hflip plus on-the-fly shift; F — A with the best epoch chosen (and early stopping driven) by
validation AUC, as MedMNIST selects models; G — F at ResNet-18's full width; H — A with plain cross-entropy instead
of LDAM-DRW; I — A at the native 28 px (no resize). Reference: MedMNIST v2 ResNet-18 (28) AUC .901 / ACC .863
(one run, 100 epochs).

    OMP_NUM_THREADS=1 python benchmarks/medmnist_variants.py --work /work/runs/mm2

Resumable (finished runs are read back). Writes benchmarks/medmnist_variants.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402

HERE = Path(__file__).parent
VARIANTS = {"A": dict(views=["identity", "hflip"], resize=32),
            "B": dict(views=["identity"], augment="flip+shift", resize=32),
            "E": dict(views=["identity", "hflip"], augment="shift", resize=32),
            "F": dict(views=["identity", "hflip"], resize=32, monitor="auc"),
            "G": dict(views=["identity", "hflip"], resize=32, monitor="auc", model_kwargs={}),
            "H": dict(views=["identity", "hflip"], resize=32, loss="ce"),
            "I": dict(views=["identity", "hflip"], resize=None),
            # MedMNIST's 28-px ResNet geometry: stride-1 stem, no max-pool, so the last stage sees 4x4 (not 2x2)
            "J": dict(views=["identity", "hflip"], resize=None, stem=1),
            # ... with MedMNIST's own recipe: plain CE, 100 epochs (cosine here, step decay there), no early stop,
            # the epoch chosen by validation AUC
            "K": dict(views=["identity", "hflip"], resize=None, stem=1, loss="ce", drw_switch_epoch=None,
                      until="epochs", epochs=100, patience=100, monitor="auc"),
            # ... all of MedMNIST v2's 28-px setting: full width, no augmentation at all, batch 128, no weight decay
            "L": dict(views=["identity"], augment="none", resize=None, stem=1, loss="ce", drw_switch_epoch=None,
                      until="epochs", epochs=100, patience=100, monitor="auc", model_kwargs={}, batch_size=128,
                      weight_decay=0.0)}
REF = {"auc": 0.901, "acc": 0.863}


def _force_resnet_stem(stem: int | None) -> None:
    """Variants J/K: ResNet stem stride forced (the library picks 2 at 28-32 px); None restores the library rule."""
    from latentgap.models import classifiers

    rule = getattr(classifiers, "_library_plan_strides", classifiers.plan_strides)
    classifiers._library_plan_strides = rule
    classifiers.plan_strides = (rule if stem is None else
                                lambda family, size: (stem, 3) if family == "resnet" else rule(family, size))


def main() -> None:
    from latentgap.study import load_preset
    from latentgap.train import TrainConfig, run_training

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/lgx/mm_variants")
    ap.add_argument("--dataset", default="breastmnist_28")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--finished-only", action="store_true", help="rebuild the record from finished runs only")
    args = ap.parse_args()
    spec = load_preset("shared-data")
    base = {**spec.train, **spec.space_train["image"]}
    runs = []
    for v in args.variants:
        for s in args.seeds:
            run_dir = Path(args.work) / "runs" / f"{args.dataset}-{v}-s{s}"
            if args.finished_only and not (run_dir / "result.json").exists():
                continue
            opts = dict(VARIANTS[v])
            _force_resnet_stem(opts.pop("stem", None))
            cfg = TrainConfig(**{**base, **opts}, dataset=args.dataset, space="image", variant="plain",
                              protocol="official", seed=s, device="cpu", root=f"{args.work}/work")
            row = run_training(cfg, run_dir)
            runs.append({"variant": v, "seed": s, **{k: row.get(k) for k in ("auc", "acc", "bacc", "epochs", "best_epoch",
                                                                             "convergence", "augment", "views")}})
            print(json.dumps(runs[-1]), flush=True)
    out = {"command": "python benchmarks/medmnist_variants.py " + " ".join(sys.argv[1:]), "settings": base,
           "variants": VARIANTS, "reference": REF, "machine": machine(), "versions": versions(), "runs": runs}
    (HERE / "medmnist_variants.json").write_text(json.dumps(out, indent=1) + "\n")
    lines = [f"# {args.dataset}: image-space augmentation variants, {len(args.seeds)} seeds, official split", "",
             f"Command: `{out['command']}`. Settings: {json.dumps(base)}. Reference: MedMNIST v2 ResNet-18 (28) "
             f"AUC {REF['auc']} / ACC {REF['acc']}.", "",
             "| variant | augmentation | test AUC per seed | mean AUC | test ACC per seed | mean ACC | best epoch (of run) |",
             "|---|---|---|---|---|---|---|"]
    for v in args.variants:
        r = [x for x in runs if x["variant"] == v]
        if not r:
            continue
        desc = (f"views {'+'.join(VARIANTS[v]['views'])}, on-the-fly {r[0]['augment']}"
                + (", batch 128, no weight decay" if VARIANTS[v].get("weight_decay") == 0.0 else "")
                + (f", select on val {VARIANTS[v]['monitor']}" if "monitor" in VARIANTS[v] else "")
                + (", full width" if VARIANTS[v].get("model_kwargs") == {} else "")
                + (f", loss {VARIANTS[v]['loss']}" if "loss" in VARIANTS[v] else "")
                + (", 28 px" if VARIANTS[v].get("resize", 32) is None else "")
                + (f", stem stride {VARIANTS[v]['stem']}" if "stem" in VARIANTS[v] else "")
                + (f", {VARIANTS[v]['epochs']} epochs, no early stop" if VARIANTS[v].get("until") == "epochs" else ""))
        lines.append(f"| {v} | {desc} | {' / '.join(format(x['auc'], '.3f') for x in r)} | {np.mean([x['auc'] for x in r]):.3f} "
                     f"| {' / '.join(format(x['acc'], '.3f') for x in r)} | {np.mean([x['acc'] for x in r]):.3f} "
                     f"| {', '.join(str(x['best_epoch']) + ' (' + str(x['epochs']) + ')' for x in r)} |")
    (HERE / "medmnist_variants.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
