"""Runner: idempotent cells, SIGKILL + resume gives identical rows, dry-run, failures and --only.

The tasks are the toy kinds of ``toy_tasks.py`` (registered from the tests): a real (scikit-learn) fit on
seeded synthetic features that is cheap and deterministic, so these tests exercise the runner without data
or autoencoders, on the classification grid's hashes and dependencies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toy_tasks import toy_grid

from latentgap.errors import UserError
from latentgap.study import run_study, spec_from_dict
from latentgap.study.runner import format_summary

VOLATILE = {"task_seconds"}
TESTS = Path(__file__).resolve().parent


def _spec(**kw):
    base = dict(name="toy", datasets=["phantom:n=60", "phantom:n=70"], autoencoders=["taef2"], k=3,
                seeds=[0], train={}, baseline_check=False)
    return spec_from_dict({**base, **kw})


def _rows(study: Path) -> dict[str, dict]:
    out = {}
    for f in (study / "rows").glob("*.json"):
        r = json.loads(f.read_text())
        out[f.stem] = {k: v for k, v in r.items() if k not in VOLATILE}
    return out


def _calls(study: Path) -> dict[str, int]:
    # run folders end with the task hash: <dataset>-<ae>-<space>-<variant>-f<k>-s<seed>-<hash>
    return {p.parent.name.rsplit("-", 1)[1]: len(p.read_text().splitlines()) for p in (study / "runs").glob("*/calls.log")}


def test_finished_cells_are_not_rerun(tmp_path):
    spec = _spec()
    s1 = run_study(spec, tmp_path, grid=toy_grid, echo=lambda *_: None)
    assert s1.ok and s1.ran == s1.total == 2 + 2 * 3 * 3 and s1.done_before == 0
    calls = _calls(tmp_path)
    assert len(calls) == 18 and set(calls.values()) == {1}
    s2 = run_study(spec, tmp_path, grid=toy_grid, echo=lambda *_: None)
    assert s2.ran == 0 and s2.done_before == s2.total
    assert _calls(tmp_path) == calls  # no cell was called again
    rows = _rows(tmp_path)
    res = [r for r in rows.values() if r["kind"] == "result"]
    assert {r["space"] for r in res} == {"image", "recon", "latent"}
    assert all(0 <= r["bacc"] <= 1 and r["run_dir"].endswith(r["task_hash"]) for r in res)
    assert sum(r["kind"] == "fidelity" for r in rows.values()) == 2


def test_other_spec_in_same_folder_is_refused(tmp_path):
    run_study(_spec(), tmp_path, grid=toy_grid, echo=lambda *_: None)
    with pytest.raises(UserError, match="holds a different study"):
        run_study(_spec(seeds=[0, 1]), tmp_path, grid=toy_grid, echo=lambda *_: None)
    # executor settings may change between runs of the same study
    run_study(_spec(executor={"workers": 2}), tmp_path, grid=toy_grid, echo=lambda *_: None)


_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from toy_tasks import toy_grid
from latentgap.study import run_study, spec_from_dict
spec = spec_from_dict({spec!r})
s = run_study(spec, sys.argv[1], grid=toy_grid, live=False)
sys.exit(0 if s.ok else 1)
"""


def test_sigkill_midway_then_resume_equals_uninterrupted(tmp_path):
    spec_dict = dict(name="kill", datasets=["phantom:n=60", "phantom:n=70"], autoencoders=["taef2"], k=3,
                     seeds=[0], train={"sleep": 0.2}, baseline_check=False)
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(spec=spec_dict, tests=str(TESTS)))
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen([sys.executable, str(script), str(killed)], stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((killed / "rows").glob("*.json"))) < 8:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = {f.stem for f in (killed / "rows").glob("*.json")}
    assert 8 <= len(done_at_kill) < 20, "the study must be killed midway"
    for f in (killed / "rows").glob("*.json"):  # a row is whole or absent (a killed write leaves only a temp file)
        json.loads(f.read_text())
    subprocess.run([sys.executable, str(script), str(killed)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, str(script), str(ref)], check=True, stdout=subprocess.DEVNULL)
    assert _rows(killed) == _rows(ref) and len(_rows(ref)) == 20
    calls = _calls(killed)
    for h in done_at_kill:
        if h.startswith("c"):
            assert calls[h] == 1, f"finished cell {h} was trained twice"
    assert sum(n > 1 for n in calls.values()) <= 1  # at most the one cell that was running when killed


def test_dry_run_lists_grid_and_status(tmp_path, capsys):
    from latentgap.cli import main

    spec = _spec()
    text = run_study(spec, tmp_path, dry_run=True, grid=toy_grid)
    assert "2 toy-prepare tasks, 18 toy-classifier tasks" in text and "pending 20 of 20" in text
    assert not (tmp_path / "rows").exists()  # a dry run writes nothing
    only = [ln.split()[0] for ln in text.splitlines() if " latent plain fold 1 " in ln][0]
    s = run_study(spec, tmp_path, only=[only], grid=toy_grid, echo=lambda *_: None)
    assert s.ran == 2  # the cell and the cache task it needs
    text = run_study(spec, tmp_path, dry_run=True, grid=toy_grid)
    line = [ln for ln in text.splitlines() if ln.startswith(only)][0]
    assert line.split()[1] == "done" and "done 2, failed 0, pending 18 of 20" in text
    yaml_path = tmp_path / "s.yaml"
    yaml_path.write_text(json.dumps(spec.model_dump(mode="json")))  # JSON is YAML
    # the real grid has the same hashes: the CLI's dry run sees what the toy run finished
    main(["study", str(yaml_path), "--out", str(tmp_path), "--dry-run"])
    out = capsys.readouterr().out
    assert "0 autoencoder trainings, 2 cache/fidelity tasks, 18 cells" in out
    assert f"{only} done" in out.replace("  ", " ").replace("  ", " ")
    with pytest.raises(UserError, match="matches no task"):
        run_study(spec, tmp_path, only=["zzz"], dry_run=True, grid=toy_grid)


def test_failed_cells_are_reported_with_rerun_command(tmp_path):
    spec = _spec(train={"fail_on": "latent"})
    s = run_study(spec, tmp_path, grid=toy_grid, echo=lambda *_: None)
    assert len(s.failed) == 6 and all("toy failure" in reason for _, _, reason in s.failed)
    failed = {p.stem for p in (tmp_path / "failed").glob("*.json")}
    assert failed == {h for h, _, _ in s.failed}
    text = format_summary(s, "latentgap study s.yaml --out X")
    assert "6 failed" in text and f"latentgap study s.yaml --out X --only {s.failed[0][0]}" in text
    assert s.ran == s.total - 6


@pytest.mark.slow
def test_local_worker_pool_gives_same_rows(tmp_path):
    run_study(_spec(), tmp_path / "seq", grid=toy_grid, echo=lambda *_: None)
    s = run_study(_spec(executor={"workers": 2}), tmp_path / "pool", grid=toy_grid, echo=lambda *_: None)
    assert s.ok and s.ran == 20
    assert _rows(tmp_path / "seq") == _rows(tmp_path / "pool")


def test_rows_of_other_code_are_not_mixed_in_silently(tmp_path):
    spec = _spec(datasets=["phantom:n=60"])
    run_study(spec, tmp_path, grid=toy_grid, echo=lambda *_: None)
    rows = sorted((tmp_path / "rows").glob("c*.json"))
    assert all(json.loads(f.read_text())["code_version"] for f in rows)
    old = json.loads(rows[0].read_text())
    old["code_version"] = "0.0.1+feedfacecafe"  # a row made by other code
    rows[0].write_text(json.dumps(old))
    rows[1].unlink()  # a task left to do
    with pytest.raises(UserError, match=r"holds rows made by other code \(1 by 0.0.1\+feedfacecafe"):
        run_study(spec, tmp_path, grid=toy_grid, echo=lambda *_: None)
    s = run_study(spec, tmp_path, grid=toy_grid, echo=lambda *_: None, allow_mixed_code=True)
    assert s.ok and s.ran == 1
    from latentgap.reports import build_report

    assert "more than one version of the code" in build_report(tmp_path)["md"].read_text()


def test_pool_workers_use_their_share_of_the_cores():
    """A pool worker runs with cores / workers intra-op threads even though torch is imported before its
    initializer runs (the thread count changes the numbers; a demo once ran with 2 threads per worker)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from latentgap.study.executors import _limit_threads

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_limit_threads, initargs=(1,)) as pool:
        assert pool.submit(_torch_threads).result() == 1


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def test_pool_workers_die_with_their_runner(tmp_path):
    """A killed runner leaves no worker training on (Linux: PR_SET_PDEATHSIG in the pool initializer)."""
    import signal
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "worker.pid"
    code = f"""
import multiprocessing as mp, os, time
from latentgap.study.executors import _limit_threads
def work():
    _limit_threads(1)
    open({str(pid_file)!r}, "w").write(str(os.getpid()))
    time.sleep(60)
if __name__ == "__main__":
    p = mp.get_context("spawn").Process(target=work)
    p.start()
    time.sleep(60)
"""
    script = tmp_path / "runner.py"
    script.write_text(code)
    runner = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while not pid_file.exists() and time.time() < deadline:
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    runner.send_signal(signal.SIGKILL)
    runner.wait()
    for _ in range(50):  # the worker gets SIGTERM as soon as its parent is gone
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        raise AssertionError("the worker outlived its killed runner")
