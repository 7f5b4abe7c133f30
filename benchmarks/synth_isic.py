"""Does guidance or filtering by the latent classifier make class-recognisable synthetic images? ISIC-8 x TAEF2.

On fold 0 of the `shared-data` study (3 folds, split seed 0; its cache and splits are reused through
``root = the study folder``):

1. a class-conditional latent diffusion generator (tiny DiT, flow matching, label dropout 0.1, views identity +
   hflip) trained here on CPU on the fold's *training part* only;
2. a guide: a FiLM noise-conditioned ConvNeXt-Atto latent classifier of the same fold (the study's latent
   settings + ``noise-conditioned``), trained here;
3. a filter: the study's own plain latent cell of fold 0 (trained on the fold's training part);
4. a judge: the study's image-space cell of fold 0 (half-width ResNet-18 on the fold's real training images) — a
   different model and space from the guide and the filter.

The same number of samples per class is drawn for: unguided (conditional only), CFG (scale 3), classifier-guided
(scale s), and filtered (unguided, kept when the filter's probability of the intended class >= 0.5). Each set is
written as a synthetic dataset (``latentgap.synth.dataset``), opened again, and judged: the judge's balanced
accuracy on the intended labels, next to the judge's balanced accuracy on the fold's real test images.

    OMP_NUM_THREADS=1 python benchmarks/synth_isic.py --study /work/runs/shared/study --work /tmp/lgx/synth_isic

Writes benchmarks/synth_isic/{record.json, README.md, samples.png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from classifier_env import machine, versions  # noqa: E402

OUT = Path(__file__).parent / "synth_isic"
DATASET, AE, FOLD = "isic_skin8_64", "taef2", 0


def study_run(study: Path, space: str, variant: str = "plain") -> Path:
    for f in (study / "rows").glob("c*.json"):
        r = json.loads(f.read_text())
        if (r.get("dataset"), r.get("space"), r.get("variant"), r.get("fold")) == (DATASET, space, variant, FOLD):
            if space == "image" or r.get("autoencoder") == AE:
                return study / r["run_dir"]
    raise SystemExit(f"the study has no finished {space}/{variant} cell of {DATASET} fold {FOLD} yet")


def judge_bacc(judge, ds) -> tuple[float, float]:
    from sklearn.metrics import balanced_accuracy_score

    x = ds.load(np.arange(len(ds)))
    p = torch.cat([judge.predict_proba(x[i:i + 128]) for i in range(0, len(x), 128)]).numpy()
    y = np.asarray(ds.labels).ravel()
    return float(balanced_accuracy_score(y, p.argmax(1))), float(p[np.arange(len(y)), y].mean())


def grid_png(real_ds, real_idx_by_class, sets: dict, path: Path, per: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["real"] + list(sets)
    k = len(real_idx_by_class)
    fig, axes = plt.subplots(k, per * len(names), figsize=(per * len(names) * 0.9, k * 0.95))
    for c in range(k):
        cols = [real_ds.load_uint8(real_idx_by_class[c][:per])]
        for ds in sets.values():
            y = np.asarray(ds.labels).ravel()
            cols.append(ds.load_uint8(np.flatnonzero(y == c)[:per]))
        for j, imgs in enumerate(cols):
            for i in range(per):
                ax = axes[c, j * per + i]
                ax.axis("off")
                if i < len(imgs):
                    ax.imshow(imgs[i].squeeze(), cmap="gray" if imgs.shape[-1] == 1 else None)
                if c == 0 and i == 0:
                    ax.set_title(names[j], fontsize=7, loc="left")
        axes[c, 0].text(-4, 32, real_ds.class_names[c], fontsize=6, ha="right", va="center")
    fig.subplots_adjust(wspace=0.03, hspace=0.03, left=0.14)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from latentgap.data import open_dataset
    from latentgap.study import load_preset
    from latentgap.synth.dataset import write_synthetic
    from latentgap.synth.sample import load_generator, plan_counts, sample_plan
    from latentgap.synth.train import SynthConfig, train_generator
    from latentgap.train import TrainConfig, load_run, run_training

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", required=True, type=Path)
    ap.add_argument("--work", default="/tmp/lgx/synth_isic", type=Path)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--per-class", type=int, default=24)
    ap.add_argument("--sample-steps", type=int, default=40)
    ap.add_argument("--guide-scale", type=float, default=2.0)
    ap.add_argument("--cfg", type=float, default=3.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)
    spec = load_preset("shared-data")
    rec = {"command": "python benchmarks/synth_isic.py " + " ".join(sys.argv[1:]), "machine_at_start": machine(),
           "versions": versions()}
    common = dict(dataset=DATASET, autoencoder=AE, fold=FOLD, k=spec.k, split_seed=spec.split_seed,
                  val_fraction=spec.val_fraction, views=spec.cache.views, dtype=spec.cache.dtype, device="cpu",
                  root=str(args.study))
    t0 = time.perf_counter()
    gcfg = SynthConfig(**common, backbone="dit", size=args.size, objective="flow", steps=args.steps, batch_size=64,
                       lr=3e-4, checkpoint_every=250)
    grow = train_generator(gcfg, args.work / "generator")
    rec["generator"] = {k: grow[k] for k in ("backbone", "size", "objective", "parameters", "steps", "batch_size",
                                             "final_loss", "train_seconds", "samples_per_s", "n_train", "class_counts")}
    rec["generator"]["wall_seconds_this_invocation"] = round(time.perf_counter() - t0, 1)
    lat_settings = {**spec.train, **spec.space_train["latent"]}
    t0 = time.perf_counter()
    guide_cfg = TrainConfig(**{**lat_settings, **{k: v for k, v in common.items() if k != "dtype"}}, dtype=spec.cache.dtype,
                            space="latent", variant="noise-conditioned", seed=0)
    grow_guide = run_training(guide_cfg, args.work / "guide")
    rec["guide"] = {k: grow_guide.get(k) for k in ("model", "variant", "bacc", "acc_q0", "acc_q1", "acc_q2", "acc_q3",
                                                   "epochs", "converged", "train_seconds")}
    gen = load_generator(args.work / "generator")
    guide = load_run(args.work / "guide")
    filt = load_run(study_run(args.study, "latent"))
    judge = load_run(study_run(args.study, "image"))
    rec["filter"] = {"run": str(study_run(args.study, "latent").name), "bacc_real_test": filt.result["bacc"]}
    rec["judge"] = {"run": str(study_run(args.study, "image").name), "bacc_real_test": judge.result["bacc"],
                    "model": judge.result["model"]}
    counts = plan_counts(gen, per_class=args.per_class)
    modes = {"unguided": dict(), "cfg": dict(cfg_scale=args.cfg), "guided": dict(guide=guide, guide_scale=args.guide_scale),
             "filtered": dict(filter_run=filt, threshold=0.5)}
    sets, rec["modes"] = {}, {}
    for name, kw in modes.items():
        t0 = time.perf_counter()
        res = sample_plan(gen, counts, seed=1, steps=args.sample_steps, **kw)
        folder = args.work / "synthetic" / name
        if not folder.exists():
            settings = {"sampler": "euler", "steps": args.sample_steps, "cfg_scale": kw.get("cfg_scale", 1.0), "seed": 1,
                        "guide": str(args.work / "guide") if "guide" in kw else None,
                        "guide_scale": kw.get("guide_scale", 0.0), "filter": "study latent cell" if "filter_run" in kw
                        else None, "threshold": kw.get("threshold"), "requested": counts.tolist()}
            write_synthetic(folder, gen, res, settings)
        ds = open_dataset(str(folder))
        bacc, pmean = judge_bacc(judge, ds)
        rec["modes"][name] = {"judge_bacc": bacc, "judge_mean_prob_intended": pmean, "n": len(ds),
                              "acceptance": [None if a != a else round(float(a), 3) for a in res["acceptance"]],
                              "seconds": round(time.perf_counter() - t0, 1)}
        sets[name] = ds
        print(name, json.dumps(rec["modes"][name]), flush=True)
    real = open_dataset(DATASET)
    y = np.asarray(real.labels).ravel()
    grid_png(real, [np.flatnonzero(y == c) for c in range(real.num_classes)], sets, OUT / "samples.png")
    rec["machine_at_end"] = machine()
    (OUT / "record.json").write_text(json.dumps(rec, indent=1) + "\n")
    m = rec["modes"]
    lines = [f"# Synthetic ISIC-8 from TAEF2 latents: judged class accuracy by sampling mode (fold {FOLD})", "",
             f"Command: `{rec['command']}`. Generator: {gcfg.backbone}-{gcfg.size} ({rec['generator']['parameters']:,} "
             f"parameters), flow matching, {gcfg.steps} steps x batch {gcfg.batch_size} on the fold's "
             f"{rec['generator']['n_train']} training latents, {rec['generator']['train_seconds']:.0f} s on "
             f"{rec['machine_at_start']['cpu']} (1 thread). Euler sampler, {args.sample_steps} steps, "
             f"{args.per_class} samples per class.", "",
             f"Judge: the study's image-space cell of fold {FOLD} ({rec['judge']['model']}), bACC "
             f"{rec['judge']['bacc_real_test']:.3f} on the fold's real test images (chance 0.125).", "",
             "| sampling | judge bACC on samples | judge's mean p(intended class) | acceptance per class |",
             "|---|---|---|---|"]
    for name in modes:
        acc = m[name]["acceptance"]
        lines.append(f"| {name} | {m[name]['judge_bacc']:.3f} | {m[name]['judge_mean_prob_intended']:.3f} | "
                     f"{'–' if name != 'filtered' else ', '.join(str(a) for a in acc)} |")
    lines += ["", "![samples](samples.png)", "", "Columns: real images, then each sampling mode; rows: classes."]
    (OUT / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
