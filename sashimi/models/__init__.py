"""SaShiMi models: the causal backbone (with step mode), the bidirectional variant, and their config."""

from sashimi.models.config import SaShiMiConfig
from sashimi.models.sashimi import BiSaShiMi, SaShiMi, SaShiMiState

__all__ = ["SaShiMi", "BiSaShiMi", "SaShiMiConfig", "SaShiMiState"]
