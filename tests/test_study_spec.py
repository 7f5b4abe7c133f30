"""Study spec validation: every error is one line naming the file and the field."""

from __future__ import annotations

import pytest

from latentgap.errors import UserError
from latentgap.study import classification_grid, load_preset, load_spec, preset_names, spec_from_dict, with_overrides

BASE = dict(name="t", datasets=["phantom:n=50,size=16"], autoencoders=["kl-builtin"], k=3)


def expand_grid(spec):
    """(preparation tasks, classifier cells) of the classification grid."""
    tasks = classification_grid(spec)
    return [t for t in tasks if t.kind != "classifier"], [t for t in tasks if t.kind == "classifier"]


def _err(data, source="study.yaml") -> str:
    with pytest.raises(UserError) as e:
        spec_from_dict(data, source)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("patch, expect", [
    ({"datasets": ["phantom", "foo"]}, "study.yaml: datasets[1]: unknown dataset 'foo'"),
    ({"autoencoders": ["nope"]}, "study.yaml: autoencoders[0]: unknown autoencoder 'nope'"),
    ({"spaces": ["image", "pixels"]}, "study.yaml: spaces[1]:"),
    ({"variants": ["plain", "fancy"]}, "study.yaml: variants[1]:"),
    ({"k": 1}, "study.yaml: k:"),
    ({"folds": [0, 3]}, "study.yaml: folds: fold 3 is outside 0..2"),
    ({"executor": {"kind": "cloud"}}, "study.yaml: executor.kind:"),
    ({"executor": {"slurm": {"time_min": 1}}}, "study.yaml: executor.slurm.time_min:"),
    ({"colour": "red"}, "study.yaml: colour: unknown field"),
    ({"autoencoders": []}, "study.yaml: autoencoders: recon/latent spaces"),
    ({"seeds": [0, 0]}, "study.yaml: seeds: contains duplicates"),
    ({"train": {"fold": 2}}, "study.yaml: train.fold: is set by the grid"),
    ({"variants_on": {"autoencoders": ["taef2"]}}, "study.yaml: variants_on.autoencoders: 'taef2' is not one of"),
])
def test_errors_name_the_field(patch, expect):
    assert _err({**BASE, **patch}).startswith(expect)


def test_yaml_file_errors(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(UserError, match="s.yaml: line"):
        load_spec(p)
    with pytest.raises(UserError, match="not found"):
        load_spec(tmp_path / "missing.yaml")
    p.write_text("- a\n- b\n")
    with pytest.raises(UserError, match="top level"):
        load_spec(p)


def test_presets_load_and_expand():
    assert {"demo", "shared-data", "paper"} <= set(preset_names())
    demo = load_preset("demo")
    prep, cells = expand_grid(demo)
    # the demo trains its autoencoder first (one training task), then builds one cache
    # 3 spaces x 3 folds, plus the image-space baseline check on each fold
    assert [t.kind for t in prep] == ["train-autoencoder", "prepare"] and len(cells) == 3 * 3 + 3
    assert sum(t.config["variant"] == "baseline" and t.config["space"] == "image" for t in cells) == 3
    assert demo.autoencoders[0].train is not None and demo.autoencoders[0].key == "kl-builtin"
    shared = load_preset("shared-data")
    prep, cells = expand_grid(shared)
    # TAEF2 on four datasets: one cache each (two views), then 3 spaces + the baseline check + the matched
    # image and reconstruction cells x 3 folds; one probe per pair on its cache
    assert [t.kind for t in prep] == ["prepare"] * 4 + ["probe"] * 4 and len(cells) == 4 * (4 + 2) * 3
    assert shared.cache.views == ["identity", "hflip"] and shared.train["until"] == "converged"
    assert all(t.config["views"] == ["identity", "hflip"] for t in cells if t.config["space"] == "image")
    val = load_preset("probe-validation")
    prep, cells = expand_grid(val)
    kinds = [t.kind for t in prep]
    # 3 phantoms x 3 built-in autoencoders trained per fold (+ TAEF2 once): 27 trainings, 30 caches, a probe on each
    assert kinds.count("train-autoencoder") == 27 and kinds.count("prepare") == kinds.count("probe") == 30
    assert len({(t.identity["dataset"], t.identity["autoencoder"]) for t in prep if t.kind == "probe"}) == 12
    assert len(cells) == 3 * 3 + 12 * 2 * 3  # image cells shared per dataset; RS and LS per pair x 3 folds
    syn = load_preset("synth-isic")
    prep, cells = expand_grid(syn)
    kinds = [t.kind for t in prep]
    assert kinds.count("synth-train") == kinds.count("synth-eval") == 3
    # the fill plan samples nothing of the majority class, so the synthetic-only (tstr) arm gets its own set per
    # fold, sampled alike with ratio 1; the augmented arm keeps the filled set
    samples = [t for t in prep if t.kind == "synth-sample"]
    main_sets = {t.hash for t in samples if "purpose" not in t.identity}
    tstr_sets = {t.hash: t for t in samples if t.identity.get("purpose") == "tstr"}
    assert len(main_sets) == len(tstr_sets) == 3
    assert all(t.config["sample"]["ratio"] == 1.0 and not t.config["sample"]["fill"] and t.config["sample"]["filter"]
               for t in tstr_sets.values())
    assert sum(t.config["variant"] in ("tstr", "augmented") for t in cells) == 2 * 3
    assert all(t.needs["synthetic"] in tstr_sets for t in cells if t.config["variant"] == "tstr")
    assert all(t.needs["synthetic"] in main_sets for t in cells if t.config["variant"] == "augmented")
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        load_preset("nope")


def test_views_enter_the_hashes_of_every_space():
    """Views change what every cell sees: image cells too (they read the same views), and identity-only views
    leave the hashes of studies from before views unchanged (the key is absent)."""
    with_views = expand_grid(spec_from_dict(BASE))  # default views: identity + hflip
    plain = expand_grid(spec_from_dict({**BASE, "cache": {"views": ["identity"]}}))
    a = {t.label: t.hash for t in with_views[0] + with_views[1]}
    b = {t.label: t.hash for t in plain[0] + plain[1]}
    assert a.keys() == b.keys() and all(a[k] != b[k] for k in a)
    assert all("views" not in t.config.get("cache", {}) or t.config["cache"]["views"] == ["identity"] for t in plain[1])
    with pytest.raises(UserError, match=r"cache.views: .*unknown view 'mirror'"):
        spec_from_dict({**BASE, "cache": {"views": ["identity", "mirror"]}})
    with pytest.raises(UserError, match=r"train.views: is set by cache.views"):
        spec_from_dict({**BASE, "train": {"views": ["identity"]}})


def test_grid_hashes_are_stable_and_distinct():
    s = spec_from_dict({**BASE, "seeds": [0, 1], "variants": ["plain", "noise-conditioned"]})
    prep, cells = expand_grid(s)
    hashes = [t.hash for t in prep + cells]
    assert len(set(hashes)) == len(hashes)
    assert [t.hash for t in expand_grid(s)[1]] == [t.hash for t in cells]
    # image cells: one per fold x seed, shared by autoencoders; variants only in latent space
    assert sum(t.config["space"] == "image" for t in cells) == 3 * 2 * 2  # the study recipe and the baseline check
    assert {t.config["space"] for t in cells if t.config["variant"] not in ("plain", "baseline")} == {"latent"}
    # executor settings do not change what a cell computes, training settings do
    s2 = with_overrides(s, kind="slurm", partition="gpu", workers=3)
    assert s2.executor.kind == "slurm" and s2.executor.slurm.partition == "gpu"
    assert [t.hash for t in expand_grid(s2)[1]] == [t.hash for t in cells]
    s3 = spec_from_dict({**BASE, "seeds": [0, 1], "variants": ["plain", "noise-conditioned"], "train": {"epochs": 3}})
    assert not set(t.hash for t in expand_grid(s3)[1]) & set(t.hash for t in cells)
    # variants_on restricts the non-plain variants to a sub-grid
    s5 = spec_from_dict({**BASE, "datasets": ["phantom:n=50,size=16", "phantom:n=60,size=16"],
                         "variants": ["plain", "distilled"], "variants_on": {"datasets": ["phantom:n=60,size=16"]}})
    variant_ds = {t.config["dataset"] for t in expand_grid(s5)[1] if t.config["variant"] == "distilled"}
    assert variant_ds == {"phantom:n=60,size=16"}
    # per-space settings reach only that space's cells
    s4 = spec_from_dict({**BASE, "space_train": {"latent": {"model": "convnext_atto"}}})
    models = {t.config["space"]: t.config["train"].get("model") for t in expand_grid(s4)[1]}
    assert models == {"image": None, "recon": None, "latent": "convnext_atto"}


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    from latentgap.cli import main

    p = tmp_path / "study.yaml"
    p.write_text("name: x\ndatasets: [phantom, foo]\nautoencoders: [kl-builtin]\n")
    with pytest.raises(SystemExit) as e:
        main(["study", str(p), "--dry-run"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: study.yaml: datasets[1]: unknown dataset 'foo'") and "\n" not in err


def test_training_settings_checked_against_trainconfig():
    from latentgap.study.spec import check_train_fields

    with pytest.raises(UserError, match=r"^study spec: train.epochz: unknown training setting"):
        check_train_fields(spec_from_dict({**BASE, "train": {"epochz": 3}}))
    with pytest.raises(UserError, match=r"^study spec: train.epochs: .*'many'"):
        check_train_fields(spec_from_dict({**BASE, "train": {"epochs": "many"}}))
    for name in preset_names():
        check_train_fields(load_preset(name))  # every preset's settings are valid TrainConfig fields


def test_autoencoder_entries_names_and_trained():
    s = spec_from_dict({**BASE, "autoencoders": ["taef2", {"name": "kl-builtin", "train": {"steps": 5}},
                                                 {"name": "kl-builtin", "label": "kl-wide", "train": {"width": 16}}]})
    assert [e.key for e in s.autoencoders] == ["taef2", "kl-builtin", "kl-wide"]
    dumped = s.model_dump(mode="json")["autoencoders"]
    assert dumped[0] == "taef2" and dumped[1]["train"]["steps"] == 5  # a bare name stays a bare name
    assert spec_from_dict(s.model_dump(mode="json")) == s  # study.yaml round-trips
    for patch, expect in [
        ({"autoencoders": [{"name": "taef2", "train": {"steps": 5}}]},
         "study.yaml: autoencoders[0].train: the study trains only the built-in 'kl-builtin'"),
        ({"autoencoders": [{"name": "kl-builtin", "train": {"stepz": 5}}]},
         "study.yaml: autoencoders[0].train.stepz: unknown field"),
        ({"autoencoders": [{"name": "kl-builtin", "train": {"width": 12}}]},
         "study.yaml: autoencoders[0].train.width:"),
        ({"autoencoders": ["kl-builtin", {"name": "kl-builtin", "train": {}}]},
         "study.yaml: autoencoders: contains duplicates"),
    ]:
        assert _err({**BASE, **patch}).startswith(expect), patch


def test_trained_autoencoder_tasks_and_dependencies():
    from latentgap.study.runner import select_only, waves

    trained = {"name": "kl-builtin", "train": {"steps": 5}}
    s = spec_from_dict({**BASE, "datasets": ["phantom:n=50,size=16", "phantom:n=60,size=16"],
                        "autoencoders": ["taef2", trained], "variants": ["plain", "distilled"]})
    prep, cells = expand_grid(s)
    ae_tasks = [t for t in prep if t.kind == "train-autoencoder"]
    # the default `data: fold`: one autoencoder per dataset x fold, on that fold's training part
    assert len(ae_tasks) == 2 * 3 and {t.config["data"] for t in ae_tasks} == set(s.datasets)
    assert sorted((t.config["data"], t.config["fold"]["fold"]) for t in ae_tasks) == \
        sorted((d, f) for d in s.datasets for f in range(3))
    by_hash = {t.hash: t for t in prep + cells}
    for p in prep:
        if p.kind == "prepare":
            assert ("autoencoder" not in p.needs) == (p.config["autoencoder"] == "taef2")
            assert all(n in {t.hash for t in ae_tasks} for n in p.needs.values())
    for c in cells:  # a kl-builtin cell reads the cache of its own fold's autoencoder
        if c.config["autoencoder"] == "kl-builtin":
            pair = by_hash[c.needs["pair"]]
            assert by_hash[pair.needs["autoencoder"]].config["fold"]["fold"] == c.config["fold"]
    # `data: all` (the former default `null`): one autoencoder per dataset on every image, same hashes as null
    every = [{"name": "kl-builtin", "train": {"steps": 5, "data": d}} for d in ("all", None)]
    grids = [expand_grid(spec_from_dict({**BASE, "autoencoders": [e]})) for e in every]
    assert [t.hash for t in grids[0][0] + grids[0][1]] == [t.hash for t in grids[1][0] + grids[1][1]]
    assert sum(t.kind == "train-autoencoder" for t in grids[0][0]) == 1
    # a shared training set gives one autoencoder for every dataset
    shared = spec_from_dict({**BASE, "datasets": ["phantom:n=50,size=16", "phantom:n=60,size=16"],
                             "autoencoders": [{"name": "kl-builtin", "train": {"steps": 5, "data": "phantom:n=40,size=16,seed=1"}}]})
    assert sum(t.kind == "train-autoencoder" for t in expand_grid(shared)[0]) == 1
    # distilled cells are taught by the recon cell of their fold and seed, and run after it
    dist = [t for t in cells if t.config["variant"] == "distilled"]
    assert len(dist) == 2 * 2 * 3
    for t in dist:
        teacher = by_hash[t.needs["teacher"]]
        assert teacher.config["space"] == "recon" and t.needs["pair"].startswith("p")
        assert all(teacher.config[k] == t.config[k] for k in ("dataset", "autoencoder", "fold", "seed"))
    levels = {t.hash: i for i, w in enumerate(waves(prep + cells)) for t in w}
    for t in prep + cells:
        assert all(levels[n] < levels[t.hash] for n in t.needs.values())
    assert max(levels.values()) == 3  # autoencoder -> cache -> cells -> distilled cells
    # --only pulls in everything a task needs (teacher, cache, autoencoder training)
    kl_student = next(t for t in dist if t.config["autoencoder"] == "kl-builtin")
    sel = select_only(prep + cells, [kl_student.hash])
    assert sorted(t.kind for t in sel) == ["classifier", "classifier", "prepare", "train-autoencoder"]
    # training settings of the autoencoder change the identity of its cache and cells, not of image cells
    s2 = spec_from_dict({**BASE, "datasets": ["phantom:n=50,size=16", "phantom:n=60,size=16"],
                         "autoencoders": ["taef2", {"name": "kl-builtin", "train": {"steps": 6}}],
                         "variants": ["plain", "distilled"]})
    changed = {t.hash for t in expand_grid(s2)[1]} ^ {t.hash for t in cells}
    assert len(changed) == 2 * (2 * 3 * 3) and all(h not in {t.hash for t in cells if t.config["space"] == "image"}
                                                       for h in changed)


def test_untrained_builtin_autoencoder_is_refused_for_real_studies(tmp_path):
    from latentgap.study import run_study

    with pytest.raises(UserError, match=r"autoencoders\[0\]: 'kl-builtin' without train settings"):
        run_study(spec_from_dict(BASE), tmp_path, dry_run=True)
    trained = spec_from_dict({**BASE, "autoencoders": [{"name": "kl-builtin", "train": {"steps": 5}}]})
    assert "3 autoencoder trainings, 3 cache/fidelity tasks, 12 cells" in run_study(trained, tmp_path, dry_run=True)
