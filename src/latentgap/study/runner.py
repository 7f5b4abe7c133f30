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

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..io import atomic_write_json, atomic_write_text, read_json, stable_hash
from .spec import IMAGE_AE, StudySpec

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
        if self.stage == "prepare":
            return f"prepare {c['dataset']} x {c['autoencoder']}"
        return f"{c['dataset']} {c['autoencoder']} {c['space']} {c['variant']} fold {c['fold']} seed {c['seed']}"


# --------------------------------------------------------------------------- grid

def _pair_key(spec: StudySpec, dataset: str, ae: str) -> dict[str, Any]:
    return {"dataset": dataset, "autoencoder": ae, "cache": spec.cache.model_dump(mode="json")}


def expand_grid(spec: StudySpec) -> tuple[list[Task], list[Task]]:
    """(prepare tasks, cell tasks). Image cells need no autoencoder and are shared by all of them;
    non-plain variants are latent-space classifiers (the paper's ablation, Table 4)."""
    prepares, cells = [], []
    uses_ae = [s for s in spec.spaces if s != "image"] or any(v != "plain" for v in spec.variants)
    for ds in spec.datasets:
        for ae in spec.autoencoders if uses_ae else []:
            key = _pair_key(spec, ds, ae)
            prepares.append(Task("prepare", "p" + stable_hash(key),
                                 {**key, "examples": spec.examples, "device": spec.device}))
    combos = []
    for ds in spec.datasets:
        if "image" in spec.spaces:
            combos.append((ds, IMAGE_AE, "image", "plain"))
        for ae in spec.autoencoders:
            for space in ("recon", "latent"):
                if space in spec.spaces:
                    combos.append((ds, ae, space, "plain"))
            for variant in spec.variants:
                if variant != "plain":
                    combos.append((ds, ae, "latent", variant))
    for ds, ae, space, variant in combos:
        for fold in spec.fold_ids:
            for seed in spec.seeds:
                key = {"dataset": ds, "autoencoder": ae, "space": space, "variant": variant, "fold": fold,
                       "seed": seed, "k": spec.k, "split_seed": spec.split_seed, "val_fraction": spec.val_fraction,
                       "train": {**spec.train, **spec.space_train.get(space, {})}}
                if space != "image":
                    key["cache"] = spec.cache.model_dump(mode="json")
                cfg = {**key, "cache": spec.cache.model_dump(mode="json"), "device": spec.device,
                       "pair": "p" + stable_hash(_pair_key(spec, ds, ae)) if space != "image" else None}
                cells.append(Task("cell", "c" + stable_hash(key), cfg))
    return prepares, cells


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
    cell_fn, prepare_fn = CELL_KINDS[kind]
    t0 = time.time()
    try:
        if task.stage == "prepare":
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
    """Keep the tasks whose hash starts with one of ``only`` (and the prepare tasks those cells need)."""
    pick = [t for t in prepares + cells if any(t.hash.startswith(o) for o in only)]
    if len(pick) < 1 or any(not any(t.hash.startswith(o) for t in prepares + cells) for o in only):
        raise UserError(f"--only {' '.join(only)} matches no task of this study", "copy a hash from --dry-run output")
    cells_sel = [t for t in pick if t.stage == "cell"]
    needed = {t.config["pair"] for t in cells_sel} | {t.hash for t in pick if t.stage == "prepare"}
    return [p for p in prepares if p.hash in needed], cells_sel


def dry_run_text(spec: StudySpec, study_dir: Path, prepares: list[Task], cells: list[Task]) -> str:
    status = grid_status(study_dir, prepares + cells)
    lines = [f"study {spec.name} in {study_dir}: {len(prepares)} cache/fidelity tasks, {len(cells)} cells "
             f"({len(spec.datasets)} datasets x {len(spec.autoencoders)} autoencoders x spaces {','.join(spec.spaces)} "
             f"x variants {','.join(spec.variants)} x {len(spec.fold_ids)} folds x {len(spec.seeds)} seeds)"]
    lines.append(f"{'hash':14} {'status':8} task")
    for t in prepares + cells:
        lines.append(f"{t.hash:14} {status[t.hash]:8} {t.label}")
    counts = {s: sum(v == s for v in status.values()) for s in ("done", "failed", "pending")}
    lines.append(f"done {counts['done']}, failed {counts['failed']}, pending {counts['pending']} "
                 f"of {len(status)} tasks")
    return "\n".join(lines)


def run_study(spec: StudySpec, study_dir: str | Path, *, only: list[str] | None = None, dry_run: bool = False,
              kind: str = "train", echo=print, live: bool | None = None) -> StudySummary | str:
    """Run every missing task of ``spec`` in ``study_dir`` on the spec's executor.

    Args:
        only: task hashes (or prefixes) to run; their caches are prepared first.
        dry_run: return the grid with each task's status instead of running anything.
        kind: "train" (real training) or "synthetic" (executor smoke test, see ``cells``).
        live: show the live progress view (default: when stderr is a terminal).
    """
    from .executors import make_executor

    from .spec import check_train_fields

    if kind == "train":
        check_train_fields(spec)
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
    executor = make_executor(spec.executor, study_dir, kind, live=live, echo=echo)
    # caches first: every cell that reads a cache starts after its pair's prepare task finished
    failed_pairs: dict[str, str] = {}
    for stage_tasks in (prepares, cells):
        todo, blocked = [], []
        for t in stage_tasks:
            if status[t.hash] == "done":
                continue
            if t.stage == "cell" and t.config["pair"] in failed_pairs:
                blocked.append((t.hash, t.label, f"cache task {t.config['pair']} failed: {failed_pairs[t.config['pair']]}"))
            else:
                todo.append(t)
        results = executor.run(todo, done=summary.done_before + summary.ran, total=summary.total)
        for t in todo:
            reason = results.get(t.hash)
            if reason is None:
                summary.ran += 1
            else:
                summary.failed.append((t.hash, t.label, reason))
                if t.stage == "prepare":
                    failed_pairs[t.hash] = reason
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
