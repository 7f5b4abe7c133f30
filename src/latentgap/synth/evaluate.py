"""Fidelity and privacy of one synthetic dataset against the real fold it came from (one call, one row).

Used by the study's ``synth-eval`` task and by ``latentgap synth eval`` (external synthetic sets). Real reference:
the fold's *training part* (what the generator learnt from); held-out reference: the fold's *test part*.

* fidelity, overall and per class, in each feature space given (``fidelity.py``);
* copies (``privacy.copies``) in pixel L2, in each feature space (cosine) and, with latents, latent L2;
* membership inference against the generator (``privacy.denoising_losses``), when a generator is given;
* a gallery of the closest synthetic-training pairs (PNG bytes).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

from ..data.synthetic import check_image_shape
from ..errors import UserError
from .fidelity import extract, fidelity
from .privacy import copies, denoising_losses, membership_auc


def _check_pair(real, syn) -> None:
    check_image_shape(syn, real)
    y = np.asarray(syn.labels)
    if y.ndim != 1 and y.shape[1:] != (1,):
        raise UserError("synthetic labels must be one class per image", "give single-label synthetic data")
    bad = np.setdiff1d(np.unique(y), np.arange(real.num_classes))
    if len(bad):
        raise UserError(f"synthetic label {bad[0]} is not a class of the real dataset (0..{real.num_classes - 1})",
                        "label synthetic images with the real dataset's class ids or names")


def gallery_png(syn_imgs: np.ndarray, train_imgs: np.ndarray, dist: np.ndarray, title: str, n: int = 8) -> bytes:
    """The ``n`` synthetic images closest to a training image, each above its nearest training image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(dist)[:n]
    fig, axes = plt.subplots(2, len(order), figsize=(1.2 * max(len(order), 1), 2.7), squeeze=False)
    for j, i in enumerate(order):
        for r, img in enumerate((syn_imgs[i], train_imgs[i])):
            ax = axes[r, j]
            ax.imshow(img.squeeze(), cmap="gray" if img.ndim == 2 or img.shape[-1] == 1 else None, vmin=0, vmax=255)
            ax.axis("off")
        axes[0, j].set_title(f"{dist[i]:.3g}", fontsize=6)
    axes[0, 0].text(-2, 10, "synthetic", fontsize=6, ha="right")
    axes[1, 0].text(-2, 10, "nearest\ntraining", fontsize=6, ha="right")
    fig.suptitle(title, fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def evaluate_synthetic(real, train_idx: np.ndarray, test_idx: np.ndarray, syn, features: dict[str, torch.nn.Module],
                       *, generator=None, train_latents: torch.Tensor | None = None,
                       test_latents: torch.Tensor | None = None, syn_latents: np.ndarray | None = None,
                       quantile: float = 0.01, nearest_k: int = 5, device: str = "cpu") -> dict[str, Any]:
    """One row of fidelity and privacy figures (see the module docstring) and the gallery PNG (key ``gallery``).

    Args:
        real: the real dataset; train_idx / test_idx: the fold's training / test part.
        syn: the synthetic dataset (``latentgap.data.open_dataset`` of a synthetic folder or an external set).
        features: name -> feature module (images float [0, 1] -> (B, d)).
        generator: a :class:`~latentgap.synth.sample.Generator` for membership inference (None: skipped).
        train_latents, test_latents: the fold's real latents in the generator's normalised coordinates (membership
            test, latent copies); syn_latents: the synthetic latents in the same coordinates (latent copies).
    """
    _check_pair(real, syn)
    y_syn = np.asarray(syn.labels).reshape(-1)
    y_real = np.asarray(real.labels).reshape(-1)
    real_tr = real.load_uint8(train_idx)
    real_te = real.load_uint8(test_idx)
    syn_imgs = syn.load_uint8(np.arange(len(syn)))
    row: dict[str, Any] = {"n_synthetic": int(len(syn)), "n_real_train": int(len(train_idx)),
                           "n_real_test": int(len(test_idx))}
    fid: dict[str, Any] = {}
    for name, module in features.items():
        f_tr, f_te, f_syn = (extract(module, a, device=device) for a in (real_tr, real_te, syn_imgs))
        fid[name] = {"overall": fidelity(f_tr, f_syn, nearest_k=nearest_k)}
        for c in range(real.num_classes):
            a, b = f_tr[y_real[train_idx] == c], f_syn[y_syn == c]
            if min(len(a), len(b)) >= nearest_k + 2:
                fid[name][f"class {c}"] = fidelity(a, b, nearest_k=nearest_k, kid_subsets=20)
        cp = copies(f_syn, f_tr, f_te, metric="cosine", quantile=quantile)
        row[f"copy_rate_{name}_cosine"] = cp["copy_rate"]
        row[f"copy_ratio_{name}_cosine"] = cp["ratio"]
    row["fidelity"] = fid
    pix = copies(syn_imgs.astype(np.float32) / 255, real_tr.astype(np.float32) / 255, real_te.astype(np.float32) / 255,
                 metric="l2", quantile=quantile)
    row.update({"copy_rate_pixel_l2": pix["copy_rate"], "copy_ratio_pixel_l2": pix["ratio"],
                "copy_threshold_pixel_l2": pix["threshold"], "copy_quantile": quantile,
                "median_nn_pixel_l2_synthetic": pix["median_synthetic"], "median_nn_pixel_l2_heldout": pix["median_heldout"]})
    row["gallery"] = gallery_png(syn_imgs, real_tr[pix["nearest_train"]], pix["d_synthetic"],
                                 "closest synthetic / training pairs (pixel L2)")
    if syn_latents is not None and train_latents is not None and test_latents is not None:
        lat = copies(syn_latents, train_latents.numpy(), test_latents.numpy(), metric="l2", quantile=quantile)
        row.update({"copy_rate_latent_l2": lat["copy_rate"], "copy_ratio_latent_l2": lat["ratio"]})
    if generator is not None and train_latents is not None and test_latents is not None:
        lm = denoising_losses(generator, train_latents, torch.as_tensor(y_real[train_idx]))
        ln = denoising_losses(generator, test_latents, torch.as_tensor(y_real[test_idx]))
        row.update({f"mia_{k}": v for k, v in membership_auc(-lm, -ln).items()})
    else:
        row["mia_skipped"] = "no generator: membership inference needs the generator's denoising loss"
    return row
