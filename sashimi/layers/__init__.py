"""Sequence layers: S4 kernels and blocks, pooling and residual blocks; each has forward and step modes."""

from sashimi.layers.blocks import FFBlock, ResidualBlock, ScalarChannelNorm
from sashimi.layers.pool import DownPool, PoolState, UpPool
from sashimi.layers.s4block import S4Block, S4State
from sashimi.layers.s4kernel import S4Kernel, StepConstants, hippo_legs_dplr

__all__ = ["S4Block", "S4Kernel", "S4State", "StepConstants", "hippo_legs_dplr"]
__all__ += ["DownPool", "FFBlock", "PoolState", "ResidualBlock", "ScalarChannelNorm", "UpPool"]
