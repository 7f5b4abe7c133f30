"""Classifier builders (timm ResNet / ConvNeXt with small-input stems) and FiLM noise conditioning."""

from .classifiers import CLASSIFIERS, Classifier, CosineLinear, create_classifier, plan_strides
from .film import CLEAN, FourierEmbedding, NoiseConditioned, NoiseSchedule

__all__ = ["CLASSIFIERS", "Classifier", "CosineLinear", "create_classifier", "plan_strides",
           "CLEAN", "FourierEmbedding", "NoiseConditioned", "NoiseSchedule"]
