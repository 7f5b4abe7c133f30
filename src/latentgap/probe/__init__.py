"""Cheap learnability scores of an autoencoder's latent space (``latentgap probe``): linear and k-NN probes in
the three spaces on the study's folds, equivariance errors, latent spectral energy and noise sensitivity."""

from .measures import equivariance_error, high_frequency_energy, latent_sensitivity, normaliser, unrelated_distance
from .probes import probe_bacc, space_features
from .run import FAMILIES, MEANING, meaning, probe_scores, run_probe
from .validate import pair_table, spearman_ci, validation_table

__all__ = ["equivariance_error", "high_frequency_energy", "latent_sensitivity", "normaliser", "unrelated_distance",
           "probe_bacc", "space_features", "FAMILIES", "MEANING", "meaning", "probe_scores", "run_probe",
           "pair_table", "spearman_ci", "validation_table"]
