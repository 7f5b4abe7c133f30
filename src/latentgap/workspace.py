"""Where latentgap keeps its working files when no study folder is given.

``<root>/caches/`` holds latent caches, ``<root>/splits/`` the fold files shared by every stage.
The root is ``--root``, else ``$LATENTGAP_HOME``, else ``./.latentgap``.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_root() -> Path:
    return Path(os.environ.get("LATENTGAP_HOME", ".latentgap"))


def splits_path(root: str | os.PathLike, ds, protocol: str = "kfold", k: int = 5, seed: int = 0) -> Path:
    """One splits file per dataset content and fold protocol, reused by every autoencoder and space."""
    tag = f"{protocol}-k{k}-s{seed}" if protocol == "kfold" else protocol
    return Path(root) / "splits" / f"{ds.name}-{ds.fingerprint()[:12]}-{tag}.json"
