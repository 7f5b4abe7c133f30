"""Small file helpers shared by every stage: atomic writes, hashing, shared-data lookup.

(Named ``storage`` rather than ``io`` so that it never shadows the standard library's ``io``.)

Finished results, caches and checkpoints are never half-written: everything goes to a temporary
name in the same directory and is renamed into place (``os.replace`` is atomic on POSIX).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

PathLike = str | os.PathLike


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: PathLike) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """Short sha256 of a JSON-serialisable object (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def shared_data_dir() -> Path:
    """Where the real weights and datasets live: ``$LATENTGAP_SHARED_DATA``, else the first ``shared/data``
    folder found in the working directory or one of its parents (this project's CI clones the repository
    beside ``shared/``, so ``../shared/data`` from the repository root). Independent of where the package
    is installed. When none exists, the path that was looked for first is returned (messages name it)."""
    env = os.environ.get("LATENTGAP_SHARED_DATA")
    if env:
        return Path(env)
    cwd = Path.cwd()
    for folder in (cwd, *cwd.parents):
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return cwd / "shared" / "data"


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the model hub answers (False at once when ``HF_HUB_OFFLINE`` is set): a quick check so that an
    offline machine does not spend ~50 s in the hub client's retries before falling back or failing. The network
    is asked once per process (loading one model reads its config and its weights)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return False
    return _answers(host, timeout)


@functools.lru_cache(maxsize=None)
def _answers(host: str, timeout: float) -> bool:
    import socket

    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False
