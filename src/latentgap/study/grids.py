"""Grid builders: a study spec -> the :class:`~latentgap.study.tasks.Task` graph of one kind of study.

``classification`` (today's only kind) is the learnability-gap grid::

    train-autoencoder (a...)  ->  prepare (p...)  ->  classifier (c...)  ->  classifier, distilled (c...)
    built-in AE per dataset       cache + fidelity     IS / RS / LS cells       taught by the RS cell of
    (or once on train.data)       per dataset x AE     x fold x seed            its fold and seed

A task's hash covers exactly what defines its result, so changing an executor setting reruns nothing and
changing a training setting reruns only the cells it reaches. Hashes are unchanged from the first runner
(rows of existing studies stay valid).
"""

from __future__ import annotations

from typing import Any, Callable

from ..registry import Registry
from ..runs import run_name
from ..storage import stable_hash
from . import cells, probe_cells, seg_cells, synth_cells  # noqa: F401  (register the task kinds)
from .spec import IMAGE_AE, AutoencoderEntry, StudySpec, resize_for
from .tasks import Task

GRIDS = Registry("grids")

# the fields that identify a classifier row (statistics pair on them)
IDENTITY = ("dataset", "autoencoder", "space", "variant", "fold", "seed")


def grid_builder(grid: str | Callable[[StudySpec], list[Task]]) -> Callable[[StudySpec], list[Task]]:
    return GRIDS.get(grid) if isinstance(grid, str) else grid


def ae_training_mode(ae: AutoencoderEntry) -> str | None:
    """None (ready-made), "fold" (one AE per fold on its training part), "all" (one per dataset, every image)
    or "other" (one AE on ``train.data``, shared by every dataset)."""
    if ae.train is None:
        return None
    data = ae.train.data
    return "all" if data in (None, "all") else "fold" if data == "fold" else "other"


def _ae_train_key(spec: StudySpec, ae: AutoencoderEntry, dataset: str, fold: int | None) -> dict[str, Any] | None:
    """What defines a study-trained autoencoder (None for a ready-made one); see :func:`ae_training_mode`."""
    mode = ae_training_mode(ae)
    if mode is None:
        return None
    settings = ae.train.model_dump(mode="json")
    settings.pop("checkpoint_every")  # how often to save does not change the weights
    if mode == "all":
        settings["data"] = None  # `all` is the former default `null`: same autoencoder, same hash
    data = ae.train.data if mode == "other" else dataset
    key = {"autoencoder": ae.name, "label": ae.key, "train": settings, "data": data,
           "resize": resize_for(spec.cache.model_dump(mode="json"), data)}
    if mode == "fold":  # the fold's training part of the study's own splits
        key["fold"] = {"fold": fold, "k": spec.k, "split_seed": spec.split_seed, "val_fraction": spec.val_fraction}
    return key


def _cache_key(spec: StudySpec) -> dict[str, Any]:
    """The cache settings in a task's hash (identity-only views left out: hashes from before views stay valid)."""
    c = spec.cache.model_dump(mode="json")
    if c["views"] == ["identity"]:
        c.pop("views")
    return c


def _pair_key(spec: StudySpec, dataset: str, ae: AutoencoderEntry, fold: int | None) -> dict[str, Any]:
    key = {"dataset": dataset, "autoencoder": ae.key, "cache": _cache_key(spec)}
    if ae.key != ae.name or ae.train is not None:
        key["ae"] = ae.model_dump(mode="json")
        if ae_training_mode(ae) == "all":
            key["ae"]["train"]["data"] = None  # `all` is the former default `null`
    if (tk := _ae_train_key(spec, ae, dataset, fold)) is not None:
        key["ae_train"] = tk
    return key


def _cell_key(spec: StudySpec, ds: str, name: str, space: str, variant: str, fold: int, seed: int,
              settings_space: str) -> dict[str, Any]:
    """What defines a classifier cell before its inputs (cache, autoencoder, teacher, synthetic set) are added;
    ``settings_space``: whose ``space_train`` settings it trains with."""
    key = {"dataset": ds, "autoencoder": name, "space": space, "variant": variant, "fold": fold, "seed": seed,
           "k": spec.k, "split_seed": spec.split_seed, "val_fraction": spec.val_fraction,
           "train": {**spec.train, **spec.space_train.get(settings_space, {})}}
    if spec.cache.views != ["identity"]:  # every space reads the views the cache holds, image cells too
        key["views"] = spec.cache.views
    return key


def _cell_task(spec: StudySpec, key: dict[str, Any], needs: dict[str, str]) -> Task:
    """The ``classifier`` task of a cell key (hash, run folder, identity copied into its row, label)."""
    ident = tuple(key[f] for f in IDENTITY)
    ds, name, space, variant, fold, seed = ident
    h = "c" + stable_hash(key)
    return Task("classifier", h, {**key, "cache": spec.cache.model_dump(mode="json"), "device": spec.device}, needs,
                f"runs/{run_name(ds, name, space, variant, f'f{fold}', f's{seed}', hash=h)}", dict(zip(IDENTITY, ident)),
                f"{ds} {name} {space} {variant} fold {fold} seed {seed}")


@GRIDS.register("classification")
def classification_grid(spec: StudySpec) -> list[Task]:
    """Autoencoder trainings, then one ``prepare`` task per dataset x autoencoder, then the cells.

    Image cells need no autoencoder and are shared by all of them; non-plain variants are latent-space
    classifiers (the paper's ablation, Table 4); a distilled cell takes the recon cell of its fold and seed
    as its teacher when the grid has one (it runs after it).
    """
    ae_tasks: dict[str, Task] = {}
    prepares, cells_ = [], []
    uses_ae = ([s for s in spec.spaces if s != "image"] or any(v != "plain" for v in spec.variants)
               or spec.synth is not None)
    pair_of: dict[tuple[str, str, int | None], Task] = {}  # (dataset, ae, fold or None) -> its prepare task
    for ds in spec.datasets:
        for ae in spec.autoencoders if uses_ae else []:
            per_fold = ae_training_mode(ae) == "fold"
            for fold in spec.fold_ids if per_fold else [None]:
                needs, where = {}, "" if fold is None else f"-f{fold}"
                if (tk := _ae_train_key(spec, ae, ds, fold)) is not None:
                    h = "a" + stable_hash(tk)
                    on = f"{tk['data']}" + ("" if fold is None else f" fold {fold} training part")
                    ae_tasks.setdefault(h, Task(
                        "train-autoencoder", h, {**tk, "device": spec.device}, {},
                        f"autoencoders/{ae.key}{where}-{h[1:]}", {"autoencoder": ae.key, "data": tk["data"]},
                        f"train autoencoder {ae.key} on {on}"))
                    needs = {"autoencoder": h}
                key = _pair_key(spec, ds, ae, fold)
                h = "p" + stable_hash(key)
                cfg = {**key, "ae_name": ae.name, "device": spec.device,
                       "ae_in_sample": ae_training_mode(ae) == "all",
                       # report examples once per pair (the first fold's autoencoder when there is one per fold)
                       "examples": spec.examples if fold in (None, spec.fold_ids[0]) else 0}
                t = Task("prepare", h, cfg, needs, f"pairs/{run_name(ds, ae.key, None if fold is None else f'f{fold}', hash=h)}",
                         {"dataset": ds, "autoencoder": ae.key}, f"prepare {ds} x {ae.key}"
                         + ("" if fold is None else f" (fold {fold})"))
                prepares.append(t)
                pair_of[(ds, ae.key, fold)] = t
    combos = []
    for ds in spec.datasets:
        if "image" in spec.spaces:
            combos.append((ds, None, "image", "plain"))
            if spec.baseline_check:
                combos.append((ds, None, "image", "baseline"))
        for ae in spec.autoencoders:
            for space in ("recon", "latent"):
                if space in spec.spaces:
                    combos.append((ds, ae, space, "plain"))
            if spec.matched_control:  # the latent cell's own architecture on images and reconstructions
                combos += [(ds, ae, space, "matched") for space in ("image", "recon") if space in spec.spaces]
            for variant in spec.variants if spec.runs_variants(ds, ae.key) else []:
                if variant != "plain":
                    combos.append((ds, ae, "latent", variant))
    by_identity: dict[tuple, Task] = {}
    for ds, ae, space, variant in combos:
        for fold in spec.fold_ids:
            for seed in spec.seeds:
                name = IMAGE_AE if ae is None else ae.key
                # a matched cell trains with the latent space's settings (same model, same recipe)
                key = _cell_key(spec, ds, name, space, variant, fold, seed, "latent" if variant == "matched" else space)
                pair = None
                if ae is not None:  # recon / latent cells, and matched image cells (the latent grid sets the stem)
                    pair = pair_of.get((ds, name, fold)) or pair_of.get((ds, name, None))
                needs = {"pair": pair.hash} if pair else {}
                if ae is not None:
                    key["cache"] = _cache_key(spec)
                    if "ae" in pair.config:
                        key["ae"] = pair.config["ae"]
                if variant == "distilled" and (ds, name, "recon", "plain", fold, seed) in by_identity:
                    teacher = by_identity[(ds, name, "recon", "plain", fold, seed)]
                    key["teacher"] = teacher.hash  # the teacher's settings are part of the student's identity
                    needs["teacher"] = teacher.hash
                task = _cell_task(spec, key, needs)
                by_identity[(ds, name, space, variant, fold, seed)] = task
                cells_.append(task)
    return (list(ae_tasks.values()) + prepares + probe_tasks(spec, pair_of) + cells_
            + synth_tasks(spec, pair_of, by_identity) + seg_tasks(spec))


def probe_tasks(spec: StudySpec, pair_of: dict) -> list[Task]:
    """With ``probe`` in the spec: one ``probe`` task per prepare task (dataset x autoencoder, or x fold for an
    autoencoder trained per fold, whose probe then reads that fold only), on the pair's cache and the study's folds."""
    if not spec.probe:
        return []
    images = 64 if spec.probe is True else int(spec.probe)
    out = []
    for (ds, ae, fold), pair in pair_of.items():
        key = {"kind": "probe", "pair": pair.hash, "k": spec.k, "split_seed": spec.split_seed,
               "val_fraction": spec.val_fraction, "images": images, "fold": fold}
        h = "q" + stable_hash(key)
        out.append(Task("probe", h, {**key, "dataset": ds, "cache": spec.cache.model_dump(mode="json"),
                                     "device": spec.device}, {"pair": pair.hash},
                        f"probes/{run_name(ds, ae, None if fold is None else f'f{fold}', hash=h)}",
                        {"dataset": ds, "autoencoder": ae, "fold": fold}, f"probe {ds} x {ae}"
                        + ("" if fold is None else f" (fold {fold})")))
    return out


def _synth_eval_tasks(spec: StudySpec, ds: str, ae: AutoencoderEntry, fold: int, pair: Task, gen: str, syn: str,
                      by_identity: dict, tstr_syn: str | None = None) -> list[Task]:
    """Utility cells (``tstr`` / ``augmented`` classifier cells trained on the fold's synthetic dataset, tested on
    its real test part; the study's plain cells are the real arm) and one ``synth-eval`` task (fidelity, privacy).
    ``tstr_syn``: the synthetic set the tstr cells train on when it is not ``syn`` (see :func:`tstr_sample`)."""
    ev, out = spec.synth.evaluate, []
    for space in ev.utility_spaces:
        for variant in ev.utility:
            for seed in spec.seeds:
                use = tstr_syn if variant == "tstr" and tstr_syn else syn
                key = {**_cell_key(spec, ds, ae.key, space, variant, fold, seed, space), "synthetic": use,
                       "cache": _cache_key(spec)}
                needs = {"synthetic": use} | ({"pair": pair.hash} if space != "image" else {})
                out.append(_cell_task(spec, key, needs))
    if ev.fidelity:
        needs = {"synthetic": syn, "generator": gen, "pair": pair.hash}
        image_cell = by_identity.get((ds, IMAGE_AE, "image", "plain", fold, spec.seeds[0]))
        if image_cell is not None:  # its penultimate layer is a feature space (trained on the fold's real images)
            needs["classifier"] = image_cell.hash
        key = {"kind": "synth-eval", "needs": needs, "quantile": ev.copy_quantile, "k": spec.k,
               "split_seed": spec.split_seed, "val_fraction": spec.val_fraction}
        h = "e" + stable_hash(key)
        out.append(Task("synth-eval", h, {**key, "dataset": ds, "cache": spec.cache.model_dump(mode="json"),
                                          "device": spec.device}, needs,
                        f"synth-eval/{run_name(ds, ae.key, f'f{fold}', hash=h)}",
                        {"dataset": ds, "autoencoder": ae.key, "fold": fold}, f"evaluate synthetic {ds} x {ae.key} fold {fold}"))
    return out


def tstr_sample(spec: StudySpec) -> dict | None:
    """The sampling settings of a second synthetic set per fold for the tstr cells, or None when the main set
    serves. TSTR trains on synthetic images alone, so it needs every class; the fill plan samples nothing of the
    majority class. With fill, tstr gets a set sampled like the main one (same sampler, guidance, filter) with
    ratio 1: the class counts of the fold's real training part, so TSTR mirrors TRTR's training distribution."""
    syn = spec.synth
    if syn is None or syn.evaluate is None or "tstr" not in syn.evaluate.utility or not syn.sample.fill:
        return None
    from .spec import SynthSampleSettings

    return SynthSampleSettings(**{**syn.sample.model_dump(), "fill": False, "per_class": None, "ratio": 1.0}
                               ).model_dump(mode="json")


def synth_tasks(spec: StudySpec, pair_of: dict, by_identity: dict) -> list[Task]:
    """Per dataset x autoencoder x fold (``synth.on`` restricts them): a generator on the fold's training part
    (``synth-train``, needs the pair), then a synthetic dataset (``synth-sample``, needs the generator and, when
    asked, the fold's noise-conditioned latent cell as guide and its plain latent cell as filter; first seed)."""
    from ..errors import UserError

    if spec.synth is None:
        return []
    syn, out = spec.synth, []
    for ds in spec.datasets:
        if ds not in syn.on.get("datasets", [ds]):
            continue
        for ae in spec.autoencoders:
            if ae.key not in syn.on.get("autoencoders", [ae.key]):
                continue
            for fold in spec.fold_ids:
                pair = pair_of.get((ds, ae.key, fold)) or pair_of[(ds, ae.key, None)]
                key = {"dataset": ds, "autoencoder": ae.key, "fold": fold, "k": spec.k, "split_seed": spec.split_seed,
                       "val_fraction": spec.val_fraction, "cache": _cache_key(spec),
                       "train": syn.train.model_dump(mode="json")}
                if "ae" in pair.config:
                    key["ae"] = pair.config["ae"]
                g = "g" + stable_hash(key)
                identity = {"dataset": ds, "autoencoder": ae.key, "fold": fold}
                out.append(Task("synth-train", g, {**key, "cache": spec.cache.model_dump(mode="json"), "device": spec.device},
                                {"pair": pair.hash}, f"generators/{run_name(ds, ae.key, f'f{fold}', hash=g)}", identity,
                                f"train generator {ds} x {ae.key} fold {fold}"))
                needs, skey = {"generator": g}, {"generator": g, "sample": syn.sample.model_dump(mode="json")}
                for role, on, variant in (("guide", syn.sample.guide, "noise-conditioned"), ("filter", syn.sample.filter, "plain")):
                    if not on:
                        continue
                    cell = by_identity.get((ds, ae.key, "latent", variant, fold, spec.seeds[0]))
                    if cell is None:
                        raise UserError(f"synth.sample.{role} needs the {variant} latent cell of {ds} x {ae.key} fold "
                                        f"{fold}, which this grid does not train",
                                        "let variants_on include this dataset and autoencoder, or narrow synth.on")
                    needs[role] = skey[role] = cell.hash
                s = "s" + stable_hash(skey)
                out.append(Task("synth-sample", s, {"sample": syn.sample.model_dump(mode="json"), "device": spec.device},
                                needs, f"synthetic/{run_name(ds, ae.key, f'f{fold}', hash=s)}", identity,
                                f"sample synthetic {ds} x {ae.key} fold {fold}"))
                tstr_syn, tsample = None, tstr_sample(spec)
                if tsample is not None:  # every class for the synthetic-only (tstr) arm
                    tstr_syn = "s" + stable_hash({**skey, "sample": tsample})
                    out.append(Task("synth-sample", tstr_syn, {"sample": tsample, "device": spec.device}, needs,
                                    f"synthetic/{run_name(ds, ae.key, f'f{fold}', 'tstr', hash=tstr_syn)}",
                                    {**identity, "purpose": "tstr"}, f"sample tstr set {ds} x {ae.key} fold {fold}"))
                if syn.evaluate is not None:
                    out += _synth_eval_tasks(spec, ds, ae, fold, pair, g, s, by_identity, tstr_syn)
    return out


def seg_tasks(spec: StudySpec) -> list[Task]:
    """Per segmentation dataset x fold x method: the U-Net baseline (``seg-unet``) and the diffusion segmenters
    (``seg-diffusion``, latent or pixel target) on the same grouped folds; no inputs from other tasks."""
    if spec.seg is None:
        return []
    seg, out = spec.seg, []
    for ds in seg.datasets:
        for fold in seg.fold_ids:
            for method in seg.methods:
                kind = "seg-unet" if method == "unet" else "seg-diffusion"
                key = {"kind": kind, "dataset": ds, "fold": fold, "k": seg.k, "split_seed": seg.split_seed,
                       "resize": seg.resize, "settings": seg.unet if method == "unet" else seg.segmenter}
                if method != "unet":
                    key["space"] = method
                h = "m" + stable_hash(key)
                out.append(Task(kind, h, {**key, "device": spec.device}, {},
                                f"seg/{run_name(ds, method, f'f{fold}', hash=h)}",
                                {"dataset": ds, "method": method, "fold": fold}, f"segment {ds} {method} fold {fold}"))
    return out
