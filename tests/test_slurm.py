"""The Slurm executor for real: a study runs as a submitit job array on the single-node Slurm started by
``.ci/slurm-up.sh`` (see /work/shared/slurm/README.md); its rows equal the local executor's, and a cell
whose job is cancelled with scancel is reported as failed instead of being waited on forever."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cloudpickle
import pytest
import toy_tasks
from toy_tasks import toy_grid

from latentgap.study import run_study, spec_from_dict

# the toy task functions live in tests/, which a Slurm worker cannot import: ship them by value
cloudpickle.register_pickle_by_value(toy_tasks)

pytestmark = pytest.mark.slurm

SLURM = {"partition": "debug", "cpus_per_task": 1, "mem_gb": 0.25, "time_min": 5, "array_parallelism": 2}


def _slurm_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return res.returncode == 0 and bool({"idle", "mixed", "allocated"} & set(res.stdout.split()))


@pytest.fixture(scope="module")
def slurm():
    """A running single-node Slurm: the one `.ci/run` started, or (as root on Debian) one started here with
    `.ci/slurm-up.sh` and stopped again with `.ci/slurm-down.sh` when these tests end."""
    if _slurm_up():
        yield
        return
    ci = Path(__file__).resolve().parents[1] / ".ci"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("no Slurm controller answers: start a local Slurm first with `.ci/slurm-up.sh` (as root, "
                    "Debian) or deselect these tests with -m 'not slurm'")
    up = subprocess.run(["bash", str(ci / "slurm-up.sh")], capture_output=True, text=True)
    if up.returncode != 0 or not _slurm_up():
        subprocess.run(["bash", str(ci / "slurm-down.sh")], capture_output=True)
        pytest.fail(f"`.ci/slurm-up.sh` could not start Slurm: {up.stderr.strip()[-500:]}")
    try:
        yield
    finally:
        subprocess.run(["bash", str(ci / "slurm-down.sh")], capture_output=True)


def _rows(study):
    out = {}
    for f in (study / "rows").glob("*.json"):
        r = json.loads(f.read_text())
        r.pop("task_seconds")
        out[f.stem] = r
    return out


def _spec(executor, **kw):
    return spec_from_dict({"name": "slurm-toy", "datasets": ["phantom:n=60"], "autoencoders": ["taef2"], "k": 2, "baseline_check": False,
                           "seeds": [0], "executor": executor, **kw})


def test_job_array_rows_equal_local_rows(slurm, tmp_path):
    local = run_study(_spec({"kind": "local"}), tmp_path / "local", grid=toy_grid, echo=lambda *_: None)
    msgs = []
    s = run_study(_spec({"kind": "slurm", "poll_seconds": 1, "slurm": SLURM}), tmp_path / "slurm", grid=toy_grid,
                  echo=msgs.append, live=False)
    assert s.ok and s.ran == local.ran == 1 + 3 * 2
    # tasks run as job arrays, one per wave (prepare + image cells, then recon/latent cells that need the cache)
    submitted = [int(m.split()[1]) for m in msgs if m.startswith("submitted ") and "Slurm array" in m]
    assert sum(submitted) == 7 and max(submitted) > 1
    assert _rows(tmp_path / "slurm") == _rows(tmp_path / "local")
    logs = list((tmp_path / "slurm" / "slurm").rglob("*_log.out"))
    assert len(logs) >= 7  # one log per array task (1 prepare + 6 cells)


def test_cancelled_job_is_reported_failed(slurm, tmp_path):
    spec = _spec({"kind": "slurm", "poll_seconds": 1, "slurm": SLURM}, spaces=["image"], folds=[0],
                 train={"sleep": 600})
    result = {}
    t = threading.Thread(target=lambda: result.update(s=run_study(spec, tmp_path, grid=toy_grid,
                                                                  echo=lambda *_: None, live=False)))
    t0 = time.time()
    t.start()
    job = None
    while time.time() - t0 < 90 and job is None:
        time.sleep(1)
        q = subprocess.run(["squeue", "-h", "-n", "latentgap", "-t", "RUNNING", "-o", "%i"], capture_output=True,
                           text=True).stdout.split()
        # this study's job (its log is <jobid>_<task>_log.out), not one of an earlier test still finishing
        mine = [p.name.split("_")[0] for p in tmp_path.rglob("*_log.out")]
        running = [j for j in q if j.split("_")[0] in mine]
        if running:  # running and started by submitit
            job = running[0]
    assert job, "the cell's job never started"
    subprocess.run(["scancel", job], check=True)
    t.join(timeout=120)
    assert not t.is_alive(), "a cancelled job must not be waited on forever"
    s = result["s"]
    assert s.ran == 0 and len(s.failed) == 1
    h, _, reason = s.failed[0]
    assert "CANCELLED" in reason or "Uncompleted" in reason or "cancel" in reason.lower(), reason
    assert (tmp_path / "failed" / f"{h}.json").exists() and not (tmp_path / "rows" / f"{h}.json").exists()
    assert time.time() - t0 < 200


def test_synthesis_tasks_run_as_slurm_array_tasks_like_locally(slurm, tmp_path):
    """Generator training and guided, filtered sampling (registered task kinds with real training; the sampler
    loads the fold's noise-conditioned guide and plain latent filter handed down by other array tasks) give the
    same rows on Slurm as in-process: same final loss, same synthetic counts and acceptance."""
    kw = dict(datasets=["phantom:n=60,size=32,classes=2,imbalance=1"], spaces=["latent"], folds=[0],
              variants=["plain", "noise-conditioned"],
              cache={"dtype": "float32"}, device="cpu", examples=0,
              train={"epochs": 1, "batch_size": 16, "pretrained": "false", "drw_switch_epoch": 0,
                     "model": "convnext_atto", "model_kwargs": {"dims": [8, 16, 32, 64]}},
              synth={"train": {"steps": 3, "batch_size": 8, "checkpoint_every": 3},
                     "sample": {"per_class": 2, "steps": 2, "guide": True, "guide_scale": 1.0, "filter": True,
                                "threshold": 0.0}})
    local = run_study(_spec({"kind": "local"}, **kw), tmp_path / "local", echo=lambda *_: None)
    s = run_study(_spec({"kind": "slurm", "poll_seconds": 1, "slurm": {**SLURM, "mem_gb": 1.5, "time_min": 10}}, **kw),
                  tmp_path / "slurm", echo=lambda *_: None, live=False)
    assert local.ok and s.ok, s.failed

    def synth_rows(study):
        rows = [r for r in _rows(study).values() if r["kind"] in ("generator", "synthetic")]
        keep = ("kind", "fold", "final_loss", "n", "counts", "steps", "n_train", "config_hash", "guided", "filtered",
                "acceptance")
        return sorted((tuple((k, json.dumps(r.get(k))) for k in keep) for r in rows))

    assert len(synth_rows(tmp_path / "slurm")) == 2 and synth_rows(tmp_path / "slurm") == synth_rows(tmp_path / "local")
    assert all(r["guided"] and r["filtered"] for r in _rows(tmp_path / "slurm").values() if r["kind"] == "synthetic")


def test_a_refused_submission_is_one_line(slurm, tmp_path, capsys):
    """sbatch refusing the array (here: more memory than the node has) ends the study with one line naming the
    fix, not a submitit traceback."""
    from latentgap.errors import UserError

    with pytest.raises(UserError, match="Slurm refused the job array: sbatch: error: Memory specification"):
        run_study(_spec({"kind": "slurm", "poll_seconds": 1, "slurm": {**SLURM, "mem_gb": 64}}), tmp_path, grid=toy_grid,
                  echo=lambda *_: None, live=False)
