"""Noise schedules shared by noise-conditioned classifiers, latent diffusion generators and the segmenter."""

from .schedule import CLEAN, NoiseSchedule

__all__ = ["CLEAN", "NoiseSchedule"]
