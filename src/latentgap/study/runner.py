"""The study runner: build a spec's task graph, run the missing tasks on an executor, keep every row.

Study folder layout::

    STUDY_DIR/study.yaml            the resolved spec (a different spec in the same folder is refused)
    STUDY_DIR/rows/<hash>.json      one finished row per task, written atomically (write, then rename)
    STUDY_DIR/failed/<hash>.json    why a task failed (removed when it later succeeds)
    STUDY_DIR/claims/<hash>.json    the runner working on a task now (owner + heartbeat; see claims.py)
    STUDY_DIR/runs/<dataset>-<ae>-<space>-<variant>-f<k>-s<seed>-<hash>/   a classifier's run folder
    STUDY_DIR/pairs/<dataset>-<ae>-<hash>/   examples.npz per autoencoder x dataset (for the report figure)
    STUDY_DIR/autoencoders/<label>-<hash>/   a study-trained autoencoder
    STUDY_DIR/caches/               latent caches, built once per autoencoder x dataset
    STUDY_DIR/slurm/                submitit logs

A task whose row exists is never run again, so a study killed at any moment (even SIGKILL) loses only
the tasks that were running; starting it again finishes the rest. Several runners may work on one folder
at once (two shells, or machines sharing the file system): each task is claimed before it runs, so the
runners split the work, and a claim of a runner that died is taken over.

The runner knows tasks only by hash, needs and rows (``tasks.py``); what a task does is its registered
kind's business, and which tasks a study has is its grid builder's (``grids.py``).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

from ..errors import UserError
from ..runs import code_version
from ..storage import atomic_write_text, read_json
from .claims import Claims, ClaimSettings
from .executors import make_executor
from .grids import grid_builder
from .spec import StudySpec, check_autoencoders_trained, check_train_fields, spec_from_dict
from .tasks import CLAIMED, DONE_ELSEWHERE, Task, failed_path, row_path


def waves(tasks: list[Task]) -> list[list[Task]]:
    """Split tasks into successive waves: every task's ``needs`` lie in earlier waves (grid order kept)."""
    placed: dict[str, int] = {}
    known = {t.hash for t in tasks}
    by_hash = {t.hash: t for t in tasks}
    out: list[list[Task]] = []

    def level(t: Task) -> int:
        if t.hash not in placed:
            placed[t.hash] = 1 + max((level(by_hash[n]) for n in t.needs.values() if n in known), default=-1)
        return placed[t.hash]

    for t in tasks:
        lv = level(t)
        while len(out) <= lv:
            out.append([])
        out[lv].append(t)
    return out


# --------------------------------------------------------------------------- the study

@dataclass
class StudySummary:
    total: int
    done_before: int
    ran: int = 0
    elsewhere: int = 0  # finished by another runner on the same folder while this one ran
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
        try:  # through today's spec model: fields added since (with their defaults) are not a difference
            old = {k: v for k, v in spec_from_dict(old, str(saved)).model_dump(mode="json").items() if k != "executor"}
        except UserError:
            pass
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
        elif failed_path(study_dir, t.hash).exists():
            out[t.hash] = "failed"
        else:
            out[t.hash] = "pending"
    return out


def select_only(tasks: list[Task], only: list[str]) -> list[Task]:
    """Keep the tasks whose hash starts with one of ``only`` and every task they need (caches, trained
    autoencoders, a distillation teacher)."""
    everything = {t.hash: t for t in tasks}
    pick = [t for t in tasks if any(t.hash.startswith(o) for o in only)]
    if not pick or any(not any(h.startswith(o) for h in everything) for o in only):
        raise UserError(f"--only {' '.join(only)} matches no task of this study", "copy a hash from --dry-run output")
    keep, todo = set(), [t.hash for t in pick]
    while todo:
        h = todo.pop()
        if h not in keep:
            keep.add(h)
            todo.extend(everything[h].needs.values())
    return [t for t in tasks if t.hash in keep]


# how --dry-run counts the tasks of each kind (other kinds: "<n> <kind> tasks")
_PLURAL = {"train-autoencoder": "autoencoder trainings", "prepare": "cache/fidelity tasks", "classifier": "cells"}


def dry_run_text(spec: StudySpec, study_dir: Path, tasks: list[Task]) -> str:
    status = grid_status(study_dir, tasks)
    kinds = list(dict.fromkeys(t.kind for t in tasks))
    counts = [f"{sum(t.kind == k for t in tasks)} {_PLURAL.get(k, k + ' tasks')}" for k in kinds]
    if "train-autoencoder" not in kinds and "classifier" in kinds:
        counts.insert(0, "0 autoencoder trainings")
    scope = []
    if spec.datasets:
        scope.append(f"{len(spec.datasets)} datasets x {len(spec.autoencoders)} autoencoders x spaces "
                     f"{','.join(spec.spaces)} x variants {','.join(spec.variants)}{_variants_scope(spec)} x "
                     f"{len(spec.fold_ids)} folds x {len(spec.seeds)} seeds")
    if spec.seg is not None:
        scope.append(f"segmentation: {len(spec.seg.datasets)} datasets x methods {','.join(spec.seg.methods)} x "
                     f"{len(spec.seg.fold_ids)} folds")
    lines = [f"study {spec.name} in {study_dir}: {', '.join(counts)} ({'; '.join(scope)})"]
    lines.append(f"{'hash':14} {'status':8} task")
    for t in tasks:
        lines.append(f"{t.hash:14} {status[t.hash]:8} {t.label}")
    n = {s: sum(v == s for v in status.values()) for s in ("done", "failed", "pending")}
    lines.append(f"done {n['done']}, failed {n['failed']}, pending {n['pending']} of {len(status)} tasks")
    return "\n".join(lines)


def _variants_scope(spec: StudySpec) -> str:
    scope = [f"{k} {','.join(v)}" for k, v in spec.variants_on.items()]
    return f" (non-plain on {'; '.join(scope)} only)" if scope and len(spec.variants) > 1 else ""


def check_code_versions(study_dir: Path, tasks: list[Task], allow_mixed: bool = False) -> None:
    """Refuse to add rows of this code to a study whose finished rows were made by other code (their numbers
    would be compared as if one implementation had made them), unless ``allow_mixed``."""
    here = code_version()
    other: dict[str, int] = {}
    for t in tasks:
        p = row_path(study_dir, t.hash)
        if p.exists():
            v = read_json(p).get("code_version", "unrecorded")
            if v != here:
                other[v] = other.get(v, 0) + 1
    if other and not allow_mixed:
        listed = ", ".join(f"{n} by {v}" for v, n in sorted(other.items()))
        raise UserError(f"'{study_dir}' holds rows made by other code ({listed}; this code is {here})",
                        "finish the study with the code that started it, use a new --out folder, or pass "
                        "--allow-mixed-code (the report then lists the code versions of its rows)")


def run_study(spec: StudySpec, study_dir: str | Path, *, only: list[str] | None = None, dry_run: bool = False,
              grid: str | Callable[[StudySpec], list[Task]] = "classification", echo=None,
              live: bool | None = None, allow_mixed_code: bool = False) -> StudySummary | str:
    """Run every missing task of ``spec`` in ``study_dir`` on the spec's executor.

    Args:
        only: task hashes (or prefixes) to run; the tasks they need run first.
        dry_run: return the grid with each task's status instead of running anything.
        grid: the grid builder, by registered name or as a function ``spec -> list[Task]``.
        live: show the live progress view (default: when stderr is a terminal).
        allow_mixed_code: add rows to a study whose finished rows were made by other code (refused otherwise;
            ``code_version`` in every row says which code made it).

    Other runners may work on the same folder at the same time: tasks they hold are waited for, not
    repeated; a task whose runner died is taken over. Failures seen in this run — this runner's or another's —
    are in the summary (``ok`` is False).
    """
    if grid == "classification":
        check_train_fields(spec)
        check_autoencoders_trained(spec)
    study_dir = Path(study_dir).resolve()
    tasks = grid_builder(grid)(spec)
    if only:
        tasks = select_only(tasks, only)
    if dry_run:
        return dry_run_text(spec, study_dir, tasks)
    init_study_dir(spec, study_dir)
    check_code_versions(study_dir, tasks, allow_mixed_code)
    status = grid_status(study_dir, tasks)
    summary = StudySummary(total=len(tasks), done_before=sum(s == "done" for s in status.values()))
    t0 = time.time()
    echo = echo or functools.partial(print, flush=True)  # a log file (nohup, sbatch) shows each line at once
    ex = spec.executor
    claim_settings = ClaimSettings(ex.claim_heartbeat_seconds, ex.claim_stale_seconds)
    claims = Claims(study_dir, claim_settings)
    executor = make_executor(ex, study_dir, claim_settings, live=live, echo=echo)
    # a failure recorded before this run is retried; one recorded while it runs (by any runner) is final
    failed: dict[str, str] = {}
    for wave in waves(tasks):
        tried: set[str] = set()
        announced = False
        while True:
            todo, waiting = [], []
            for t in wave:
                if t.hash in failed or row_path(study_dir, t.hash).exists():
                    continue
                bad = [n for n in t.needs.values() if n in failed]
                if bad:
                    failed[t.hash] = f"blocked by {bad[0]}"
                    summary.failed.append((t.hash, t.label, f"needed task {bad[0]} failed: {failed[bad[0]]}"))
                    continue
                if claims.holder(t.hash) is not None:
                    waiting.append(t)
                    continue
                fp = failed_path(study_dir, t.hash)
                if t.hash in tried or (fp.exists() and fp.stat().st_mtime > t0):
                    if fp.exists():  # failed in another runner while this one waited: final for this run
                        reason = _failure_reason(fp)
                        failed[t.hash] = reason
                        summary.failed.append((t.hash, t.label, reason))
                        continue
                todo.append(t)
            if todo:
                results = executor.run(todo, done=summary.done_before + summary.ran, total=summary.total,
                                       failed=len(summary.failed))
                for t in todo:
                    tried.add(t.hash)
                    reason = results.get(t.hash)
                    if reason is None:
                        summary.ran += 1
                    elif reason not in (CLAIMED, DONE_ELSEWHERE):
                        summary.failed.append((t.hash, t.label, reason))
                        failed[t.hash] = reason
                continue
            if not waiting:
                break
            if not announced:
                announced = True
                echo(f"waiting for {len(waiting)} task(s) held by another runner: "
                     f"{', '.join(t.hash for t in waiting[:3])}{' ...' if len(waiting) > 3 else ''}")
            # the holder finishes (row), fails (failed file) or dies (stale claim: taken over in the next pass)
            time.sleep(min(ex.poll_seconds, claim_settings.heartbeat_seconds))
    summary.elsewhere = sum(row_path(study_dir, t.hash).exists() for t in tasks) - summary.done_before - summary.ran
    summary.seconds = time.time() - t0
    return summary


def _failure_reason(path: Path) -> str:
    try:
        return read_json(path).get("reason", "failed")
    except (OSError, ValueError):
        return "failed"


def format_summary(summary: StudySummary, rerun: str) -> str:
    """Final summary; failed tasks with their reason and the command that re-runs one of them."""
    by_others = f", {summary.elsewhere} by another runner" if summary.elsewhere else ""
    lines = [f"study finished in {summary.seconds:.0f} s: {summary.done_before + summary.ran + summary.elsewhere}/"
             f"{summary.total} tasks done ({summary.ran} run now, {summary.done_before} already done{by_others}), "
             f"{len(summary.failed)} failed"]
    for h, label, reason in summary.failed:
        lines.append(f"  FAILED {h} {label}: {reason}")
    if summary.failed:
        lines.append(f"re-run one failed task: {rerun} --only {summary.failed[0][0]}  "
                     f"(details in failed/<hash>.json; a plain re-run retries all)")
    return "\n".join(lines)
