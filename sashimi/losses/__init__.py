"""Losses shared by every model family: token cross-entropy in bits, spectral losses, denoising."""
