"""``TrainConfig``: every setting of one classifier training, resolved and hashed.

Defaults are the paper's protocol (learnability-gap paper, Setup): ResNet-50 with LDAM (s = 30, largest
margin 0.5) and DRW from epoch 10 (beta = 0.9999) for image and reconstruction space, ConvNeXt-Tiny for
latents, up to 60 epochs with early stopping on validation balanced accuracy (patience 15), 5 folds.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from ..latents.spaces import SPACES
from ..storage import stable_hash

LOSSES = ("ldam", "ce", "wce")  # wce: cross-entropy with inverse-frequency class weights
# "shift" alone is for data whose classes are not mirror-symmetric (a flip turns a stripe at 60 deg into 120 deg)
AUGMENTS = ("auto", "none", "shift", "flip", "flip2", "flip+shift", "flip2+shift")
# variant names (the study's grid) and the switch each one turns on
VARIANT_SWITCHES = {"tuned": "hpo", "noise-conditioned": "noise_cond", "distilled": "distill"}
# variants that are another training recipe: "baseline" is the plain, strong recipe every study checks its
# default image-space recipe against (class-weighted cross-entropy, linear head, one-cycle schedule)
# "matched" is the architecture-matched control: images / reconstructions classified by the latent space's own
# ConvNeXt behind a patch stem that maps them to the latent grid (``stem_patch``), so only the space differs
# "tstr" trains on a synthetic dataset only (train on synthetic, test on real), "augmented" on the real training part
# plus a synthetic dataset: the utility variants of synthetic-data evaluation (``synthetic`` names the folder)
VARIANT_RECIPES = {"baseline": {"loss": "wce", "schedule": "onecycle"}, "matched": {},
                   "tstr": {"train_data": "synthetic"}, "augmented": {"train_data": "real+synthetic"}}
DEFAULT_MODEL = {"image": "resnet50", "recon": "resnet50", "latent": "convnext_tiny"}
# settings that do not change what is computed: left out of the config hash (a run may resume elsewhere)
_NOT_HASHED = ("device", "root", "cache_dir", "splits_path", "cache_batch_size", "num_workers")
# settings added after runs existed: in the hash only when not at their default, so earlier runs keep theirs
_HASHED_IF_CHANGED = {"until": "epochs", "schedule": "cosine", "views": ["identity"], "stem_patch": None,
                      "train_data": "real", "synthetic": None, "monitor": "bacc"}


def _relative_to_root(value: str | None, root: str | None) -> str | None:
    if not value or not root or not os.path.isabs(value):
        return value
    rel = os.path.relpath(os.path.realpath(value), os.path.realpath(root))
    return value if rel.startswith("..") else f"<root>/{rel}"


class TrainConfig(BaseModel):
    """One training: dataset x autoencoder x space x variant x fold x seed, and how to train."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    # what
    dataset: str
    resize: int | None = None
    autoencoder: str | None = None
    space: str = "image"
    variant: str = "auto"  # "auto" = from the switches below; or plain / noise-conditioned / distilled / tuned (+-joined)
    fold: int = Field(0, ge=0)
    seed: int = 0
    # folds (shared by every space and AE: latentgap.data.splits)
    protocol: str = "kfold"
    k: int = Field(5, ge=2)
    split_seed: int = 0
    val_fraction: float = 0.1
    splits_path: str | None = None
    # model
    model: str | None = None  # None: resnet50 for image/recon, convnext_tiny for latent
    model_kwargs: dict[str, Any] = Field(default_factory=dict)  # timm overrides, e.g. {"dims": [8, 16, 32, 64]}
    pretrained: str = "auto"  # auto | true | false | path to a weights file
    # ConvNeXt only: a patchify stem for an autoencoder of this downsampling factor, so that images reach the
    # body of the network at the latent grid (the architecture-matched control, variant "matched")
    stem_patch: int | None = Field(None, ge=1)
    # optimisation
    epochs: int = Field(60, ge=1)  # the budget; with until="converged" the ceiling
    patience: int = Field(15, ge=1)
    # "epochs": cosine schedule over `epochs` (early stopping may end it sooner); "converged": train to the
    # early-stopping point under the `epochs` ceiling, the learning rate halved whenever the monitored validation
    # metric stalls for patience // 3 epochs, so the schedule does not depend on the ceiling
    until: Literal["epochs", "converged"] = "epochs"
    # the validation metric that selects the best epoch, drives early stopping and the plateau schedule: balanced
    # accuracy (the paper's) or ROC AUC (MedMNIST's model selection)
    monitor: Literal["bacc", "auc"] = "bacc"
    # "cosine": per-epoch cosine decay; "onecycle": per-step one-cycle (warm-up to lr, then anneal; PyTorch's
    # OneCycleLR) -- the baseline recipe's schedule
    schedule: Literal["cosine", "onecycle"] = "cosine"
    precise_bn_batches: int = Field(8, ge=0)  # BatchNorm stats recomputed over N training batches before validation
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    loss: str = "ldam"
    ldam_max_margin: float = 0.5
    ldam_s: float = 30.0
    drw_switch_epoch: int | None = 10
    drw_beta: float = 0.9999
    augment: str = "auto"  # auto: see resolved() (no geometric augmentation of cached latents, ever)
    # the training part: the fold's real one, a synthetic dataset of the fold (latentgap synth sample), or both;
    # validation and test parts are always the fold's real ones
    train_data: Literal["real", "synthetic", "real+synthetic"] = "real"
    synthetic: str | None = None  # folder of a synthetic dataset made from this fold's training part
    # encode-time views a training sample draws from (latentgap.latents.views): the same augmented image in
    # every space (view(x), its reconstruction, its latent); identity only = no views
    views: list[str] = Field(default_factory=lambda: ["identity"])
    # FiLM noise conditioning (latent classifier)
    noise_cond: bool = False
    noise_schedule: str = "scaled_linear"
    noise_beta_start: float = 0.00085
    noise_beta_end: float = 0.012
    noise_timesteps: int = 1000
    noise_clean_fraction: float = Field(0.1, ge=0, le=1)
    noise_max_fraction: float = Field(1.0, gt=0, le=1)
    film_embed_dim: int = 256
    # distillation from a reconstruction-space teacher
    distill: bool = False
    distill_alpha: float = 1.0
    distill_temperature: float = 4.0
    distill_teacher: str | None = None  # a finished recon-space run folder; None: train one under <root>/teachers
    teacher_model: str | None = None
    teacher_epochs: int | None = None
    # Optuna search (inner split of the fold's training part)
    hpo: bool = False
    hpo_trials: int = Field(20, ge=1)
    hpo_epochs: int = Field(10, ge=1)
    hpo_inner_fraction: float = Field(0.2, gt=0, lt=0.5)
    # where / how
    device: str = "auto"
    root: str | None = None
    cache_dir: str | None = None
    grey_to_rgb: bool = True
    dtype: str = "float16"
    cache_batch_size: int = 64
    num_workers: int = 0

    # ------------------------------------------------------------------ resolution
    def resolved(self) -> "TrainConfig":
        """Check names (one-line UserErrors) and fill ``model``, ``variant`` and ``augment``."""
        from ..models import CLASSIFIERS

        if self.space not in SPACES:
            raise UserError(f"unknown space '{self.space}'", f"use one of: {', '.join(SPACES)}")
        if self.loss not in LOSSES:
            raise UserError(f"unknown loss '{self.loss}'", f"use one of: {', '.join(LOSSES)}")
        if self.augment not in AUGMENTS:
            raise UserError(f"unknown augmentation '{self.augment}'", f"use one of: {', '.join(AUGMENTS)}")
        from ..latents.views import check_views

        check_views(self.views)
        if self.protocol not in ("kfold", "official"):
            raise UserError(f"unknown protocol '{self.protocol}'", "use kfold or official")
        upd: dict[str, Any] = {}
        recipes = []
        if self.variant != "auto":
            for part in self.variant.split("+"):
                if part == "plain":
                    continue
                if part in VARIANT_RECIPES:
                    upd.update(VARIANT_RECIPES[part])
                    recipes.append(part)
                    continue
                if part not in VARIANT_SWITCHES:
                    raise UserError(f"unknown variant '{part}'", "use plain or a +-joined set of: "
                                    f"{', '.join([*VARIANT_SWITCHES, *VARIANT_RECIPES])}")
                upd[VARIANT_SWITCHES[part]] = True
        cfg = self.model_copy(update=upd)
        if cfg.train_data != "real" and not cfg.synthetic:
            raise UserError(f"training data '{cfg.train_data}' needs a synthetic dataset",
                            "pass --synthetic FOLDER (written by `latentgap synth sample` for this fold)")
        if cfg.train_data != "real" and cfg.distill:
            raise UserError("distillation is defined on the real training part only", "drop --distill")
        if cfg.until == "converged" and cfg.schedule == "onecycle" and "baseline" in recipes:
            # the baseline recipe keeps its one-cycle schedule, over the epoch ceiling, with the same early stopping
            cfg = cfg.model_copy(update={"until": "epochs"})
        if cfg.until == "converged" and cfg.schedule == "onecycle":
            raise UserError("a one-cycle schedule needs a fixed number of epochs, not until=converged",
                            "use --until epochs with the one-cycle schedule")
        names = recipes + [name for name, switch in VARIANT_SWITCHES.items() if getattr(cfg, switch)]
        model = cfg.model or DEFAULT_MODEL[cfg.space]
        CLASSIFIERS.get(model)  # unknown model -> UserError listing the choices
        if cfg.teacher_model:
            CLASSIFIERS.get(cfg.teacher_model)
        if cfg.space != "image" and not cfg.autoencoder:
            raise UserError(f"the {cfg.space} space needs an autoencoder", "pass --ae NAME (e.g. --ae taef2)")
        if cfg.distill and not cfg.autoencoder:
            raise UserError("distillation needs an autoencoder (the teacher sees reconstructions)", "pass --ae NAME")
        if cfg.noise_cond and not model.startswith("convnext"):
            raise UserError(f"FiLM noise conditioning needs a ConvNeXt model, not '{model}'",
                            "pass --model convnext_tiny (or another convnext_*)")
        # a flipped or shifted latent is not the latent of a flipped or shifted image (TAEF2 on ISIC-8:
        # |encode(flip x) - flip(encode x)| / |encode x| = 0.84), so cached latents get no geometric augmentation.
        # With encode-time views, the views are the augmentation of every space (the same images in all three);
        # without them, images and reconstructions get flips + shifts and latents nothing.
        augment = cfg.augment
        if augment == "auto":
            augment = "none" if cfg.space == "latent" or len(cfg.views) > 1 else "flip+shift"
        return cfg.model_copy(update={"model": model, "variant": "+".join(names) or "plain", "augment": augment})

    def config_hash(self) -> str:
        """Hash of everything that changes the result (device and folders excluded).

        An autoencoder or teacher folder inside ``root`` (a study's trained autoencoder, its recon cell)
        enters the hash relative to ``root``, so the same cell in two study folders has one hash.
        """
        d = {k: v for k, v in self.model_dump().items()
             if k not in _NOT_HASHED and not (k in _HASHED_IF_CHANGED and v == _HASHED_IF_CHANGED[k])}
        for key in ("autoencoder", "distill_teacher", "synthetic"):
            if key in d:  # (synthetic is left out of the hash when unset)
                d[key] = _relative_to_root(d[key], self.root)
        return stable_hash(d)
