"""Sequence layers: S4 kernels and blocks, pooling and residual blocks; each has forward and step modes."""

from sashimi.layers.blocks import FFBlock, ResidualBlock, ScalarChannelNorm
from sashimi.layers.embeddings import DiffusionStepEmbedding, MelUpsampler, sinusoidal_step_embedding
from sashimi.layers.kernel_cache import cached_kernels
from sashimi.layers.pool import DownPool, PoolState, UpPool
from sashimi.layers.restricted import frozen_kernels, restricted_context
from sashimi.layers.s4_paper import PaperS4Block, PaperS4Kernel
from sashimi.layers.s4block import S4Block, S4State
from sashimi.layers.s4kernel import S4Kernel, StepConstants, hippo_legs_dplr

__all__ = ["S4Block", "S4Kernel", "S4State", "StepConstants", "hippo_legs_dplr"]
__all__ += ["DownPool", "FFBlock", "PoolState", "ResidualBlock", "ScalarChannelNorm", "UpPool"]
__all__ += ["frozen_kernels", "restricted_context"]
__all__ += ["DiffusionStepEmbedding", "MelUpsampler", "PaperS4Block", "PaperS4Kernel", "cached_kernels"]
__all__ += ["sinusoidal_step_embedding"]
