"""Distillation teacher for latent classifiers (learnability-gap paper, "Distillation from image space").

The teacher is an image-space classifier (ResNet-50 by default) trained on *reconstructions* of the same
fold, or one trained on the images; either way it is applied to the *reconstructions* of the student's
samples (DESIGN.md: the teacher sees what the latent encodes). The latent student learns
``CE + alpha * T^2 * KL(teacher || student)``. The teacher's logits on the
fold's training part are computed once (clean inputs, no augmentation) and cached beside the teacher run
with a small manifest (dataset fingerprint, autoencoder, splits digest, fold), so every student variant
and seed of that fold reuses them. A teacher made for another dataset, fold or autoencoder is refused.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..storage import atomic_write_bytes, atomic_write_json, read_json
from .config import DEFAULT_MODEL, TrainConfig
from .loop import Batches


def teacher_config(cfg: TrainConfig) -> TrainConfig:
    """The reconstruction-space run that serves as ``cfg``'s teacher (same data, AE, folds, seed)."""
    # student-only settings go back to their defaults, so every student of a fold shares one teacher
    student_only = [k for k in TrainConfig.model_fields
                    if k.startswith(("noise_", "film_", "distill_", "hpo_", "teacher_"))]
    defaults = {k: TrainConfig.model_fields[k].get_default(call_default_factory=True) for k in student_only}
    return cfg.model_copy(update={
        **defaults, "space": "recon", "variant": "plain", "model": cfg.teacher_model or DEFAULT_MODEL["recon"], "model_kwargs": {},
        "noise_cond": False, "distill": False, "hpo": False, "distill_teacher": None, "augment": "auto",
        "epochs": cfg.teacher_epochs or cfg.epochs,
    }).resolved()


def ae_identity(cache, name: str | None) -> dict:
    """Name and weights hash of the autoencoder behind ``cache`` (what a teacher must share)."""
    if cache is None:
        return {"autoencoder": name, "autoencoder_sha256": None}
    info = cache.manifest.get("autoencoder", {})
    return {"autoencoder": info.get("name", name), "autoencoder_sha256": info.get("weights_sha256")}


def _check_teacher(row: dict, want: dict, teacher_dir: Path) -> None:
    if row.get("space") not in ("recon", "image"):
        raise UserError(f"teacher {teacher_dir} is a {row.get('space')}-space run", "use a reconstruction-space run")
    checks = [("dataset_fingerprint", "dataset"), ("splits_digest", "folds"), ("fold", "fold")]
    if row.get("space") == "recon":
        checks += [("autoencoder", "autoencoder"), ("autoencoder_sha256", "autoencoder weights")]
    for key, what in checks:
        if row.get(key) != want[key]:
            raise UserError(f"teacher {teacher_dir} was trained for another {what} ({key} {row.get(key)!r}, "
                            f"this run {want[key]!r})",
                            "pass a teacher trained on the same dataset, autoencoder and fold, or omit --teacher")


def teacher_logits(cfg: TrainConfig, ds, splits, cache, student_train, teacher_dir: Path) -> torch.Tensor:
    """(n_train, K) teacher logits aligned with the student's training part (computed once per fold).

    Args:
        cfg: the student's resolved config.
        ds, splits, cache: the student's dataset, folds and latent cache (the teacher reads ``cache.recon``).
        student_train: the student's training SpaceDataset (its ``indices`` fix the row order).
        teacher_dir: a finished image- or reconstruction-space run folder of the same dataset, folds and fold.
    """
    from ..device import resolve_device
    from ..latents import space_dataset
    from .load import load_run

    want = {"dataset_fingerprint": ds.fingerprint(), "splits_digest": splits.digest(), "fold": cfg.fold,
            **ae_identity(cache, cfg.autoencoder)}
    teacher_dir = Path(teacher_dir)
    if not (teacher_dir / "result.json").is_file():
        raise UserError(f"teacher folder {teacher_dir} holds no finished run (no result.json)",
                        "pass the --out folder of a finished `latentgap train --space recon` run")
    row = read_json(teacher_dir / "result.json")
    _check_teacher(row, want, teacher_dir)

    out, manifest = teacher_dir / f"logits-fold{cfg.fold}-train.npy", teacher_dir / f"logits-fold{cfg.fold}-train.json"
    idx_digest = _digest(student_train.indices)
    if manifest.exists():
        m = read_json(manifest)
        for key, val in {**want, "indices_digest": idx_digest}.items():
            if m.get(key) != val:
                raise UserError(f"cached teacher logits {out} were made for another {key} ({m.get(key)!r} vs {val!r})",
                                "use a teacher made for this dataset, autoencoder and fold")
        return torch.from_numpy(np.load(out))

    space = row["space"]
    part = space_dataset("recon", ds, cache, splits, cfg.fold, "train")  # image or recon teacher: reconstructions
    assert np.array_equal(part.indices, student_train.indices), "teacher and student rows must align"
    device = resolve_device(cfg.device)
    model = load_run(teacher_dir, device=device).model
    chunks = []
    with torch.no_grad():
        for x, _ in Batches(part, 256):
            chunks.append(model(x.to(device)).float().cpu())
    logits = torch.cat(chunks).numpy().astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, logits)
    atomic_write_bytes(out, buf.getvalue())
    atomic_write_json(manifest, {**want, "indices_digest": idx_digest, "part": "train", "n": len(logits),
                                 "teacher_config_hash": row.get("config_hash"), "teacher_space": space})
    return torch.from_numpy(logits)


def _digest(idx: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(idx, dtype=np.int64).tobytes()).hexdigest()[:16]
