"""sashimi-audio: SaShiMi raw-waveform audio models with S4 layers whose step mode equals their convolution mode."""

from sashimi.layers import S4Block, S4Kernel, S4State
from sashimi.models import (
    BiSaShiMi,
    DiffWaveSaShiMi,
    MaskedSaShiMi,
    SaShiMi,
    SaShiMiConfig,
    SaShiMiLM,
    SaShiMiLMConfig,
    SING,
    WaveNet,
    load_model,
)

__version__ = "0.1.0"

__all__ = [
    "BiSaShiMi",
    "S4Block",
    "S4Kernel",
    "S4State",
    "SaShiMi",
    "SaShiMiConfig",
    "SaShiMiLM",
    "SaShiMiLMConfig",
    "WaveNet",
    "DiffWaveSaShiMi",
    "MaskedSaShiMi",
    "SING",
    "__version__",
    "load_model",
]
