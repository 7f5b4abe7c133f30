"""Segmentation with latent diffusion (MedSegLatDiff): datasets, metrics (MONAI), and — in progress — the mask
autoencoder, the image-conditioned mask-latent diffusion segmenter and the U-Net baseline."""
