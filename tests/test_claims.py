"""Several runners on one study folder: every task runs once, a dead runner's claims are taken over, and a
study with a failed task exits non-zero."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latentgap.study.claims import ClaimSettings, Claims

TESTS = Path(__file__).resolve().parent
VOLATILE = {"task_seconds"}

_RUNNER = """
import sys
sys.path.insert(0, {tests!r})
from toy_tasks import toy_grid
from latentgap.study import run_study, spec_from_dict
s = run_study(spec_from_dict({spec!r}), sys.argv[1], grid=toy_grid, live=False)
print("SUMMARY", s.ran, s.elsewhere, len(s.failed), flush=True)
sys.exit(0 if s.ok else 1)
"""


def _spec_dict(**kw):
    base = dict(name="claims", datasets=["phantom:n=60", "phantom:n=70"], autoencoders=["taef2"], k=3, seeds=[0],
                baseline_check=False,
                train={"sleep": 0.3}, executor={"poll_seconds": 0.2, "claim_heartbeat_seconds": 0.5,
                                                "claim_stale_seconds": 5})
    return {**base, **kw}


def _rows(study: Path) -> dict[str, dict]:
    return {f.stem: {k: v for k, v in json.loads(f.read_text()).items() if k not in VOLATILE}
            for f in (study / "rows").glob("*.json")}


def _calls(study: Path) -> dict[str, int]:
    return {p.parent.name.rsplit("-", 1)[1]: len(p.read_text().splitlines())
            for sub in ("runs", "pairs") for p in (study / sub).glob("*/calls.log")}


def _runner(tmp_path: Path, study: Path, spec: dict) -> subprocess.Popen:
    script = tmp_path / "runner.py"
    script.write_text(_RUNNER.format(tests=str(TESTS), spec=spec))
    return subprocess.Popen([sys.executable, str(script), str(study)], stdout=subprocess.PIPE, text=True)


def test_claim_is_exclusive_and_released(tmp_path):
    a, b = Claims(tmp_path), Claims(tmp_path)
    owner = a.try_claim("c1")
    assert owner and owner["pid"] == os.getpid()
    assert b.try_claim("c1") is None and b.holder("c1")["token"] == owner["token"]
    a.release("c1", owner)
    assert b.holder("c1") is None and b.try_claim("c1") is not None


def test_stale_claims_are_taken_over(tmp_path):
    c = Claims(tmp_path, ClaimSettings(heartbeat_seconds=0.1, stale_seconds=0.5))
    # a claim of a process that no longer exists on this host is stale at once
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    c.dir.mkdir(parents=True, exist_ok=True)
    c.path("c2").write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout), "token": "x"}))
    assert c.holder("c2") is None and c.try_claim("c2")["token"] != "x"
    # a claim from another machine is stale when its heartbeat stops
    c.path("c3").write_text(json.dumps({"host": "elsewhere", "pid": 1, "token": "y"}))
    assert c.holder("c3") is not None
    old = time.time() - 1.0
    os.utime(c.path("c3"), (old, old))
    assert c.holder("c3") is None and c.try_claim("c3")["token"] != "y"


def test_heartbeat_keeps_a_long_task_claimed(tmp_path):
    c = Claims(tmp_path, ClaimSettings(heartbeat_seconds=0.1, stale_seconds=0.5))
    other = Claims(tmp_path, ClaimSettings(heartbeat_seconds=0.1, stale_seconds=0.5))
    with c.held("c4") as mine:
        assert mine
        time.sleep(1.2)  # longer than stale_seconds: only the heartbeat keeps it live
        other.dir  # another process's view of the same folder
        assert other.holder("c4") is not None
        with other.held("c4") as theirs:
            assert not theirs
    assert not c.path("c4").exists()


def test_two_runners_split_the_work_and_match_a_single_runner(tmp_path):
    spec = _spec_dict()
    shared, single = tmp_path / "shared", tmp_path / "single"
    procs = [_runner(tmp_path, shared, spec) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = [int(next(ln for ln in o.splitlines() if ln.startswith("SUMMARY")).split()[1]) for o in outs]
    assert sum(ran) == 20 and min(ran) > 0, f"both runners must work and together run every task once: {ran}"
    calls = _calls(shared)
    assert len(calls) == 20 and set(calls.values()) == {1}, "a task ran twice"
    ref = _runner(tmp_path, single, spec)
    assert ref.wait(timeout=300) == 0
    assert _rows(shared) == _rows(single) and len(_rows(single)) == 20
    assert not list((shared / "claims").glob("*.json")), "claims are released when tasks finish"


def test_runner_killed_while_holding_a_claim_is_taken_over(tmp_path):
    spec = _spec_dict(train={"sleep": 1.5})
    study = tmp_path / "s"
    first = _runner(tmp_path, study, spec)
    deadline = time.time() + 120
    while time.time() < deadline and not list((study / "claims").glob("c*.json")):
        time.sleep(0.05)
    assert list((study / "claims").glob("c*.json")), "the first runner never claimed a cell"
    second = _runner(tmp_path, study, spec)  # runs beside the first, then outlives it
    time.sleep(0.3)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    # what the dead runner still holds: its claim files without a row
    held = [p.stem for p in (study / "claims").glob("c*.json")
            if json.loads(p.read_text())["pid"] == first.pid and not (study / "rows" / f"{p.stem}.json").exists()]
    assert held, "the runner must be killed inside a task"
    out = second.communicate(timeout=300)[0]
    assert second.returncode == 0, out
    rows = _rows(study)
    assert len(rows) == 20 and all(h in rows for h in held)
    callers = {p.parent.name.rsplit("-", 1)[1]: [int(ln.split()[0]) for ln in p.read_text().splitlines()]
               for p in (study / "runs").glob("*/calls.log")}
    assert all(callers[h][-1] == second.pid for h in held), "the other runner takes over the dead runner's task"
    assert all(len(pids) == 1 for h, pids in callers.items() if h not in held), "no other task ran twice"
    assert not list((study / "claims").glob("*.json"))


def test_failed_task_makes_the_study_exit_nonzero(tmp_path):
    proc = _runner(tmp_path, tmp_path / "s", _spec_dict(train={"fail_on": "latent"}))
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 1 and "SUMMARY 14 0 6" in out


def test_cli_exits_nonzero_when_a_cell_fails(tmp_path, capsys):
    """A real study whose cell fails (a class with fewer samples than folds cannot be stratified): the
    console script's exit status is 1 (it used to be 0: click returned the status instead of exiting)."""
    from latentgap.cli import main

    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({
        "name": "fails", "datasets": ["phantom:n=24,size=16,classes=3,imbalance=20"], "spaces": ["image"],
        "k": 3, "folds": [0], "baseline_check": False, "train": {"epochs": 1, "model": "resnet18", "batch_size": 8, "precise_bn_batches": 0,
                                        "model_kwargs": {"channels": [8, 8, 8, 8]}}, "device": "cpu"}))
    with pytest.raises(SystemExit) as e:
        main(["study", str(spec), "--out", str(tmp_path / "out"), "--no-report"])
    assert e.value.code == 1
    out = capsys.readouterr().out
    assert "1 failed" in out and "fewer than the 3 folds" in out


@pytest.mark.slow
def test_two_cli_runners_on_a_real_study(tmp_path):
    """Two `latentgap study` commands started at once on one folder (real, tiny training): each task is run by
    exactly one of them (the other reports it as held or finished elsewhere), both exit 0, and the rows equal
    a single runner's."""
    spec = tmp_path / "s.yaml"
    spec.write_text(json.dumps({
        "name": "two", "datasets": ["phantom:n=60,size=16,classes=2,imbalance=2,feature=intensity"],
        "spaces": ["image"], "k": 3, "seeds": [0, 1], "device": "cpu",
        "executor": {"poll_seconds": 0.5, "claim_heartbeat_seconds": 1, "claim_stale_seconds": 10},
        "train": {"epochs": 1, "batch_size": 16, "pretrained": "false", "precise_bn_batches": 0, "model": "resnet18",
                  "model_kwargs": {"channels": [8, 8, 8, 8]}}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = lambda out: ["latentgap", "study", str(spec), "--out", str(out), "--no-report"]
    procs = [subprocess.Popen(cmd(tmp_path / "shared"), stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ran = [{ln.split()[1] for ln in o.splitlines() if ln.startswith("[") and ln.endswith(": ok")} for o in outs]
    assert not ran[0] & ran[1], "a task was run by both runners"
    assert len(ran[0] | ran[1]) == 12 and ran[0] and ran[1]  # (plain + baseline) x 3 folds x 2 seeds, both worked
    single = subprocess.run(cmd(tmp_path / "single"), capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stdout
    vol = {"task_seconds", "train_seconds", "seconds_per_epoch"}
    rows = lambda d: {f.stem: {k: v for k, v in json.loads(f.read_text()).items() if k not in vol}
                      for f in (d / "rows").glob("*.json")}
    assert rows(tmp_path / "shared") == rows(tmp_path / "single")
