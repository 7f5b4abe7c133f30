"""latentgap: measure whether an autoencoder's latent space keeps class information learnable.

Images, latents and reconstructions of the same samples are classified on identical folds; the
difference between latent-space and reconstruction-space classifiers is the *learnability gap*.
"""

__version__ = "0.1.0"
