"""Start-up cost of one latent study cell with a FLUX.2-sized autoencoder, side by side for source trees.

A study's latent/recon *cell* needs the latent cache folder of its dataset x autoencoder pair. In the
"before" code (HEAD at the time of writing) the cell finds that folder by re-creating the autoencoder and
re-hashing its weights (``ensure_cache`` -> ``create_autoencoder`` -> ``from_pretrained`` + sha256); the
refactor takes the folder from the prepare task's row instead. This script measures what a cell costs
outside its training epochs, for each ``--tree`` (a source checkout run with ``PYTHONPATH=<tree>/src``).

What it does:

1. Once per ``--work`` folder: a ``diffusers.AutoencoderKLFlux2`` with its *default* (full-size) config and
   seeded random weights (``torch.manual_seed(0)``), written with ``save_pretrained`` (one ~330 MB
   safetensors file; 32 latent channels at x8, 128 channels at x16 after the FLUX.2 2x2 patchify).
2. Per tree (label = the folder's name), in a fresh study folder: a one-cell study spec (one phantom
   dataset, that autoencoder as a local path, space latent, k 3, fold 0, 1 epoch, ConvNeXt-atto, batch 32,
   device cpu, local executor with 1 worker = the cell runs in the ``latentgap study`` process). Hashes
   come from ``--dry-run``. The prepare task runs first (untimed: the cache build is not measured), then
   one untimed warm-up cell run (creates splits.json, fills the page cache / .pyc files).
3. ``--repeats`` rounds; in each round every tree in the order given (ABAB...): delete the cell's row,
   failed file, claim and run folder (the cache stays), then run
   ``latentgap study SPEC --out DIR --only <cell hash> --no-report`` in a fresh subprocess.

   The subprocess is this script's ``--_child`` mode: it installs timers around the autoencoder factory,
   then calls ``latentgap.cli.main`` in-process -- exactly what the ``latentgap`` console script does
   (``from latentgap.cli import main; main()``). The timers are installed by a post-import hook when the
   tree itself imports ``latentgap.autoencoders.*``: nothing is imported on the tree's behalf, so a tree
   whose cell never touches the autoencoder code is not charged for importing it. Wrapped (when present):
   ``autoencoders.factory.create_autoencoder`` (= ``latentgap.autoencoders.create_autoencoder``),
   ``autoencoders.hub.from_pretrained`` (diffusers weight loading) and ``autoencoders.base.weights_sha256``
   (weight hashing); calls made through any later ``from ... import`` binding are counted too.
4. After the rounds, ``--profile-runs`` more cell runs per tree under ``cProfile`` (the whole
   ``latentgap.cli.main`` call including the import of ``latentgap.cli``); the ``.prof`` files are kept in
   the work folder and the record gets the cumulative seconds of the main stages.

Per run the record holds: the subprocess wall time, the cell row's ``task_seconds`` and ``train_seconds``,
``task - train`` (start-up + test overhead outside the training epochs), ``wall - task`` (interpreter,
imports, spec checks and the summary outside the task), the seconds of ``from latentgap.cli import main``
(torch etc. are imported lazily later, inside the task), and autoencoder factory calls (count, seconds, which spec) with the
``from_pretrained`` / sha256 parts. Medians per tree and the ratio first-tree / other-tree of each median.

    python benchmarks/cell_startup.py --tree /work/wt-before                      # "before" only
    python benchmarks/cell_startup.py --tree /work/wt-before --tree /work/main    # before vs after, ABAB

The script itself imports only the standard library (it must not import torch or latentgap from any
tree); it lowers its own priority with ``os.nice(--nice)`` (children inherit). Records go to
``benchmarks/cell_startup/record-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "cell_startup"
DATASET = "phantom:n=120,size=64,classes=3,imbalance=5,feature=intensity"
AE_DIRNAME = "flux2-default-random"
_CHILD_T0 = time.perf_counter()  # first thing measured in a --_child process (after interpreter start-up)


# =============================================================================== child side (runs in a tree)

_STATS: dict[str, dict] = {}

# module -> attributes to time (only those that exist in the tree are wrapped)
_WATCH = {
    "latentgap.autoencoders.factory": ("create_autoencoder",),
    "latentgap.autoencoders.hub": ("from_pretrained", "describe_weights"),
    "latentgap.autoencoders.base": ("weights_sha256",),
}


def _timed(key: str, fn):
    st = _STATS.setdefault(key, {"count": 0, "seconds": 0.0, "calls": []})

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            st["count"] += 1
            st["seconds"] += dt
            what = args[0] if args else next(iter(kwargs.values()), None)
            st["calls"].append({"at_s": round(t0 - _CHILD_T0, 3), "seconds": round(dt, 4),
                                "arg": (what if isinstance(what, str) else type(what).__name__)[:200]})

    wrapper.__cell_startup_wrapped__ = True
    return wrapper


def _patch_module(module) -> None:
    for attr in _WATCH.get(module.__name__, ()):
        fn = getattr(module, attr, None)
        if callable(fn) and not getattr(fn, "__cell_startup_wrapped__", False):
            setattr(module, attr, _timed(f"{module.__name__.rsplit('.', 1)[-1]}.{attr}", fn))


# packages whose import time is measured: outermost exec_module of any of their modules (inclusive of
# nested imports of the same package; a lazy sub-import triggered later is a new outermost call)
_IMPORT_ROOTS = ("torch", "diffusers", "timm")
_IMPORT_DEPTH = {r: 0 for r in _IMPORT_ROOTS}


class _PostImportHook:
    """A meta-path finder that lets the normal finders locate a module, then (a) wraps the functions of
    ``_WATCH`` right after the module body ran (before anyone can ``from module import fn``) and (b) times
    the import of ``_IMPORT_ROOTS`` packages. It never imports anything itself."""

    def find_spec(self, name, path, target=None):
        root = name.partition(".")[0]
        if name not in _WATCH and root not in _IMPORT_DEPTH:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module):
            timed = root in _IMPORT_DEPTH and _IMPORT_DEPTH[root] == 0
            if root in _IMPORT_DEPTH:
                _IMPORT_DEPTH[root] += 1
            t0 = time.perf_counter()
            try:
                original(module)
            finally:
                if root in _IMPORT_DEPTH:
                    _IMPORT_DEPTH[root] -= 1
                if timed:
                    st = _STATS.setdefault(f"import.{root}", {"count": 0, "seconds": 0.0, "calls": []})
                    st["count"] += 1
                    st["seconds"] += time.perf_counter() - t0
            _patch_module(module)

        loader.exec_module = exec_module
        return spec


def child_main(result_path: str, profile_path: str | None, argv: list[str]) -> int:
    """Run ``latentgap <argv>`` in this process with the timers installed; write a JSON result."""
    sys.meta_path.insert(0, _PostImportHook())
    out: dict = {"argv": ["latentgap", *argv], "exit_code": 0}
    t_import = t_main = None

    def run() -> None:
        nonlocal t_import, t_main
        t = time.perf_counter()
        from latentgap.cli import main  # what the console script does
        t_import = time.perf_counter() - t
        t = time.perf_counter()
        try:
            main(argv)
        finally:
            t_main = time.perf_counter() - t

    try:
        if profile_path:
            import cProfile
            prof = cProfile.Profile()
            try:
                prof.runcall(run)
            finally:
                prof.dump_stats(profile_path)
        else:
            run()
    except SystemExit as e:
        out["exit_code"] = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - recorded, then re-raised as an exit code
        out["exit_code"] = 1
        out["error"] = f"{type(e).__name__}: {e}"[:500]
    import latentgap
    out.update({
        "latentgap_file": latentgap.__file__,
        "cli_import_s": None if t_import is None else round(t_import, 4),
        "cli_main_s": None if t_main is None else round(t_main, 4),
        "child_total_s": round(time.perf_counter() - _CHILD_T0, 4),
        "diffusers_imported": "diffusers" in sys.modules,
        "torch_imported": "torch" in sys.modules,
        "hooks_installed": sorted(_STATS),
        "stats": _STATS,
    })
    if "torch" in sys.modules:
        out["torch_threads"] = sys.modules["torch"].get_num_threads()
    Path(result_path).write_text(json.dumps(out, indent=1))
    return int(out["exit_code"] or 0)


def make_ae_main(folder: str) -> int:
    """Write the FLUX.2-sized autoencoder (default config, seeded random weights) with save_pretrained."""
    import torch
    import diffusers
    from diffusers import AutoencoderKLFlux2

    target = Path(folder)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    vae = AutoencoderKLFlux2()  # the default config: FLUX.2's VAE architecture
    vae.save_pretrained(str(tmp), safe_serialization=True)
    cfg = dict(vae.config)
    meta = {"class": "AutoencoderKLFlux2", "config": "diffusers default (AutoencoderKLFlux2())",
            "seed": 0, "n_params": int(sum(p.numel() for p in vae.parameters())),
            "latent_channels": cfg["latent_channels"], "block_out_channels": list(cfg["block_out_channels"]),
            "downsample": 2 ** (len(cfg["block_out_channels"]) - 1), "patch_size": list(cfg["patch_size"]),
            "files": {p.name: p.stat().st_size for p in sorted(tmp.iterdir())},
            "diffusers": diffusers.__version__, "torch": torch.__version__,
            "build_seconds": round(time.perf_counter() - t0, 2)}
    target.with_name(target.name + ".json").write_text(json.dumps(meta, indent=1))  # beside, not inside
    tmp.rename(target)
    print(json.dumps(meta))
    return 0


# =============================================================================== parent side (stdlib only)

def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info() -> dict:
    cpu = _read("/proc/cpuinfo")
    models = re.findall(r"^model name\s*:\s*(.+)$", cpu, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    return {"cpu_model": models[0].strip() if models else platform.processor() or "unknown",
            "logical_cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "mem_total_gb": round(int(mem.group(1)) / 2**20, 1) if mem else None,
            "kernel": platform.release()}


def loadavg() -> list[float]:
    return [float(x) for x in _read("/proc/loadavg").split()[:3]]


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "python_executable": sys.executable}
    for pkg in ("torch", "diffusers", "timm", "safetensors", "accelerate", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def tree_git(tree: Path) -> dict:
    def git(*args: str) -> str:
        r = subprocess.run(["git", "--no-optional-locks", "-C", str(tree), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    head = git("rev-parse", "HEAD")
    dirty = [ln for ln in git("status", "--porcelain", "--untracked-files=no").splitlines() if ln.strip()]
    return {"head": head or None, "head_subject": git("log", "-1", "--format=%s") or None,
            "modified_tracked_files": len(dirty)}


def tree_env(tree: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree / "src")
    env["HF_HUB_OFFLINE"] = "1"  # local folders only; no hub retries on an offline machine
    env.pop("COLUMNS", None)
    return env


def latentgap_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("latentgap")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("latentgap")
    if found:
        return [found]
    return [sys.executable, "-m", "latentgap.cli"]


def run_logged(cmd: list[str], env: dict, log: Path) -> tuple[int, float]:
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - t0


def tail(path: Path, n: int = 15) -> str:
    return "\n".join(_read(str(path)).splitlines()[-n:])


def ensure_autoencoder(work: Path, tree: Path) -> dict:
    folder = work / AE_DIRNAME
    if not (folder / "config.json").is_file() or not folder.with_name(folder.name + ".json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"creating the FLUX.2-sized autoencoder in {folder} (once) ...", flush=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_make-ae", str(folder)]
        rc, secs = run_logged(cmd, tree_env(tree), work / "logs" / "make-ae.log")
        if rc != 0:
            sys.exit(f"error: creating the autoencoder failed (rc {rc}); see {work / 'logs' / 'make-ae.log'}:\n"
                     + tail(work / "logs" / "make-ae.log"))
    return json.loads(folder.with_name(folder.name + ".json").read_text())


def write_spec(path: Path, ae_dir: Path, args) -> None:
    # Plain YAML written by hand (no yaml module in the parent): every value is a simple scalar or list.
    text = f"""\
name: cell-startup
description: one latent cell with a FLUX.2-sized autoencoder (benchmarks/cell_startup.py)
datasets:
  - "{args.dataset}"
autoencoders:
  - "{ae_dir}"
spaces: [latent]
variants: [plain]
k: {args.k}
folds: [0]
seeds: [0]
train:
  epochs: {args.epochs}
  batch_size: {args.batch_size}
  pretrained: "false"
  model: {args.model}
cache:
  batch_size: 16
executor:
  kind: local
  workers: 1
device: cpu
examples: 6
"""
    path.write_text(text)


_HASH_LINE = re.compile(r"^([acp][0-9a-f]{6,})\s+(done|failed|pending)\s+(.*)$")


def dry_run_hashes(tree: Path, spec: Path, study: Path, log: Path) -> dict:
    cmd = latentgap_cmd() + ["study", str(spec), "--out", str(study), "--dry-run"]
    rc, _ = run_logged(cmd, tree_env(tree), log)
    if rc != 0:
        sys.exit(f"error: dry run failed for {tree} (rc {rc}); see {log}:\n{tail(log)}")
    tasks = [m.groups() for ln in _read(str(log)).splitlines() if (m := _HASH_LINE.match(ln.strip()))]
    prep = [t for t in tasks if t[0].startswith("p")]
    cells = [t for t in tasks if t[0].startswith("c")]
    if len(prep) != 1 or len(cells) != 1:
        sys.exit(f"error: expected 1 prepare task and 1 cell in the dry run of {tree}, got {tasks}; see {log}")
    return {"prepare": prep[0][0], "cell": cells[0][0], "cell_label": cells[0][2]}


def reset_cell(study: Path, cell: str) -> None:
    """Make the cell run again: delete its row, failure record, claim and run folder (the cache stays).

    The run folder is ``runs/<hash>/`` in the before code and ``runs/<readable name>-<hash>/`` after the
    task-graph refactor (the row's ``run_dir``); both are removed. A run folder left behind would make
    ``run_training`` return its finished result without training, so leftovers are an error."""
    row = study / "rows" / f"{cell}.json"
    folders = [study / "runs" / cell, *(study / "runs").glob(f"*-{cell}")]
    if row.exists():
        rd = json.loads(row.read_text()).get("run_dir")
        if rd:
            folders.append(study / rd)
    for p in (row, study / "failed" / f"{cell}.json", study / "claims" / f"{cell}.json"):
        p.unlink(missing_ok=True)
    for f in folders:
        shutil.rmtree(f, ignore_errors=True)
    left = [str(p) for p in (study / "runs").glob(f"*{cell}*")]
    if left:
        sys.exit(f"error: could not reset cell {cell}: {left} still exist")


def run_cell(t: dict, tag: str, work: Path, profile: bool = False) -> dict:
    """One cell run in a fresh subprocess (this script's --_child mode); the numbers of that run."""
    study, cell = t["study"], t["hashes"]["cell"]
    reset_cell(study, cell)
    res_path = work / "results" / f"{tag}.json"
    res_path.parent.mkdir(parents=True, exist_ok=True)
    res_path.unlink(missing_ok=True)
    argv = ["study", str(t["spec"]), "--out", str(study), "--only", cell, "--no-report"]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", str(res_path)]
    prof_path = work / "profiles" / f"{tag}.prof"
    if profile:
        prof_path.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--_profile", str(prof_path)]
    cmd += ["--", *argv]
    load0 = loadavg()
    log = work / "logs" / f"{tag}.log"
    rc, wall = run_logged(cmd, tree_env(t["tree"]), log)
    run = {"tag": tag, "tree": t["label"], "rc": rc, "wall_s": round(wall, 3), "loadavg_start": load0,
           "loadavg_end": loadavg(), "log": str(log)}
    child = json.loads(res_path.read_text()) if res_path.exists() else {}
    row_file = study / "rows" / f"{cell}.json"
    row = json.loads(row_file.read_text()) if row_file.exists() else None
    if rc != 0 or row is None:
        run["error"] = child.get("error") or f"exit code {rc}, row written: {row is not None}"
        run["log_tail"] = tail(log)
        return run
    stats = child.get("stats", {})

    def st(key: str, field: str):
        return round(stats[key][field], 4) if key in stats else 0 if field == "count" else 0.0

    run.update({
        "task_s": row.get("task_seconds"), "train_s": row.get("train_seconds"),
        "task_minus_train_s": round(row["task_seconds"] - row["train_seconds"], 3),
        "wall_minus_task_s": round(wall - row["task_seconds"], 3),
        "cli_import_s": child.get("cli_import_s"),
        "child_total_s": child.get("child_total_s"),
        "ae_loads": st("factory.create_autoencoder", "count"),
        "ae_load_s": st("factory.create_autoencoder", "seconds"),
        "from_pretrained_s": st("hub.from_pretrained", "seconds"),
        "weights_sha256_calls": st("base.weights_sha256", "count"),
        "weights_sha256_s": st("base.weights_sha256", "seconds"),
        "import_torch_s": st("import.torch", "seconds"),
        "import_diffusers_s": st("import.diffusers", "seconds"),
        "import_timm_s": st("import.timm", "seconds"),
        "ae_calls": stats.get("factory.create_autoencoder", {}).get("calls", []),
        "hooks_installed": child.get("hooks_installed"),
        "diffusers_imported": child.get("diffusers_imported"),
        "torch_threads": child.get("torch_threads"),
        "latentgap_file": child.get("latentgap_file"),
        "run_dir": row.get("run_dir", f"runs/{cell}"),
        "row": {k: row.get(k) for k in ("epochs", "n_train", "n_val", "n_test", "input_shape", "model",
                                        "seconds_per_epoch", "device_name", "autoencoder", "autoencoder_sha256")},
    })
    if profile:
        run["profile"] = str(prof_path)
        run["profile_summary"] = summarize_profile(prof_path)
    return run


# cumulative seconds of these (label, file parts (any), function) in a cProfile run; both code layouts
_PROFILE_STAGES = [
    ("all imports (importlib _find_and_load, outermost calls)", ("<frozen importlib._bootstrap>",), "_find_and_load"),
    ("latentgap.cli.main", ("latentgap/cli/__init__.py",), "main"),
    ("run_task (the task)", ("latentgap/study/runner.py", "latentgap/study/tasks.py"), "run_task"),
    ("train.run.run_training", ("latentgap/train/run.py",), "run_training"),
    ("open_inputs", ("latentgap/train/",), "open_inputs"),
    ("latents ensure_cache", ("latentgap/latents/cache.py",), "ensure_cache"),
    ("latents open_cache", ("latentgap/latents/cache.py",), "open_cache"),
    ("autoencoders create_autoencoder", ("latentgap/autoencoders/factory.py",), "create_autoencoder"),
    ("autoencoders.hub from_pretrained", ("latentgap/autoencoders/hub.py",), "from_pretrained"),
    ("autoencoders.base weights_sha256", ("latentgap/autoencoders/base.py",), "weights_sha256"),
    ("data open_dataset", ("latentgap/data/",), "open_dataset"),
    ("data load_or_make_splits", ("latentgap/data/",), "load_or_make_splits"),
    ("train.loop fit", ("latentgap/train/loop.py",), "fit"),
    ("train.loop evaluate", ("latentgap/train/loop.py",), "evaluate"),
    ("models create_classifier", ("latentgap/models/",), "create_classifier"),
    ("study.spec check_train_fields (imports latentgap.train)", ("latentgap/study/spec.py",), "check_train_fields"),
    ("runs.environment (row versions)", ("latentgap/runs.py",), "environment"),
]


def summarize_profile(path: Path) -> dict:
    import pstats

    stats = pstats.Stats(str(path)).stats  # (file, line, func) -> (cc, nc, tt, ct, callers)
    stages = {}
    for label, file_parts, func in _PROFILE_STAGES:
        hits = [(k, v) for k, v in stats.items() if k[2] == func and any(fp in k[0] for fp in file_parts)]
        if hits:
            stages[label] = {"calls": sum(v[0] for _, v in hits),
                             "cumulative_s": round(max(v[3] for _, v in hits), 3)}
    top = sorted(((v[3], k) for k, v in stats.items() if "/latentgap/" in k[0]), reverse=True)[:20]
    return {"stages": stages,
            "top_latentgap_cumulative": [{"function": f"{k[0].split('/latentgap/')[-1]}:{k[1]}:{k[2]}",
                                          "cumulative_s": round(ct, 3)} for ct, k in top]}


METRICS = ["wall_s", "task_s", "train_s", "task_minus_train_s", "wall_minus_task_s", "cli_import_s",
           "ae_loads", "ae_load_s", "from_pretrained_s", "weights_sha256_s", "import_torch_s", "import_diffusers_s",
           "import_timm_s"]


def medians(runs: list[dict]) -> dict:
    ok = [r for r in runs if "error" not in r]
    out = {"n_ok": len(ok), "n_failed": len(runs) - len(ok),
           "diffusers_imported": sorted({str(r.get("diffusers_imported")) for r in ok}) or None}
    for m in METRICS:
        vals = [r[m] for r in ok if r.get(m) is not None]
        out[m] = round(statistics.median(vals), 3) if vals else None
    return out


def print_table(labels: list[str], med: dict, ratios: dict) -> None:
    names = {"wall_s": "subprocess wall", "task_s": "row task_seconds", "train_s": "row train_seconds",
             "task_minus_train_s": "task - train (start-up + test)", "wall_minus_task_s": "wall - task (interp/imports)",
             "cli_import_s": "import latentgap.cli", "ae_loads": "AE loads in the cell (count)",
             "ae_load_s": "AE load seconds (create_autoencoder)", "from_pretrained_s": "  of which from_pretrained",
             "weights_sha256_s": "  of which weights sha256", "import_torch_s": "import torch (whole process)",
             "import_diffusers_s": "import diffusers (whole process)", "import_timm_s": "import timm (whole process)"}
    w0 = max(len(v) for v in names.values()) + 2
    head = f"{'median over runs':<{w0}}" + "".join(f"{lb:>14}" for lb in labels)
    if ratios:
        head += "".join(f"{'ratio ' + labels[0] + '/' + lb:>28}" for lb in labels[1:])
    print(head)
    print("-" * len(head))
    for m in METRICS:
        line = f"{names[m]:<{w0}}" + "".join(f"{_fmt(med[lb][m], m == 'ae_loads'):>14}" for lb in labels)
        for lb in labels[1:]:
            r = ratios.get(lb, {}).get(m)
            line += f"{(f'{r:.2f}x' if r is not None else '-'):>28}"
        print(line)
    print(f"{'diffusers imported at all':<{w0}}" + "".join(f"{','.join(med[lb]['diffusers_imported'] or ['-']):>14}" for lb in labels))
    print(f"{'runs ok / failed':<{w0}}" + "".join(f"{str(med[lb]['n_ok']) + ' / ' + str(med[lb]['n_failed']):>14}"
                                                  for lb in labels))


def _fmt(v, count: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:g}" if count or isinstance(v, int) else f"{v:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", type=Path, default=[],
                    help="source tree to run with PYTHONPATH=<tree>/src (repeatable; the first is the baseline)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lg-cell-startup"),
                    help="work folder: the autoencoder (made once), study folders, logs, profiles")
    ap.add_argument("--repeats", type=int, default=3, help="timed cell runs per tree (ABAB order)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed cell runs per tree before the timed ones")
    ap.add_argument("--profile-runs", type=int, default=1, help="cProfile cell runs per tree after the timed ones")
    ap.add_argument("--dataset", default=DATASET)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default="convnext_atto")
    ap.add_argument("--nice", type=int, default=5, help="os.nice increment for this script and its children")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where record-<timestamp>.json goes")
    # internal modes
    ap.add_argument("--_child", dest="child", help=argparse.SUPPRESS)
    ap.add_argument("--_profile", dest="profile", help=argparse.SUPPRESS)
    ap.add_argument("--_make-ae", dest="make_ae", help=argparse.SUPPRESS)
    ap.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
        return child_main(args.child, args.profile, rest)
    if args.make_ae:
        return make_ae_main(args.make_ae)
    if not args.tree:
        ap.error("give at least one --tree")

    if args.nice:
        os.nice(args.nice)
    trees = [t.resolve() for t in args.tree]
    labels: list[str] = []
    for t in trees:
        if not (t / "src" / "latentgap" / "__init__.py").is_file():
            sys.exit(f"error: {t} has no src/latentgap/")
        lb, i = t.name, 1
        while lb in labels:  # the same folder name twice: wt, wt-2, ...
            i += 1
            lb = f"{t.name}-{i}"
        labels.append(lb)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "cell_startup", "created_utc": stamp,
        "command": shlex.join([sys.executable, *sys.argv]), "cwd": os.getcwd(), "nice": args.nice,
        "machine": machine_info(), "loadavg_start": loadavg(), "versions": versions(),
        "settings": {"dataset": args.dataset, "k": args.k, "folds": [0], "epochs": args.epochs,
                     "batch_size": args.batch_size, "model": args.model, "space": "latent", "device": "cpu",
                     "executor": "local, workers 1 (the cell runs inside the `latentgap study` process)",
                     "repeats": args.repeats, "warmup": args.warmup, "profile_runs": args.profile_runs,
                     "order": "ABAB: every round runs each tree in the order given",
                     "env": {"HF_HUB_OFFLINE": "1", "PYTHONPATH": "<tree>/src"}},
        "work": str(work),
    }
    print(f"machine: {record['machine']['cpu_model']}, {record['machine']['usable_cores']} cores, "
          f"load {record['loadavg_start']}", flush=True)

    record["autoencoder"] = {"path": str(work / AE_DIRNAME), **ensure_autoencoder(work, trees[0])}
    print(f"autoencoder: {record['autoencoder']['n_params'] / 1e6:.1f} M parameters, files "
          f"{record['autoencoder']['files']}", flush=True)

    setups = []
    for tree, lb in zip(trees, labels):
        t = {"tree": tree, "label": lb}
        env = tree_env(tree)
        r = subprocess.run([sys.executable, "-c", "import latentgap; print(latentgap.__file__)"], env=env,
                           capture_output=True, text=True)
        imported = r.stdout.strip()
        if not imported.startswith(str(tree / "src")):
            sys.exit(f"error: PYTHONPATH={tree / 'src'} imports latentgap from {imported or r.stderr[-300:]}")
        study = work / "studies" / f"{lb}-{stamp}"
        study.mkdir(parents=True)
        spec = study.parent / f"{lb}-{stamp}.yaml"
        write_spec(spec, work / AE_DIRNAME, args)
        t.update(study=study, spec=spec)
        t["hashes"] = dry_run_hashes(tree, spec, study, work / "logs" / f"{lb}-{stamp}-dryrun.log")
        print(f"[{lb}] latentgap from {imported}; prepare {t['hashes']['prepare']}, cell {t['hashes']['cell']} "
              f"({t['hashes']['cell_label']})", flush=True)
        log = work / "logs" / f"{lb}-{stamp}-prepare.log"
        cmd = latentgap_cmd() + ["study", str(spec), "--out", str(study), "--only", t["hashes"]["prepare"],
                                 "--no-report"]
        rc, secs = run_logged(cmd, env, log)
        prow = study / "rows" / f"{t['hashes']['prepare']}.json"
        if rc != 0 or not prow.exists():
            sys.exit(f"error: prepare failed for {tree} (rc {rc}); see {log}:\n{tail(log)}")
        prepare_row = json.loads(prow.read_text())
        print(f"[{lb}] prepare (untimed for the comparison): {secs:.1f} s wall, "
              f"task_seconds {prepare_row.get('task_seconds')}", flush=True)
        t["prepare"] = {"wall_s": round(secs, 2), "task_seconds": prepare_row.get("task_seconds"),
                        "cache_dir": prepare_row.get("cache_dir"), "psnr_mean": prepare_row.get("psnr_mean")}
        t["warmup"] = []
        for i in range(args.warmup):
            run = run_cell(t, f"{lb}-{stamp}-warmup{i}", work)
            t["warmup"].append(run)
            print(f"[{lb}] warm-up cell run: wall {run['wall_s']:.1f} s"
                  + (f" ERROR {run['error']}" if "error" in run else ""), flush=True)
        setups.append(t)

    runs: dict[str, list[dict]] = {lb: [] for lb in labels}
    for rep in range(args.repeats):
        for t in setups:
            run = run_cell(t, f"{t['label']}-{stamp}-r{rep}", work)
            run["repeat"] = rep
            runs[t["label"]].append(run)
            if "error" in run:
                print(f"[{t['label']}] repeat {rep}: ERROR {run['error']}\n{run.get('log_tail', '')}", flush=True)
            else:
                print(f"[{t['label']}] repeat {rep}: wall {run['wall_s']:.2f} s, task {run['task_s']:.2f} s, "
                      f"train {run['train_s']:.2f} s, task-train {run['task_minus_train_s']:.2f} s, "
                      f"AE loads {run['ae_loads']} ({run['ae_load_s']:.2f} s), load {run['loadavg_start'][0]:.2f}",
                      flush=True)

    profiles: dict[str, list[dict]] = {lb: [] for lb in labels}
    for i in range(args.profile_runs):
        for t in setups:
            run = run_cell(t, f"{t['label']}-{stamp}-prof{i}", work, profile=True)
            profiles[t["label"]].append(run)
            msg = run.get("error") or ", ".join(f"{k} {v['cumulative_s']:.2f} s"
                                                 for k, v in run["profile_summary"]["stages"].items())
            print(f"[{t['label']}] cProfile run: {msg}", flush=True)

    med = {lb: medians(runs[lb]) for lb in labels}
    ratios = {}
    for lb in labels[1:]:
        ratios[lb] = {m: (round(med[labels[0]][m] / med[lb][m], 3) if med[labels[0]][m] and med[lb][m] else None)
                      for m in METRICS}
    record.update({
        "trees": [{"label": t["label"], "path": str(t["tree"]), "git": tree_git(t["tree"]), "study": str(t["study"]),
                   "spec": str(t["spec"]), "hashes": t["hashes"], "prepare": t["prepare"], "warmup": t["warmup"]}
                  for t in setups],
        "runs": runs, "profile_runs": profiles, "medians": med,
        "ratios_first_over_other": ratios, "loadavg_end": loadavg(),
    })
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"record-{stamp}.json"
    out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print()
    print_table(labels, med, ratios)
    print(f"\nload average start {record['loadavg_start']}, end {record['loadavg_end']}; record: {out}")
    return 0 if all(m["n_failed"] == 0 for m in med.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
