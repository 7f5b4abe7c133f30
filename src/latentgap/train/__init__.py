"""Classifier training in the three spaces: losses (LDAM-DRW, distillation, BCE), loops, metrics, runs."""

from .config import TrainConfig
from .losses import (DistillationLoss, LDAMLoss, MultiLabelBCELoss, distillation_loss, drw_weights, ldam_loss,
                     ldam_margins, multilabel_bce, multilabel_distillation_loss, pos_weights)
from .loop import (Augment, Batches, EarlyStopping, NoiseSampling, evaluate, fit, predict,
                   recalibrate_batchnorm, train_one_epoch)
from .metrics import classification_metrics, multiclass_metrics, multilabel_metrics
from .run import run_training

__all__ = ["TrainConfig", "run_training", "DistillationLoss", "LDAMLoss", "MultiLabelBCELoss", "distillation_loss",
           "drw_weights", "ldam_loss", "ldam_margins", "multilabel_bce", "multilabel_distillation_loss",
           "pos_weights", "Augment", "Batches",
           "EarlyStopping", "NoiseSampling", "evaluate", "fit", "predict", "recalibrate_batchnorm", "train_one_epoch",
           "classification_metrics", "multiclass_metrics", "multilabel_metrics"]
