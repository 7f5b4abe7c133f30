"""Classifier training in the three spaces: losses (LDAM-DRW, distillation, BCE), loops, metrics, runs."""

from .config import TrainConfig
from .losses import (DistillationLoss, LDAMLoss, MultiLabelBCELoss, distillation_loss, drw_weights, ldam_loss,
                     ldam_margins, multilabel_bce, multilabel_distillation_loss, pos_weights)
from .loop import (Augment, Batches, EarlyStopping, NoiseSampling, evaluate, fit, predict,
                   recalibrate_batchnorm, train_one_epoch)
from .metrics import classification_metrics, multiclass_metrics, multilabel_metrics
from .build import build_loss, build_model, build_noise, build_optimizer, place_model
from .load import InputTransform, LoadedRun, load_run
from .run import TrainInputs, open_inputs, run_training

__all__ = ["TrainConfig", "run_training", "TrainInputs", "open_inputs", "load_run", "LoadedRun", "InputTransform",
           "build_model", "build_loss", "build_optimizer", "build_noise", "place_model", "DistillationLoss", "LDAMLoss", "MultiLabelBCELoss", "distillation_loss",
           "drw_weights", "ldam_loss", "ldam_margins", "multilabel_bce", "multilabel_distillation_loss",
           "pos_weights", "Augment", "Batches",
           "EarlyStopping", "NoiseSampling", "evaluate", "fit", "predict", "recalibrate_batchnorm", "train_one_epoch",
           "classification_metrics", "multiclass_metrics", "multilabel_metrics"]
