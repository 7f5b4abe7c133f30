"""Claims: several runners on one study folder split the work instead of repeating it.

Before a task runs, its runner *claims* it: ``STUDY_DIR/claims/<hash>.json`` names the owner (host, pid, a
random token) and its modification time is the owner's heartbeat, refreshed by a background thread while the
task runs. Another runner skips a claimed task and waits for its row. A claim is *stale* — and is taken over —
when its owner is a dead process on this host (seen at once, e.g. after SIGKILL) or its heartbeat is older than
``stale_seconds`` (an owner on another machine that died). Claim decisions are made under a short
``flock`` on ``claims/.mutex``, so two runners never both take the same task; the kernel releases that lock
when a process dies, and on NFS ``flock`` is mapped to POSIX locks.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = socket.gethostname()


@dataclass(frozen=True)
class ClaimSettings:
    heartbeat_seconds: float = 10.0  # how often a running task refreshes its claim
    stale_seconds: float = 60.0      # a claim not refreshed for this long belongs to a dead runner


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM  # exists, owned by someone else
    return True


class Claims:
    """The claims of one study folder, seen from one process."""

    def __init__(self, study_dir: str | os.PathLike, settings: ClaimSettings = ClaimSettings()):
        self.dir = Path(study_dir) / "claims"
        self.settings = settings

    def path(self, task_hash: str) -> Path:
        return self.dir / f"{task_hash}.json"

    @contextmanager
    def _mutex(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".mutex", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read(self, task_hash: str) -> tuple[dict, float] | None:
        p = self.path(task_hash)
        try:
            owner = json.loads(p.read_text())
            return owner, p.stat().st_mtime
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):
            return {}, 0.0  # unreadable: treat as stale

    def holder(self, task_hash: str) -> dict | None:
        """The owner of a live claim on ``task_hash``, or None when it is unclaimed or the claim is stale."""
        got = self._read(task_hash)
        if got is None:
            return None
        owner, mtime = got
        if owner.get("host") == HOST and isinstance(owner.get("pid"), int) and not _pid_alive(owner["pid"]):
            return None
        if time.time() - mtime > self.settings.stale_seconds:
            return None
        return owner

    def try_claim(self, task_hash: str) -> dict | None:
        """Claim ``task_hash`` for this process: the claim (owner record) or None if someone else holds it."""
        with self._mutex():
            if self._read(task_hash) is not None:
                if self.holder(task_hash) is not None:
                    return None
                self.path(task_hash).unlink(missing_ok=True)  # stale: take it over
            owner = {"host": HOST, "pid": os.getpid(), "token": uuid.uuid4().hex, "since": time.time()}
            fd = os.open(self.path(task_hash), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump(owner, f)
            return owner

    def release(self, task_hash: str, owner: dict) -> None:
        """Remove the claim if it is still ``owner``'s (a runner that was taken over leaves the new claim)."""
        with self._mutex():
            got = self._read(task_hash)
            if got is not None and got[0].get("token") == owner["token"]:
                self.path(task_hash).unlink(missing_ok=True)

    def _beat(self, task_hash: str, owner: dict) -> bool:
        got = self._read(task_hash)
        if got is None or got[0].get("token") != owner["token"]:
            return False
        try:
            os.utime(self.path(task_hash))
        except FileNotFoundError:
            return False
        return True

    @contextmanager
    def held(self, task_hash: str):
        """Claim ``task_hash`` for the duration of the block, with a heartbeat thread; yields False (and
        runs nothing of its own) when another live runner holds it."""
        owner = self.try_claim(task_hash)
        if owner is None:
            yield False
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.settings.heartbeat_seconds):
                if not self._beat(task_hash, owner):
                    return

        t = threading.Thread(target=beat, name=f"claim-{task_hash}", daemon=True)
        t.start()
        try:
            yield True
        finally:
            stop.set()
            t.join()
            self.release(task_hash, owner)
