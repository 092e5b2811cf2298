"""sashimi-audio: SaShiMi raw-waveform audio models with S4 layers whose step mode equals their convolution mode."""

__version__ = "0.1.0"
