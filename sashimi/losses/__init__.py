"""Losses shared by every model family: token cross-entropy in bits, spectral losses, denoising."""

from sashimi.losses.spectral import MultiResolutionSTFTLoss, SpectralLoss, log_power_spectrogram

__all__ = ["MultiResolutionSTFTLoss", "SpectralLoss", "log_power_spectrogram"]
