"""SaShiMi models: the causal backbone (with step mode), the bidirectional variant, the autoregressive
waveform model SaShiMiLM, and their configs."""

from sashimi.models.config import SaShiMiConfig
from sashimi.models.lm import GenerationOutput, SaShiMiLM, SaShiMiLMConfig
from sashimi.models.sashimi import BiSaShiMi, SaShiMi, SaShiMiState

__all__ = [
    "SaShiMi",
    "BiSaShiMi",
    "SaShiMiConfig",
    "SaShiMiState",
    "SaShiMiLM",
    "SaShiMiLMConfig",
    "GenerationOutput",
]
