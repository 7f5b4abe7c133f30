"""Study specification: the grid of datasets x autoencoders x spaces x variants x folds x seeds, the
training settings every cell shares, and where the cells run (local processes or Slurm).

A spec is YAML validated with pydantic; any problem becomes one line that names the file and the field,
e.g. ``study.yaml: datasets[1]: unknown dataset 'foo'. Fix: ...``. Presets ship as package data in
``latentgap/presets/*.yaml`` (``demo``, ``shared-data``, ``paper``).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_serializer, model_validator)

from ..defaults import AE_TRAIN_DEFAULTS as _AE
from ..errors import UserError

from ..latents.spaces import SPACES  # noqa: E402  (the one list of spaces)

Space = Literal[SPACES]  # type: ignore[valid-type]
IMAGE_AE = "none"  # autoencoder value of image-space cells and rows (they need no autoencoder)
VARIANTS = ("plain", "noise-conditioned", "distilled", "tuned")


# --------------------------------------------------------------------------- name checks

def check_dataset_spec(spec: str) -> str:
    """The dataset forms of ``latentgap.data.open_dataset`` (docs/architecture.md), checked by the data module
    itself without opening anything."""
    from ..data import check_dataset_name

    return check_dataset_name(spec)


def check_autoencoder_spec(spec: str) -> str:
    """Registry name, hub id (``owner/name``) or an existing path; the registry is consulted when built."""
    s = spec.strip()
    if "/" in s or Path(s).expanduser().exists():
        return s
    try:
        from ..autoencoders import AUTOENCODERS  # registry of the autoencoder module, when present
    except ImportError:
        return s
    if s.split(":")[0] not in AUTOENCODERS:  # "medvae:<model>:<modality>" carries options after ':'
        raise ValueError(f"unknown autoencoder '{s}' (known: {', '.join(AUTOENCODERS.names())}; "
                         "or a hub id owner/name, or a local path)")
    return s


DatasetName = Annotated[str, AfterValidator(check_dataset_spec)]
AutoencoderName = Annotated[str, AfterValidator(check_autoencoder_spec)]


# --------------------------------------------------------------------------- models

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlurmSettings(_Strict):
    """Resources of one array task (one cell); passed to submitit's ``update_parameters``."""

    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(2, ge=1)
    mem_gb: float = Field(8.0, gt=0)
    time_min: int = Field(120, ge=2)  # submitit signals USR2 90 s before the limit: < 2 min fires at once
    array_parallelism: int = Field(64, ge=1)
    account: str | None = None
    additional: dict[str, Any] = Field(default_factory=dict)  # extra sbatch options (slurm_additional_parameters)


class ExecutorSettings(_Strict):
    kind: Literal["local", "slurm"] = "local"
    workers: int = Field(1, ge=1)  # local: parallel worker processes (1 = sequential, in-process)
    poll_seconds: float = Field(2.0, gt=0)
    # claims (several runners on one folder): heartbeat of a running task, and when a silent claim is stale
    claim_heartbeat_seconds: float = Field(10.0, gt=0)
    claim_stale_seconds: float = Field(60.0, gt=0)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)

    @model_validator(mode="after")
    def _claims(self) -> "ExecutorSettings":
        if self.claim_stale_seconds < 3 * self.claim_heartbeat_seconds:
            raise _FieldError(("claim_stale_seconds",), "must be at least 3 x claim_heartbeat_seconds (a live "
                                                       "runner would otherwise look dead between two heartbeats)")
        return self


class CacheSettings(_Strict):
    """Arguments of ``latentgap.latents.ensure_cache`` shared by every autoencoder x dataset pair."""

    dtype: Literal["float16", "float32"] = "float16"
    # one side for every dataset, or {dataset: side} for some (e.g. 28 px data under a x8 autoencoder)
    resize: int | dict[str, int] | None = None
    grey_to_rgb: bool = True
    batch_size: int = Field(64, ge=1)
    # encode-time views (latentgap.latents.views): the cache stores latents and reconstructions of each view of
    # every image, and a training sample of every space draws the same view (images view(x), reconstructions
    # decode(encode(view(x))), latents encode(view(x))) -- augmentation that means the same thing in all three.
    # [identity] turns views off: then images and reconstructions are flipped and shifted, latents are not.
    views: list[str] = Field(default_factory=lambda: ["identity", "hflip"])


    @field_validator("views")
    @classmethod
    def _views(cls, v):
        from ..latents.views import check_views

        try:
            return list(check_views(v))
        except Exception as err:  # UserError -> a field error naming cache.views
            raise ValueError(str(err)) from None

    @field_validator("resize")
    @classmethod
    def _side(cls, v):
        sides = v.values() if isinstance(v, dict) else [] if v is None else [v]
        if any(side < 8 for side in sides):
            raise ValueError("resize sides must be >= 8")
        return v


def resize_for(cache: dict[str, Any], dataset: str) -> int | None:
    """The resize side of ``dataset`` under the study's cache settings (a dict maps datasets to sides)."""
    r = cache.get("resize")
    return r.get(dataset) if isinstance(r, dict) else r


class AETrainSettings(_Strict):
    """Training of the built-in autoencoder before the study encodes with it
    (``latentgap.autoencoders.train_autoencoder``: unsupervised, reconstruction + KL; labels are never read).

    ``data`` names the images it trains on:

    * ``fold`` (default): one autoencoder per fold, trained on that fold's *training part* only — it never sees
      the fold's validation or test images (no leak into the fidelity numbers or the classifiers' test parts);
    * ``all``: one autoencoder per dataset on every image of it, test images included (transductive, like a
      domain-adapted AE); rows are marked ``ae_in_sample`` and the report says "in-sample";
    * another dataset spec (e.g. a phantom with another ``seed``: disjoint images from the same
      distribution): one autoencoder shared by every study dataset. Images must have the study dataset's
      size and channels.

    ``null`` (the former default) means ``all``.
    """

    data: Literal["fold", "all"] | DatasetName | None = "fold"
    # defaults: latentgap.defaults.AE_TRAIN_DEFAULTS (the library and `latentgap ae train` share them)
    steps: int = Field(_AE["steps"], ge=1)
    batch_size: int = Field(_AE["batch_size"], ge=1)
    lr: float = Field(_AE["lr"], gt=0)
    width: int = Field(_AE["width"], ge=8, multiple_of=8)
    depth: int = Field(_AE["depth"], ge=1)
    latent_channels: int = Field(_AE["latent_channels"], ge=1)
    downsample: Literal[2, 4, 8, 16] = _AE["downsample"]
    attention: bool = _AE["attention"]
    kl_weight: float = Field(_AE["kl_weight"], ge=0)
    loss: Literal["l1", "mse"] = _AE["loss"]
    perceptual_weight: float = Field(_AE["perceptual_weight"], ge=0)
    seed: int = _AE["seed"]
    checkpoint_every: int = Field(_AE["checkpoint_every"], ge=1)
    crop: int | None = Field(None, ge=2)  # train on random crops of this side (cheaper steps on large images)


class AutoencoderEntry(_Strict):
    """One autoencoder of the grid: a name / hub id / path, optionally trained by the study first.

    Written as a plain string when it is only a name (``taef2``), or as a mapping
    ``{name: kl-builtin, label: kl-small, train: {steps: 800, width: 16}}``.
    """

    name: AutoencoderName
    label: str | None = Field(None, pattern=r"^[A-Za-z0-9_.+-]+$")  # row / report name (default: name)
    train: AETrainSettings | None = None

    @model_validator(mode="after")
    def _trainable(self) -> "AutoencoderEntry":
        if self.train is not None and self.name != "kl-builtin":
            raise _FieldError(("train",), f"the study trains only the built-in 'kl-builtin' autoencoder, not "
                                          f"'{self.name}' (fine-tune it with `latentgap ae finetune` and list the "
                                          "output folder as a path)")
        return self

    @property
    def key(self) -> str:
        """The autoencoder's name in rows, caches of the report and ``--dry-run``."""
        return self.label or self.name

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # a bare name stays a bare name in study.yaml (and in the hashes derived from it)
        return self.name if self.label is None and self.train is None else handler(self)


class SynthTrainSettings(_Strict):
    """The generator of each fold (``latentgap.synth.train.SynthConfig`` fields; data and fold come from the grid)."""

    backbone: Literal["dit", "unet"] = "dit"
    size: Literal["tiny", "small", "base", "large"] = "tiny"
    objective: Literal["flow", "vpred"] = "flow"
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    label_dropout: float = Field(0.1, ge=0, lt=1)
    ema_decay: float = Field(0.999, gt=0, lt=1)
    seed: int = 0
    checkpoint_every: int = Field(200, ge=1)


class SynthSampleSettings(_Strict):
    """What each fold's generator samples (``latentgap synth sample``): a plan, a sampler, guidance, a filter."""

    fill: bool = True  # fill every class up to the majority count of the fold's training part (the default plan)
    per_class: int | None = Field(None, ge=1)  # or N of every class
    ratio: float | None = Field(None, gt=0)  # or R synthetic per real image of each class
    steps: int = Field(50, ge=1)
    sampler: Literal["auto", "euler", "ddim", "dpm++"] = "auto"
    cfg_scale: float = Field(1.0, ge=0)
    guide: bool = False  # classifier guidance by the study's noise-conditioned latent cell of the fold
    guide_scale: float = Field(1.0, ge=0)
    filter: bool = False  # keep samples the study's plain latent cell of the fold accepts
    threshold: float = Field(0.5, ge=0, le=1)
    max_tries: int = Field(20, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _one_plan(self) -> "SynthSampleSettings":
        if self.per_class is not None or self.ratio is not None:
            self.fill = False
        if (self.per_class is not None) + (self.ratio is not None) + self.fill != 1:
            raise _FieldError(("per_class",), "give exactly one plan: fill, per_class or ratio")
        return self


class SynthEvalSettings(_Strict):
    """Evaluation of each fold's synthetic dataset: utility cells, fidelity and privacy (docs/synthesis.md)."""

    utility: list[Literal["tstr", "augmented"]] = Field(default_factory=lambda: ["tstr", "augmented"])
    utility_spaces: list[Space] = Field(default_factory=lambda: ["image"])
    fidelity: bool = True  # fidelity (random-conv and image-classifier features) and privacy figures per fold
    copy_quantile: float = Field(0.01, gt=0, lt=0.5)


class SynthSettings(_Strict):
    """Latent diffusion synthesis per fold: a generator on the fold's training part, then a synthetic dataset."""

    train: SynthTrainSettings = Field(default_factory=SynthTrainSettings)
    sample: SynthSampleSettings = Field(default_factory=SynthSampleSettings)
    evaluate: SynthEvalSettings | None = None  # None: generate only
    on: dict[Literal["datasets", "autoencoders"], list[str]] = Field(default_factory=dict)


class SegSettings(_Strict):
    """Segmentation with latent diffusion (docs/segmentation.md): per dataset x fold, the U-Net baseline and the
    diffusion segmenters on the same folds (``latentgap.seg``); rows of kind ``seg``."""

    datasets: list[str] = Field(min_length=1)  # segmentation sets: kvasir_seg_128, busi_seg_128, a .npz, folder, CSV
    methods: list[Literal["unet", "latent", "pixel"]] = Field(default_factory=lambda: ["unet", "latent"], min_length=1)
    k: int = Field(3, ge=2)  # folds grouped by ids, stratified by empty mask (independent of the classification k)
    folds: list[int] | None = None
    split_seed: int = 0
    resize: int | None = Field(None, ge=8)  # resize images (bilinear) and masks (nearest) to N x N first
    unet: dict[str, Any] = Field(default_factory=dict)  # latentgap.seg.baseline.UNetConfig fields
    segmenter: dict[str, Any] = Field(default_factory=dict)  # latentgap.seg.segmenter.SegmenterConfig fields

    @model_validator(mode="after")
    def _checked(self) -> "SegSettings":
        for where, settings in (("unet", self.unet), ("segmenter", self.segmenter)):
            for key in ("dataset", "fold", "k", "split_seed", "image_size", "space", "device"):
                if key in settings:
                    raise _FieldError(("seg", where, key), "is set by the grid (seg.datasets, seg.k, seg.methods, "
                                      "seg.resize, device), not by method settings")
        if self.folds is not None and any(not 0 <= f < self.k for f in self.folds):
            raise _FieldError(("seg", "folds"), f"folds must lie in 0..{self.k - 1}")
        return self

    @property
    def fold_ids(self) -> list[int]:
        return list(range(self.k)) if self.folds is None else sorted(set(self.folds))


class StudySpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    datasets: list[DatasetName] = Field(default_factory=list)  # classification sets (a seg-only study has none)
    autoencoders: list[AutoencoderEntry] = Field(default_factory=list)
    spaces: list[Space] = Field(default_factory=lambda: list(SPACES), min_length=1)
    # non-plain variants are latent-space classifiers (the paper's Table 4 ablation)
    variants: list[Literal["plain", "noise-conditioned", "distilled", "tuned"]] = Field(
        default_factory=lambda: ["plain"], min_length=1)
    # restrict the non-plain variants to some datasets / autoencoders (an ablation on a subset of the grid);
    # keys ``datasets`` and ``autoencoders``, each a list; a missing key means all of them
    variants_on: dict[Literal["datasets", "autoencoders"], list[str]] = Field(default_factory=dict)
    k: int = Field(5, ge=2)  # number of cross-validation folds (splits shared by every cell)
    folds: list[int] | None = None  # which folds to run (default all k)
    split_seed: int = 0
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)  # TrainConfig fields shared by every cell
    # per-space overrides of ``train`` (e.g. a small ResNet for images, a ConvNeXt for latents)
    space_train: dict[Space, dict[str, Any]] = Field(default_factory=dict)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    device: str = "auto"
    examples: int = Field(6, ge=0, le=32)  # originals/reconstructions saved per pair for the report figure
    # beside every image-space cell, the same architecture and budget with the plain, strong recipe
    # (variant "baseline": class-weighted cross-entropy, one-cycle schedule); the report says when it beats
    # the study's own recipe -- a gap measured against an under-fitted baseline is not a gap
    baseline_check: bool = True
    # the architecture-matched control: image and reconstruction cells (variant "matched") trained with the
    # latent space's own model and settings behind a patch stem that maps images to the latent grid, paired
    # with the plain latent cells -- separates "space" from "architecture" (needs a ConvNeXt latent model)
    matched_control: bool = False
    # `latentgap probe` per dataset x autoencoder on the study's own cache and folds (docs/probe.md): the cheap
    # candidate scores beside the measured gap in the report; an int sets the images of the geometric measures
    probe: bool | int = False
    # latent diffusion synthesis per dataset x autoencoder x fold (docs/synthesis.md); None: no synthesis
    synth: SynthSettings | None = None
    # segmentation per dataset x fold: U-Net baseline and diffusion segmenters (docs/segmentation.md); None: none
    seg: SegSettings | None = None

    @field_validator("autoencoders", mode="before")
    @classmethod
    def _names_to_entries(cls, v: Any) -> Any:
        return [{"name": e} if isinstance(e, str) else e for e in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _consistent(self) -> "StudySpec":
        if not self.datasets and self.seg is None:
            raise _FieldError(("datasets",), "give at least one dataset (or a seg: section for a segmentation study)")
        if self.folds is not None:
            bad = [f for f in self.folds if not 0 <= f < self.k]
            if bad:
                raise _FieldError(("folds",), f"fold {bad[0]} is outside 0..{self.k - 1} (k={self.k})")
        needs_ae = bool(self.datasets) and (any(s != "image" for s in self.spaces) or any(v != "plain" for v in self.variants))
        if needs_ae and not self.autoencoders:
            raise _FieldError(("autoencoders",), "recon/latent spaces or non-plain variants need at least one autoencoder")
        for dup_field in ("datasets", "autoencoders", "seeds"):
            vals = getattr(self, dup_field)
            if dup_field == "autoencoders":
                vals = [e.key for e in vals]
            if len(set(vals)) != len(vals):
                raise _FieldError((dup_field,), "contains duplicates")
        for key, known in (("datasets", self.datasets), ("autoencoders", [e.key for e in self.autoencoders])):
            for name in self.variants_on.get(key, []):
                if name not in known:
                    raise _FieldError(("variants_on", key), f"'{name}' is not one of the study's {key} {known}")
        if self.synth is not None:
            for key, known in (("datasets", self.datasets), ("autoencoders", [e.key for e in self.autoencoders])):
                for name in self.synth.on.get(key, []):
                    if name not in known:
                        raise _FieldError(("synth", "on", key), f"'{name}' is not one of the study's {key} {known}")
            if self.synth.sample.guide and "noise-conditioned" not in self.variants:
                raise _FieldError(("synth", "sample", "guide"), "guidance uses the study's noise-conditioned latent "
                                  "cells: add noise-conditioned to variants")
            if self.synth.sample.filter and "latent" not in self.spaces:
                raise _FieldError(("synth", "sample", "filter"), "filtering uses the study's plain latent cells: add "
                                  "latent to spaces")
            if not self.autoencoders:
                raise _FieldError(("synth",), "synthesis needs an autoencoder")
        for where, settings in [("train", self.train)] + [(f"space_train.{s}", t) for s, t in self.space_train.items()]:
            for key in ("dataset", "autoencoder", "space", "fold", "seed", "variant", "views"):
                if key in settings:
                    raise _FieldError(tuple(where.split(".")) + (key,), "is set by cache.views, not by train settings"
                                      if key == "views" else "is set by the grid, not by train settings")
        return self

    def runs_variants(self, dataset: str, autoencoder: str) -> bool:
        """Whether the non-plain variants run on this dataset x autoencoder (``variants_on``)."""
        return (dataset in self.variants_on.get("datasets", [dataset])
                and autoencoder in self.variants_on.get("autoencoders", [autoencoder]))

    @property
    def fold_ids(self) -> list[int]:
        return list(range(self.k)) if self.folds is None else sorted(set(self.folds))


class _FieldError(ValueError):
    """A cross-field problem that knows which field it belongs to."""

    def __init__(self, loc: tuple, msg: str):
        self.loc, self.msg = loc, msg
        super().__init__(msg)


# --------------------------------------------------------------------------- loading

def _loc(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _one_line(source: str, err: ValidationError, data: Any = None) -> UserError:
    e = err.errors()[0]
    ctx_err = (e.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _FieldError):
        loc, msg = tuple(e["loc"]) + ctx_err.loc, ctx_err.msg  # a nested model's check is relative to it
    else:
        loc, msg = e["loc"], e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "literal_error":
            msg = f"{msg}, got {e['input']!r}"
    loc = tuple(loc)
    if loc[:1] == ("autoencoders",) and loc[-1:] == ("name",) and len(loc) == 3 and isinstance(data, dict):
        entries = data.get("autoencoders")
        if isinstance(entries, list) and loc[1] < len(entries) and isinstance(entries[loc[1]], str):
            loc = loc[:2]  # the user wrote a bare name, not a mapping: point at the entry itself
    more = f" (and {len(err.errors()) - 1} more problems)" if len(err.errors()) > 1 else ""
    return UserError(f"{source}: {_loc(loc)}: {msg}{more}",
                     "correct that field (the spec format is in docs/studies.md)")


def spec_from_dict(data: Any, source: str = "study spec") -> StudySpec:
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a YAML mapping at the top level", "see docs/studies.md for an example")
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as err:
        raise _one_line(source, err, data) from None
    return spec


def check_autoencoders_trained(spec: StudySpec, source: str = "study spec") -> None:
    """A bare ``kl-builtin`` has fresh random weights every time it is built: every cache and cell of a
    study would see another autoencoder. Studies must train it (``train:``) or load a trained folder."""
    for i, ae in enumerate(spec.autoencoders):
        if ae.name == "kl-builtin" and ae.train is None:
            raise UserError(f"{source}: autoencoders[{i}]: 'kl-builtin' without train settings is an untrained, "
                            "randomly initialised network",
                            "write it as {name: kl-builtin, train: {steps: 600}} (trained by the study), or list "
                            "the folder of a `latentgap ae train` run")


def check_train_fields(spec: StudySpec, source: str = "study spec") -> None:
    """Unknown or ill-typed ``train`` settings are caught before the study starts, not in every cell."""
    from ..train import TrainConfig

    if spec.seg is not None:
        _check_seg_fields(spec.seg, source)
    if not spec.datasets:
        return
    known = set(TrainConfig.model_fields)
    for where, settings in [("train", {})] + [(f"space_train.{s}", t) for s, t in spec.space_train.items()]:
        merged = {**spec.train, **settings}
        for key in merged:
            if key not in known:
                prefix = where if key in settings else "train"
                raise UserError(f"{source}: {prefix}.{key}: unknown training setting",
                                f"use one of: {', '.join(sorted(known))}")
        try:
            TrainConfig(dataset=spec.datasets[0], **merged)
        except ValidationError as err:
            e = err.errors()[0]
            prefix = where if e["loc"] and e["loc"][0] in settings else "train"
            raise UserError(f"{source}: {prefix}.{_loc(e['loc'])}: {e['msg']} (got {e.get('input')!r})",
                            "correct that training setting (see latentgap.train.TrainConfig)") from None


def _check_seg_fields(seg: SegSettings, source: str) -> None:
    from ..seg.baseline import UNetConfig
    from ..seg.segmenter import SegmenterConfig

    for where, cls, settings in (("seg.unet", UNetConfig, seg.unet), ("seg.segmenter", SegmenterConfig, seg.segmenter)):
        try:
            cls(dataset="x", **settings)
        except ValidationError as err:
            e = err.errors()[0]
            raise UserError(f"{source}: {where}.{_loc(e['loc'])}: {e['msg']}",
                            f"use the fields of {cls.__module__}.{cls.__name__}") from None


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"study spec '{path}' not found", "pass a YAML file or use --preset demo")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path.name}:{where} is not valid YAML", "fix the YAML syntax") from None
    return spec_from_dict(data, path.name)


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("latentgap.presets").iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> StudySpec:
    names = preset_names()
    if name not in names:
        raise UserError(f"unknown preset '{name}'", f"use one of: {', '.join(names)}")
    text = resources.files("latentgap.presets").joinpath(f"{name}.yaml").read_text()
    return spec_from_dict(yaml.safe_load(text), f"preset {name}")


def spec_to_yaml(spec: StudySpec) -> str:
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def with_overrides(spec: StudySpec, **overrides: Any) -> StudySpec:
    """Executor settings from the command line (None = keep the spec's value); re-validated."""
    data = spec.model_dump(mode="json")
    ex = data["executor"]
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("kind", "workers"):
            ex[key] = value
        else:
            ex["slurm"][key] = value
    return spec_from_dict(data, "command line")
