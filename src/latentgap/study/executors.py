"""Executors: where study tasks run. Local (in-process, or N worker processes) and Slurm job arrays
through submitit (https://github.com/facebookincubator/submitit).

Every executor calls the same picklable ``tasks.run_task`` in its workers, with the task kind's function
resolved here; the worker claims the task, runs it and writes the row, so the parent can die at any time
without losing finished work. ``run(tasks)`` returns ``{hash: None}`` for success, ``{hash: CLAIMED}`` for a
task another runner holds, or ``{hash: reason}`` for failure, and never waits forever: a Slurm job
that is cancelled or killed comes back from submitit as ``UncompletedJobError`` (this needs Slurm
accounting, i.e. ``sacct``; see docs/studies.md).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

from rich.live import Live
from rich.table import Table

from ..errors import UserError
from ..progress import console
from ..storage import atomic_write_json
from .claims import ClaimSettings
from .spec import ExecutorSettings
from .tasks import CLAIMED, DONE_ELSEWHERE, Task, failed_path, one_line, run_task, task_kind


class LiveView:
    """Done / running / failed counts with time left (rich Live on a terminal, one line per task otherwise)."""

    def __init__(self, total: int, done: int, parallel: int, live: bool | None, echo, failed: int = 0) -> None:
        self.total, self.done, self.parallel, self.echo = total, done, max(1, parallel), echo
        self.running, self.failed, self.durations, self.t0 = 0, failed, [], time.time()
        self.live = Live(self._render(), console=console, refresh_per_second=2, transient=False) \
            if (console.is_terminal if live is None else live) else None

    def _eta(self) -> str:
        if not self.durations:
            return "?"
        left = self.total - self.done - self.failed
        secs = sum(self.durations) / len(self.durations) * left / self.parallel
        return time.strftime("%H:%M:%S", time.gmtime(secs))

    def _render(self) -> Table:
        tab = Table(title="latentgap study", show_header=True)
        for col in ("done", "running", "failed", "pending", "elapsed", "time left"):
            tab.add_column(col)
        pending = self.total - self.done - self.failed - self.running
        tab.add_row(f"{self.done}/{self.total}", str(self.running), str(self.failed), str(max(pending, 0)),
                    time.strftime("%H:%M:%S", time.gmtime(time.time() - self.t0)), self._eta())
        return tab

    def __enter__(self) -> "LiveView":
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def update(self, running: int | None = None) -> None:
        if running is not None:
            self.running = running
        if self.live:
            self.live.update(self._render())

    def finished(self, task: Task, seconds: float | None, reason: str | None) -> None:
        if reason in (CLAIMED, DONE_ELSEWHERE):
            if not self.live:
                self.echo(f"[{self.done + self.failed}/{self.total}] {task.hash} {task.label}: {reason}")
            return
        if reason is None:
            self.done += 1
            if seconds is not None:
                self.durations.append(seconds)
        else:
            self.failed += 1
        if not self.live:
            state = "ok" if reason is None else f"FAILED ({reason})"
            self.echo(f"[{self.done + self.failed}/{self.total}] {task.hash} {task.label}: {state}")
        self.update()


class LocalExecutor:
    """Sequential in this process (workers=1) or a pool of ``workers`` spawned processes."""

    def __init__(self, settings: ExecutorSettings, study_dir: Path, claims: ClaimSettings, live, echo):
        self.workers, self.study_dir, self.claims, self.live_flag, self.echo = (settings.workers, study_dir, claims,
                                                                               live, echo)

    def run(self, tasks: list[Task], done: int, total: int, failed: int = 0) -> dict[str, str | None]:
        results: dict[str, str | None] = {}
        if not tasks:
            return results
        with LiveView(total, done, self.workers, self.live_flag, self.echo, failed) as view:
            if self.workers == 1:
                for t in tasks:
                    view.update(running=1)
                    t0 = time.time()
                    try:
                        results[t.hash] = _status(run_task(self.study_dir, t, task_kind(t.kind), self.claims))
                    except Exception as e:
                        results[t.hash] = one_line(e, 300)
                    view.finished(t, time.time() - t0, results[t.hash])
                view.update(running=0)
                return results
            # spawn, not fork: torch and its thread pools are not fork-safe
            ctx = mp.get_context("spawn")
            threads = max(1, (os.cpu_count() or 1) // self.workers)
            with ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_limit_threads,
                                     initargs=(threads,)) as pool:
                futs = {pool.submit(run_task, self.study_dir, t, task_kind(t.kind), self.claims): (t, time.time())
                        for t in tasks}
                pending = set(futs)
                while pending:
                    view.update(running=min(self.workers, len(pending)))
                    finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    for f in finished:
                        t, t0 = futs[f]
                        err = f.exception()
                        if err is None:
                            results[t.hash] = _status(f.result())
                        else:
                            results[t.hash] = one_line(err, 300)
                        view.finished(t, time.time() - t0, results[t.hash])
            view.update(running=0)
        return results


def _status(out) -> str | None:
    """None for a task this runner ran; CLAIMED / DONE_ELSEWHERE when another runner has or had it."""
    return out if isinstance(out, str) and out in (CLAIMED, DONE_ELSEWHERE) else None


def _die_with_parent() -> None:
    """Linux: a worker gets SIGTERM when the runner that started it dies (killed runner, no orphaned cells that
    keep training into a folder nobody watches). Elsewhere a no-op: the pool's own shutdown covers normal exits."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG = 1
        except OSError:
            pass


def _limit_threads(n: int) -> None:
    _die_with_parent()
    # workers share the cores instead of oversubscribing them. The variables are read by BLAS / OpenMP when
    # first loaded; torch may already be imported by the time this initializer runs (unpickling it imports
    # this module), so its intra-op pool is set directly too -- the thread count changes the numbers.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch

    torch.set_num_threads(n)


class SlurmExecutor:
    """One submitit job array per stage; each array task runs one task and writes its row."""

    def __init__(self, settings: ExecutorSettings, study_dir: Path, claims: ClaimSettings, live, echo,
                 cluster: str | None = None):
        self.s, self.study_dir, self.claims, self.live_flag, self.echo = settings, study_dir, claims, live, echo
        self.cluster = cluster  # None = Slurm (sbatch on PATH); "local"/"debug" are submitit's own fallbacks

    def _executor(self):
        import submitit

        folder = self.study_dir / "slurm" / time.strftime("%Y%m%d-%H%M%S") / "%j"
        ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        sl = self.s.slurm
        params = dict(name="latentgap", timeout_min=sl.time_min, cpus_per_task=sl.cpus_per_task, mem_gb=sl.mem_gb,
                      gpus_per_node=sl.gpus_per_node, slurm_array_parallelism=sl.array_parallelism)
        if sl.partition:
            params["slurm_partition"] = sl.partition
        if sl.account:
            params["slurm_account"] = sl.account
        if sl.additional:
            params["slurm_additional_parameters"] = dict(sl.additional)
        ex.update_parameters(**params)
        return ex

    def run(self, tasks: list[Task], done: int, total: int, failed: int = 0) -> dict[str, str | None]:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        results: dict[str, str | None] = {}
        if not tasks:
            return results
        if self.cluster is None and not _which("sbatch"):
            raise UserError("--executor slurm needs Slurm, but sbatch is not on PATH",
                            "run on a Slurm login node, or use --executor local")
        ex = self._executor()
        n = len(tasks)
        try:
            jobs = ex.map_array(run_task, [str(self.study_dir)] * n, tasks, [task_kind(t.kind) for t in tasks],
                                [self.claims] * n)
        except FailedJobError as e:  # sbatch refused the array (memory, partition, time limit...)
            reason = " ".join(ln.strip() for ln in str(e).splitlines() if "sbatch: error" in ln) or one_line(e, 300)
            raise UserError(f"Slurm refused the job array: {reason}",
                            "fit executor.slurm (mem_gb, partition, time_min, gpus_per_node) to what the cluster offers "
                            "(sinfo -o '%P %m %l %G' lists it)") from None
        self.echo(f"submitted {n} tasks as Slurm array {jobs[0].job_id.split('_')[0]} "
                  f"(logs in {Path(jobs[0].paths.folder)})")
        todo = dict(zip(tasks, jobs))
        with LiveView(total, done, min(self.s.slurm.array_parallelism, n), self.live_flag, self.echo,
                      failed) as view:
            while todo:
                running = 0
                for t, job in list(todo.items()):
                    if not job.done():
                        running += job.state == "RUNNING"
                        continue
                    try:
                        results[t.hash] = _status(job.result())
                    except (UncompletedJobError, FailedJobError) as e:
                        results[t.hash] = _job_reason(e, job)
                        if not failed_path(self.study_dir, t.hash).exists():
                            atomic_write_json(failed_path(self.study_dir, t.hash),
                                              {"task": t.label, "reason": results[t.hash], "job_id": job.job_id,
                                               "at": time.time()})
                    view.finished(t, None, results[t.hash])
                    del todo[t]
                view.update(running=running)
                if todo:
                    time.sleep(self.s.poll_seconds)
        return results


def _job_reason(err: Exception, job) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    # the last line of a FailedJobError is the worker's exception; UncompletedJobError names the Slurm state
    tail = next((ln for ln in reversed(lines) if "Error" in ln or "CANCELLED" in ln or "state" in ln), lines[0] if lines else "")
    return f"Slurm job {job.job_id} ({job.state}): {tail}"[:300]


def _which(cmd: str) -> bool:
    import shutil

    return shutil.which(cmd) is not None


def make_executor(settings: ExecutorSettings, study_dir: Path, claims: ClaimSettings, *, live=None, echo=print):
    if settings.kind == "slurm":
        return SlurmExecutor(settings, study_dir, claims, live, echo)
    return LocalExecutor(settings, study_dir, claims, live, echo)
