"""The study runner: expand a spec into idempotent tasks keyed by a hash of their resolved config,
run the missing ones on an executor, and keep every finished row.

Study folder layout::

    STUDY_DIR/study.yaml            the resolved spec (a different spec in the same folder is refused)
    STUDY_DIR/rows/<hash>.json      one finished row per task, written atomically (write, then rename)
    STUDY_DIR/failed/<hash>.json    why a task failed (removed when it later succeeds)
    STUDY_DIR/runs/<hash>/          a cell's run folder (checkpoints: a killed cell resumes from them)
    STUDY_DIR/pairs/<hash>/         examples.npz per autoencoder x dataset (for the report figure)
    STUDY_DIR/caches/               latent caches, built once per autoencoder x dataset
    STUDY_DIR/slurm/                submitit logs

A task whose row exists is never run again, so a study killed at any moment (even SIGKILL) loses only
the tasks that were running; starting it again finishes the rest.
"""

from __future__ import annotations

import functools

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..storage import atomic_write_json, atomic_write_text, read_json, stable_hash
from .spec import IMAGE_AE, AutoencoderEntry, StudySpec, resize_for

IDENTITY = ("dataset", "autoencoder", "space", "variant", "fold", "seed")


@dataclass(frozen=True)
class Task:
    """One unit of work. ``stage`` is "prepare" (cache + fidelity of a pair) or "cell" (one training)."""

    stage: str
    hash: str
    config: dict[str, Any] = field(hash=False, compare=False)

    @property
    def label(self) -> str:
        c = self.config
        if self.stage == "autoencoder":
            return f"train autoencoder {c['label']} on {c['data']}"
        if self.stage == "prepare":
            return f"prepare {c['dataset']} x {c['autoencoder']}"
        return f"{c['dataset']} {c['autoencoder']} {c['space']} {c['variant']} fold {c['fold']} seed {c['seed']}"


# --------------------------------------------------------------------------- grid

# Tasks run in this order; a task starts only after the tasks it ``needs`` (config["needs"]) finished.
STAGES = ("autoencoder", "prepare", "cell")


def _ae_train_key(spec: StudySpec, ae: AutoencoderEntry, dataset: str) -> dict[str, Any] | None:
    """What defines a study-trained autoencoder (None for a ready-made one). Training on the study dataset
    gives one AE per dataset; training on ``train.data`` gives one AE shared by every dataset."""
    if ae.train is None:
        return None
    settings = ae.train.model_dump(mode="json")
    settings.pop("checkpoint_every")  # how often to save does not change the weights
    return {"autoencoder": ae.name, "label": ae.key, "train": settings,
            "data": ae.train.data or dataset,
            "resize": resize_for(spec.cache.model_dump(mode="json"), ae.train.data or dataset)}


def _pair_key(spec: StudySpec, dataset: str, ae: AutoencoderEntry) -> dict[str, Any]:
    key = {"dataset": dataset, "autoencoder": ae.key, "cache": spec.cache.model_dump(mode="json")}
    if ae.key != ae.name or ae.train is not None:
        key["ae"] = ae.model_dump(mode="json")
    if (tk := _ae_train_key(spec, ae, dataset)) is not None:
        key["ae_train"] = tk
    return key


def expand_grid(spec: StudySpec) -> tuple[list[Task], list[Task]]:
    """(preparation tasks, cell tasks).

    Preparation: one ``autoencoder`` task per study-trained autoencoder (per dataset, or once when it
    trains on ``train.data``), then one ``prepare`` task per dataset x autoencoder (latent cache,
    fidelity row, examples). Cells: image cells need no autoencoder and are shared by all of them;
    non-plain variants are latent-space classifiers (the paper's ablation, Table 4); a distilled cell
    takes the recon cell of its fold and seed as its teacher when the grid has one (it runs after it).
    """
    ae_tasks: dict[str, Task] = {}
    prepares, cells = [], []
    uses_ae = [s for s in spec.spaces if s != "image"] or any(v != "plain" for v in spec.variants)
    pair_of: dict[tuple[str, str], Task] = {}
    for ds in spec.datasets:
        for ae in spec.autoencoders if uses_ae else []:
            needs, source = [], None
            if (tk := _ae_train_key(spec, ae, ds)) is not None:
                h = "a" + stable_hash(tk)
                ae_tasks.setdefault(h, Task("autoencoder", h, {**tk, "device": spec.device, "needs": []}))
                needs, source = [h], f"autoencoders/{ae.key}-{h[1:]}"
            key = _pair_key(spec, ds, ae)
            t = Task("prepare", "p" + stable_hash(key), {**key, "examples": spec.examples, "device": spec.device,
                                                         "ae_source": source, "needs": needs})
            prepares.append(t)
            pair_of[(ds, ae.key)] = t
    combos = []
    for ds in spec.datasets:
        if "image" in spec.spaces:
            combos.append((ds, None, "image", "plain"))
        for ae in spec.autoencoders:
            for space in ("recon", "latent"):
                if space in spec.spaces:
                    combos.append((ds, ae, space, "plain"))
            for variant in spec.variants if spec.runs_variants(ds, ae.key) else []:
                if variant != "plain":
                    combos.append((ds, ae, "latent", variant))
    by_identity: dict[tuple, Task] = {}
    for ds, ae, space, variant in combos:
        for fold in spec.fold_ids:
            for seed in spec.seeds:
                name = IMAGE_AE if ae is None else ae.key
                key = {"dataset": ds, "autoencoder": name, "space": space, "variant": variant, "fold": fold,
                       "seed": seed, "k": spec.k, "split_seed": spec.split_seed, "val_fraction": spec.val_fraction,
                       "train": {**spec.train, **spec.space_train.get(space, {})}}
                pair = pair_of.get((ds, name)) if space != "image" else None
                needs, teacher = [pair.hash] if pair else [], None
                if space != "image":
                    key["cache"] = spec.cache.model_dump(mode="json")
                    if "ae" in pair.config:
                        key["ae"] = pair.config["ae"]
                if variant == "distilled" and (ds, name, "recon", "plain", fold, seed) in by_identity:
                    t_cell = by_identity[(ds, name, "recon", "plain", fold, seed)]
                    key["teacher"] = t_cell.hash  # the teacher's settings are part of the student's identity
                    needs, teacher = needs + [t_cell.hash], f"runs/{t_cell.hash}"
                cfg = {**key, "cache": spec.cache.model_dump(mode="json"), "device": spec.device,
                       "pair": pair.hash if pair else None, "ae_source": pair.config["ae_source"] if pair else None,
                       "teacher_run": teacher, "needs": needs}
                task = Task("cell", "c" + stable_hash(key), cfg)
                by_identity[(ds, name, space, variant, fold, seed)] = task
                cells.append(task)
    return list(ae_tasks.values()) + prepares, cells


def waves(tasks: list[Task]) -> list[list[Task]]:
    """Split tasks into successive waves: every task's ``needs`` lie in earlier waves (grid order kept)."""
    placed: dict[str, int] = {}
    known = {t.hash for t in tasks}
    out: list[list[Task]] = []
    for t in sorted(tasks, key=lambda t: STAGES.index(t.stage)):
        level = 1 + max((placed[n] for n in t.config.get("needs", []) if n in known), default=-1)
        placed[t.hash] = level
        while len(out) <= level:
            out.append([])
        out[level].append(t)
    return out


# --------------------------------------------------------------------------- one task (runs in a worker)

def row_path(study_dir: Path, task_hash: str) -> Path:
    return Path(study_dir) / "rows" / f"{task_hash}.json"


def run_task(study_dir: str | Path, task: Task, kind: str = "train") -> dict[str, Any]:
    """Run one task unless its row exists; write the row atomically; record a failure and re-raise.

    Module-level and picklable: the same function runs in-process, in a worker process and as a
    Slurm array task (submitit).
    """
    from .cells import CELL_KINDS

    study_dir = Path(study_dir)
    out = row_path(study_dir, task.hash)
    if out.exists():
        return read_json(out)
    cell_fn, prepare_fn, ae_fn = CELL_KINDS[kind]
    t0 = time.time()
    try:
        if task.stage == "autoencoder":
            row = ae_fn(task.config, study_dir / "autoencoders" / f"{task.config['label']}-{task.hash[1:]}", study_dir)
            row.update(kind="autoencoder", autoencoder=task.config["label"], data=task.config["data"])
        elif task.stage == "prepare":
            row = prepare_fn(task.config, study_dir / "pairs" / task.hash, study_dir)
            row.update(kind="fidelity", dataset=task.config["dataset"], autoencoder=task.config["autoencoder"])
        else:
            row = cell_fn(task.config, study_dir / "runs" / task.hash, study_dir)
            row.setdefault("config_hash", task.hash)
            row.update(kind="result", **{k: task.config[k] for k in IDENTITY})
        row.update(task_hash=task.hash, task_seconds=round(time.time() - t0, 3))
        row.setdefault("cell_kind", kind)
    except BaseException as e:
        if not isinstance(e, KeyboardInterrupt):
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:500]
            atomic_write_json(study_dir / "failed" / f"{task.hash}.json",
                              {"task": task.label, "reason": reason, "traceback": traceback.format_exc()[-4000:]})
        raise
    atomic_write_json(out, row)
    (study_dir / "failed" / f"{task.hash}.json").unlink(missing_ok=True)
    return row


# --------------------------------------------------------------------------- the study

@dataclass
class StudySummary:
    total: int
    done_before: int
    ran: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (hash, label, reason)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def init_study_dir(spec: StudySpec, study_dir: Path) -> None:
    """Save the resolved spec; refuse a folder that holds a different study (executor settings may differ)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    saved = study_dir / "study.yaml"
    new = spec.model_dump(mode="json")
    if saved.exists():
        old = yaml.safe_load(saved.read_text()) or {}
        old.pop("executor", None)
        if {k: v for k, v in new.items() if k != "executor"} != old:
            raise UserError(f"'{study_dir}' holds a different study (study.yaml differs from this spec)",
                            "use another --out folder, or delete its study.yaml to adopt this spec "
                            "(finished cells with unchanged settings are kept)")
        return
    data = {k: v for k, v in new.items() if k != "executor"}
    atomic_write_text(saved, yaml.safe_dump(data, sort_keys=False))


def grid_status(study_dir: Path, tasks: list[Task]) -> dict[str, str]:
    """done / failed / pending per task hash, from the files alone."""
    out = {}
    for t in tasks:
        if row_path(study_dir, t.hash).exists():
            out[t.hash] = "done"
        elif (study_dir / "failed" / f"{t.hash}.json").exists():
            out[t.hash] = "failed"
        else:
            out[t.hash] = "pending"
    return out


def select_only(prepares: list[Task], cells: list[Task], only: list[str]) -> tuple[list[Task], list[Task]]:
    """Keep the tasks whose hash starts with one of ``only`` and every task they need (caches, trained
    autoencoders, a distillation teacher)."""
    everything = {t.hash: t for t in prepares + cells}
    pick = [t for t in everything.values() if any(t.hash.startswith(o) for o in only)]
    if not pick or any(not any(h.startswith(o) for h in everything) for o in only):
        raise UserError(f"--only {' '.join(only)} matches no task of this study", "copy a hash from --dry-run output")
    keep, todo = set(), [t.hash for t in pick]
    while todo:
        h = todo.pop()
        if h not in keep:
            keep.add(h)
            todo.extend(everything[h].config.get("needs", []))
    return [t for t in prepares if t.hash in keep], [t for t in cells if t.hash in keep]


def dry_run_text(spec: StudySpec, study_dir: Path, prepares: list[Task], cells: list[Task]) -> str:
    status = grid_status(study_dir, prepares + cells)
    n_ae = sum(t.stage == "autoencoder" for t in prepares)
    lines = [f"study {spec.name} in {study_dir}: {n_ae} autoencoder trainings, {len(prepares) - n_ae} "
             f"cache/fidelity tasks, {len(cells)} cells "
             f"({len(spec.datasets)} datasets x {len(spec.autoencoders)} autoencoders x spaces {','.join(spec.spaces)} "
             f"x variants {','.join(spec.variants)}{_variants_scope(spec)} x {len(spec.fold_ids)} folds "
             f"x {len(spec.seeds)} seeds)"]
    lines.append(f"{'hash':14} {'status':8} task")
    for t in prepares + cells:
        lines.append(f"{t.hash:14} {status[t.hash]:8} {t.label}")
    counts = {s: sum(v == s for v in status.values()) for s in ("done", "failed", "pending")}
    lines.append(f"done {counts['done']}, failed {counts['failed']}, pending {counts['pending']} "
                 f"of {len(status)} tasks")
    return "\n".join(lines)


def _variants_scope(spec: StudySpec) -> str:
    scope = [f"{k} {','.join(v)}" for k, v in spec.variants_on.items()]
    return f" (non-plain on {'; '.join(scope)} only)" if scope and len(spec.variants) > 1 else ""


def run_study(spec: StudySpec, study_dir: str | Path, *, only: list[str] | None = None, dry_run: bool = False,
              kind: str = "train", echo=None, live: bool | None = None) -> StudySummary | str:
    """Run every missing task of ``spec`` in ``study_dir`` on the spec's executor.

    Args:
        only: task hashes (or prefixes) to run; their caches are prepared first.
        dry_run: return the grid with each task's status instead of running anything.
        kind: "train" (real training) or "synthetic" (executor smoke test, see ``cells``).
        live: show the live progress view (default: when stderr is a terminal).
    """
    from .executors import make_executor

    from .spec import check_autoencoders_trained, check_train_fields

    if kind == "train":
        check_train_fields(spec)
        check_autoencoders_trained(spec)
    study_dir = Path(study_dir).resolve()
    prepares, cells = expand_grid(spec)
    if only:
        prepares, cells = select_only(prepares, cells, only)
    if dry_run:
        return dry_run_text(spec, study_dir, prepares, cells)
    init_study_dir(spec, study_dir)
    status = grid_status(study_dir, prepares + cells)
    summary = StudySummary(total=len(prepares) + len(cells), done_before=sum(s == "done" for s in status.values()))
    t0 = time.time()
    echo = echo or functools.partial(print, flush=True)  # a log file (nohup, sbatch) shows each line at once
    executor = make_executor(spec.executor, study_dir, kind, live=live, echo=echo)
    # autoencoders, then caches, then cells (a distilled cell after its teacher): a task starts only
    # when every task it needs has its row; a task whose need failed is reported as blocked, not run
    failed: dict[str, str] = {}
    for wave in waves(prepares + cells):
        todo, blocked = [], []
        for t in wave:
            if status[t.hash] == "done":
                continue
            bad = [n for n in t.config.get("needs", []) if n in failed]
            if bad:
                blocked.append((t.hash, t.label, f"needed task {bad[0]} failed: {failed[bad[0]]}"))
                failed[t.hash] = f"blocked by {bad[0]}"
            else:
                todo.append(t)
        results = executor.run(todo, done=summary.done_before + summary.ran, total=summary.total,
                               failed=len(summary.failed) + len(blocked))
        for t in todo:
            reason = results.get(t.hash)
            if reason is None:
                summary.ran += 1
            else:
                summary.failed.append((t.hash, t.label, reason))
                failed[t.hash] = reason
        summary.failed.extend(blocked)
    summary.seconds = time.time() - t0
    return summary


def format_summary(summary: StudySummary, rerun: str) -> str:
    """Final summary; failed tasks with their reason and the command that re-runs one of them."""
    lines = [f"study finished in {summary.seconds:.0f} s: {summary.done_before + summary.ran}/{summary.total} tasks "
             f"done ({summary.ran} run now, {summary.done_before} already done), {len(summary.failed)} failed"]
    for h, label, reason in summary.failed:
        lines.append(f"  FAILED {h} {label}: {reason}")
    if summary.failed:
        lines.append(f"re-run one failed task: {rerun} --only {summary.failed[0][0]}  "
                     f"(details in failed/<hash>.json; a plain re-run retries all)")
    return "\n".join(lines)
