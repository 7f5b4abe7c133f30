"""Tasks: the units a study runs, as registered functions that hand their rows downstream.

A *task kind* is a function ``fn(config, run_dir, inputs) -> row`` registered under a name:

    @register_task("prepare", row_kind="fidelity")
    def prepare_pair(config: dict, run_dir: Path, inputs: Inputs) -> dict: ...

``config`` is the task's resolved settings, ``run_dir`` its own folder (created on demand, kept across
restarts so that a killed task resumes from its checkpoints) and ``inputs`` the *rows* of the tasks it needs,
by role (``inputs["pair"]["cache_dir"]``), with ``inputs.path(...)`` resolving the study-relative paths rows
hold. A grid builder (``grids.py``) turns a spec into :class:`Task` objects; the runner and the executors
know only hashes, needs and rows — never what a kind does. Adding a stage is one registered function plus
its grid builder.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..registry import Registry
from ..runs import code_version
from ..storage import atomic_write_json, read_json
from .claims import ClaimSettings, Claims

CLAIMED = "claimed by another runner"  # what run_task returns for a task another live runner holds
DONE_ELSEWHERE = "finished by another runner"  # ... and for one whose row appeared before it could run it


@dataclass(frozen=True)
class TaskKind:
    name: str
    fn: Callable[[dict, Path, "Inputs"], dict]
    row_kind: str  # the row's ``kind`` field: what statistics and reports select on ("result", "fidelity", ...)


TASK_KINDS = Registry("task kinds")


def register_task(name: str, *, row_kind: str) -> Callable:
    """Register ``fn(config, run_dir, inputs) -> row`` as the task kind ``name``."""
    def deco(fn: Callable) -> Callable:
        TASK_KINDS.register(name)(TaskKind(name, fn, row_kind))
        return fn

    return deco


def task_kind(name: str) -> TaskKind:
    return TASK_KINDS.get(name)


@dataclass(frozen=True)
class Task:
    """One unit of work of a study.

    Attributes:
        kind: registered task kind.
        hash: identity (a prefix letter + a hash of what defines the result); the row is ``rows/<hash>.json``.
        config: what the task function receives.
        needs: role -> hash of the tasks whose rows this one reads (they run first).
        run_dir: the task's folder, relative to the study folder (readable name + hash).
        identity: fields copied into the row (e.g. dataset, autoencoder, space, variant, fold, seed).
        label: one line for logs and ``--dry-run``.
    """

    kind: str
    hash: str
    config: dict[str, Any] = field(hash=False, compare=False)
    needs: dict[str, str] = field(default_factory=dict, hash=False, compare=False)
    run_dir: str = field(default="", hash=False, compare=False)
    identity: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    label: str = field(default="", hash=False, compare=False)


class Inputs(dict):
    """Rows of the tasks a task needs, by role; ``root`` is the study folder, against which the paths that
    rows hold (``cache_dir``, ``run_dir``, ``weights_dir``) are resolved by :meth:`path`."""

    def __init__(self, rows: dict[str, dict], root: str | Path):
        super().__init__(rows)
        self.root = Path(root)

    def path(self, relative: str) -> Path:
        return self.root / relative

    def pair_autoencoder(self) -> str:
        """What ``create_autoencoder`` loads for the ``pair`` input: the study-trained weights folder (inside the
        study) or the entry's name / hub id / path, as its ``prepare`` row recorded."""
        pair = self["pair"]
        return str(self.path(pair["ae_spec"])) if pair["ae_in_study"] else pair["ae_spec"]


def row_path(study_dir: Path, task_hash: str) -> Path:
    return Path(study_dir) / "rows" / f"{task_hash}.json"


def failed_path(study_dir: Path, task_hash: str) -> Path:
    return Path(study_dir) / "failed" / f"{task_hash}.json"


def run_task(study_dir: str | Path, task: Task, kind: TaskKind | None = None,
             claims: ClaimSettings | None = None) -> dict | str:
    """Run one task unless its row exists or another runner holds it; write the row atomically; record a
    failure and re-raise.

    Module-level and picklable: the same function runs in-process, in a worker process and as a Slurm array
    task (submitit). ``kind`` is the task's :class:`TaskKind`, resolved by the submitting process and shipped
    with the task (so a kind registered by a plugin or a test need not be registered in the worker); None
    looks it up here.

    Returns the row it wrote, :data:`CLAIMED` when another live runner holds the task, or
    :data:`DONE_ELSEWHERE` when its row exists already.
    """
    study_dir = Path(study_dir)
    out = row_path(study_dir, task.hash)
    if out.exists():
        return DONE_ELSEWHERE
    kind = kind or task_kind(task.kind)
    with Claims(study_dir, claims or ClaimSettings()).held(task.hash) as mine:
        if not mine:
            return CLAIMED
        if out.exists():  # finished by another runner between our first look and the claim
            return DONE_ELSEWHERE
        t0 = time.time()
        try:
            inputs = Inputs({role: read_json(row_path(study_dir, h)) for role, h in task.needs.items()}, study_dir)
            row = kind.fn(task.config, study_dir / task.run_dir, inputs)
            row.update(kind=kind.row_kind, **task.identity)
            row.update(task_hash=task.hash, task_kind=task.kind, run_dir=task.run_dir,
                       task_seconds=round(time.time() - t0, 3), code_version=code_version())
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt):
                atomic_write_json(failed_path(study_dir, task.hash),
                                  {"task": task.label, "reason": one_line(e), "traceback": traceback.format_exc()[-4000:],
                                   "at": time.time()})
            raise
        atomic_write_json(out, row)
        failed_path(study_dir, task.hash).unlink(missing_ok=True)
        return row


def one_line(err: BaseException, limit: int = 500) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:limit]
