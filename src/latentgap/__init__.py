"""latentgap: measure whether an autoencoder's latent space keeps class information learnable.

Images, latents and reconstructions of the same samples are classified on identical folds; the
difference between latent-space and reconstruction-space classifiers is the *learnability gap*.
"""

from .version import __version__  # noqa: F401  (the public version)


def __getattr__(name: str):
    # the public entry points, imported on first use (``import latentgap`` stays light for the CLI)
    if name in ("load_run", "run_training"):
        from . import train

        return getattr(train, name)
    raise AttributeError(f"module 'latentgap' has no attribute {name!r}")
