"""One forward process for noise-conditioned classifiers, latent diffusion generators and the segmenter: the noise
schedule, the training objectives (flow matching, v-prediction) with their shared VP noise parameter, diffusers
samplers by objective, and classifier guidance in every parameterisation."""

from .schedule import CLEAN, NoiseSchedule

__all__ = ["CLEAN", "NoiseSchedule"]
