"""Architecture checks: no import cycles between modules (function-level imports included), a stage kind is
one registered function plus a grid builder, and trained classifiers load back with their input transform."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import latentgap

PKG = Path(latentgap.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _reexports(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """package -> {name: submodule it re-exports the name from} (``from .config import TrainConfig``)."""
    out: dict[str, dict[str, str]] = {}
    for mod, path in modules.items():
        if path.name != "__init__.py":
            continue
        out[mod] = {}
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports are not re-exports
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                for a in node.names:
                    out[mod][a.asname or a.name] = f"{mod}.{node.module}"
    return out


def _import_graph() -> dict[str, set[str]]:
    """module -> latentgap modules it imports anywhere in its body, function-level imports included. A name
    imported from a package counts as an import of the submodule the package re-exports it from."""
    modules = {_module_name(p): p for p in PKG.rglob("*.py")}
    reexports = _reexports(modules)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [reexports.get(stem, {}).get(a.name, f"{stem}.{a.name}") for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                # the most specific latentgap module the import names (``from .x import y``: y may be a module)
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_between_modules():
    graph = _import_graph()
    assert "latentgap.train.build" in graph["latentgap.train.hpo"]  # the graph sees real edges
    assert "latentgap.train.config" in graph["latentgap.study.spec"]  # via the package's re-export
    assert _cycles(graph) == [], "modules import each other (also via function-level imports)"


def test_cycle_detector_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_a_new_stage_kind_is_one_registered_function_and_a_grid_builder(tmp_path):
    """Register a kind from the tests, build a two-stage grid by hand, run it: rows flow downstream."""
    from latentgap.study import Task, register_task, run_study, spec_from_dict

    @register_task("test-square", row_kind="toy")
    def square(cfg, run_dir, inputs):
        return {"value": cfg["x"] ** 2}

    @register_task("test-sum", row_kind="toy")
    def total(cfg, run_dir, inputs):
        return {"value": sum(row["value"] for row in inputs.values()), "from": sorted(inputs)}

    def grid(spec):
        squares = [Task("test-square", f"q{x}", {"x": x}, {}, f"sq/{x}", {"x": x}, f"square {x}") for x in (1, 2, 3)]
        return squares + [Task("test-sum", "s0", {}, {f"in{i}": t.hash for i, t in enumerate(squares)}, "sum", {},
                               "sum of squares")]

    spec = spec_from_dict({"name": "toy-stage", "datasets": ["phantom"], "spaces": ["image"]})
    s = run_study(spec, tmp_path, grid=grid, echo=lambda *_: None)
    assert s.ok and s.ran == 4
    row = json.loads((tmp_path / "rows" / "s0.json").read_text())
    assert row["value"] == 1 + 4 + 9 and row["kind"] == "toy" and row["task_kind"] == "test-sum"


def test_load_run_rebuilds_the_model_and_its_latent_normalisation(tmp_path, one_thread):
    """A latent-space run loads back: same test probabilities from raw cache latents as the run saved."""
    import numpy as np

    from latentgap.data import open_dataset
    from latentgap.latents import ensure_cache
    from latentgap.autoencoders import create_autoencoder
    from latentgap.train import TrainConfig, TrainInputs, load_run, run_training
    from latentgap.train.run import open_splits

    root = tmp_path / "root"
    ds = open_dataset("phantom:n=90,size=16,classes=3,imbalance=2")
    torch.manual_seed(0)
    cache = ensure_cache(ds, create_autoencoder("kl-builtin", device="cpu"), root, dtype="float32", progress=False)
    cfg = TrainConfig(dataset="phantom:n=90,size=16,classes=3,imbalance=2", space="latent", autoencoder="kl-builtin",
                      k=3, epochs=2, batch_size=16, model="convnext_atto", root=str(root), device="cpu",
                      precise_bn_batches=0).resolved()
    splits = open_splits(cfg, ds, root)
    row = run_training(cfg, tmp_path / "run", TrainInputs(ds, splits, cache, root))  # ready inputs: no AE load
    run = load_run(tmp_path / "run")
    assert run.inputs["space"] == "latent" and run.config.model == "convnext_atto" and run.result == row
    assert row["split_seed"] == 0  # split repeats are told apart in the statistics by it
    test = np.asarray(splits.folds[0].test)
    z = torch.from_numpy(np.asarray(cache.latents[test], dtype=np.float32))  # raw, un-normalised latents
    mean, std = cache.fold_stats(splits, 0)
    assert np.allclose(run.inputs["normalisation"]["mean"], mean, atol=1e-6)
    probs = run.predict_proba(z).numpy()
    assert np.allclose(probs, np.load(tmp_path / "run" / "test_probs.npy"), atol=1e-5)
    assert torch.allclose(run.transform.inverse(run.transform(z)), z, atol=1e-5)


def test_load_run_refuses_a_folder_that_is_not_a_run(tmp_path):
    from latentgap.errors import UserError
    from latentgap.train import load_run

    with pytest.raises(UserError, match="not a loadable classifier run"):
        load_run(tmp_path)
