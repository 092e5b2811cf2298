"""SaShiMi: the multi-scale S4 backbone of Goel et al. (ICML 2022), causal (with an exact step mode) and
bidirectional.

Structure (tier i has width ``H_i = d_model * expand**i`` and runs at rate ``1 / prod(pool[:i])``)::

    down tier i:  [unet: residual blocks]           -> DownPool_i   (H_i -> H_{i+1}, L -> L / pool_i)
    center:       residual blocks at H_K, plus a skip from the center input
    up tier i:    UpPool_i (H_{i+1} -> H_i, shifted one window right) + skip -> residual blocks -> + skip
    final:        LayerNorm(d_model)

Skips (as in the reference): without U-Net, the UpPool output gets the tier's input ``a_i`` added
and the tier's blocks sit in an extra residual connection; with U-Net, each down block's output
is added after the mirrored up layer (UpPool first, last block last, which gets ``a_i``).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sashimi.generation.step_program import FastStepper
from sashimi.generation.step_program import build as build_program
from sashimi.layers.blocks import FFBlock, ResidualBlock
from sashimi.layers.pool import DownPool, PoolState, UpPool
from sashimi.layers.s4block import S4Block, check_sequence_input
from sashimi.models.config import SaShiMiConfig

__all__ = ["BiSaShiMi", "SaShiMi", "SaShiMiState", "TierState"]


@dataclass
class TierState:
    """Step state of one down or up tier.

    Attributes:
        blocks: per residual block, its layer's state (an S4State, or None for FF blocks).
        pool: the tier's DownPool / UpPool state.
    """

    blocks: list[Any]
    pool: PoolState

    def clone(self) -> TierState:
        return TierState([None if s is None else s.clone() for s in self.blocks], self.pool.clone())


@dataclass
class SaShiMiState:
    """Step / stream state of a :class:`SaShiMi`, owned by the caller (from :meth:`SaShiMi.init_state`).

    Attributes:
        down: one :class:`TierState` per down tier (outer first).
        center: per center block, its layer's state (S4State or None).
        up: one :class:`TierState` per up tier, indexed like ``down`` (``up[i]`` maps tier i+1 to tier i).
        owner: a weak reference to the model that made the state (``step`` refuses another model's).
        program: the flat step program continuing this state (built by the first :meth:`SaShiMi.step`;
            it holds the current values while it runs: :meth:`sync` writes them back into the tier
            states, which :meth:`clone` and ``forward(x, state)`` do for you).
    """

    down: list[TierState]
    center: list[Any]
    up: list[TierState]
    owner: Any = field(default=None, repr=False, compare=False)
    program: FastStepper | None = field(default=None, repr=False, compare=False)
    slow: bool = field(default=False, repr=False, compare=False)  # the program does not cover the model

    @property
    def batch_size(self) -> int:
        if self.down:
            return self.down[0].pool.batch_size
        return next(s.batch_size for s in self.center if s is not None)

    def offset(self, pool: tuple[int, ...]) -> int:
        """The stream position modulo ``prod(pool)``, read from the DownPool phases."""
        off, stride = 0, 1
        for p, tier in zip(pool, self.down):
            off += tier.pool.phase * stride
            stride *= p
        return off

    def sync(self) -> SaShiMiState:
        """Write the step program's current values (if one runs this state) into the tier states; the
        program keeps running. Returns the state."""
        if self.program is not None:
            self.program.sync()
        return self

    def detach_program(self) -> None:
        """:meth:`sync`, then drop the step program (before anything else changes the tier states)."""
        self.sync()
        self.program = None

    def s4_states(self) -> list[Any]:
        """The S4 layer states inside (tiers in order)."""
        tiers = [*(t.blocks for t in self.down), self.center, *(t.blocks for t in self.up)]
        return [s for blocks in tiers for s in blocks if s is not None and hasattr(s, "x")]

    def clone(self) -> SaShiMiState:
        """An independent deep copy (S4 step constants are shared, read-only); the copy has no step program."""
        self.sync()
        return SaShiMiState(
            [t.clone() for t in self.down],
            [None if s is None else s.clone() for s in self.center],
            [t.clone() for t in self.up],
            owner=self.owner,
        )


class DownTier(nn.Module):
    """Residual blocks (U-Net only; else empty) followed by a DownPool."""

    def __init__(self, blocks: nn.ModuleList, pool: DownPool) -> None:
        super().__init__()
        self.blocks = blocks
        self.pool = pool


class UpTier(nn.Module):
    """An UpPool followed by residual blocks."""

    def __init__(self, pool: UpPool, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.pool = pool
        self.blocks = blocks


Runner = Callable[[ResidualBlock, torch.Tensor, Any], torch.Tensor]


def _run_forward(block: ResidualBlock, x: torch.Tensor, state: Any) -> torch.Tensor:
    return block(x) if state is None else block(x, state)[0]


def _run_step(block: ResidualBlock, x: torch.Tensor, state: Any) -> torch.Tensor:
    return block.step(x, state)[0]


class _SaShiMiBase(nn.Module):
    def __init__(self, config: SaShiMiConfig) -> None:
        super().__init__()
        if not isinstance(config, SaShiMiConfig):
            raise TypeError(f"config must be a SaShiMiConfig, got {type(config).__name__}")
        self.config = config
        c = config
        widths = c.widths

        def blocks(H: int) -> nn.ModuleList:
            out = []
            for _ in range(c.n_layers):
                out.append(ResidualBlock(H, S4Block(H, **c.s4_kwargs()), norm=c.norm, dropout=c.dropout))
                if c.ff > 0:
                    out.append(ResidualBlock(H, FFBlock(H, c.ff, c.dropout), norm=c.norm, dropout=c.dropout))
            return nn.ModuleList(out)

        self.down = nn.ModuleList(
            DownTier(
                blocks(widths[i]) if c.unet else nn.ModuleList(),
                DownPool(widths[i], c.expand, p, c.pool_weight_norm),
            )
            for i, p in enumerate(c.pool)
        )
        self.center = blocks(widths[-1])
        self.up = nn.ModuleList(
            UpTier(UpPool(widths[i + 1], c.expand, p, c.pool_weight_norm, shift=c.up_shift), blocks(widths[i]))
            for i, p in enumerate(c.pool)
        )
        self.norm = nn.LayerNorm(c.d_model)

    @property
    def d_model(self) -> int:
        return self.config.d_model

    @property
    def total_pool(self) -> int:
        """prod(pool): the length granularity of the tiers."""
        return math.prod(self.config.pool)

    # ---- shared tier logic (sequence and step modes) --------------------------------------------
    def _center(self, h: torch.Tensor, states: list[Any] | None, run: Runner) -> torch.Tensor:
        a = h
        for j, blk in enumerate(self.center):
            h = run(blk, h, None if states is None else states[j])
        return h + a

    def _up_blocks(
        self, i: int, h: torch.Tensor, a: torch.Tensor, outs: list[torch.Tensor], states: list[Any] | None, run: Runner
    ) -> torch.Tensor:
        """Tier i after its UpPool: skips and residual blocks. ``a``: the tier's input; ``outs``: its
        down blocks' outputs (U-Net)."""
        tier = self.up[i]
        if self.config.unet:
            skips = [a, *outs]  # skip k is added after up layer n - k (n = len(blocks))
            n = len(tier.blocks)
            h = h + skips[n]
            for j, blk in enumerate(tier.blocks):
                h = run(blk, h, None if states is None else states[j]) + skips[n - 1 - j]
            return h
        h = h + a
        u = h
        for j, blk in enumerate(tier.blocks):
            h = run(blk, h, None if states is None else states[j])
        return h + u

    def _forward_aligned(self, x: torch.Tensor, state: SaShiMiState | None = None) -> torch.Tensor:
        """(B, L, H) -> (B, L, H) before the final norm; L a multiple of prod(pool); with a state (at a
        window boundary of every tier) the chunk continues the stream."""
        run = _run_forward
        inputs, skips = [], []
        h = x
        for i, tier in enumerate(self.down):
            inputs.append(h)
            outs = []
            for j, blk in enumerate(tier.blocks):
                h = run(blk, h, None if state is None else state.down[i].blocks[j])
                outs.append(h)
            skips.append(outs)
            h = tier.pool(h, None if state is None else state.down[i].pool)  # (B, L / pool, H_{i+1})
        h = self._center(h, None if state is None else state.center, run)
        for i in reversed(range(len(self.up))):
            st = None if state is None else state.up[i]
            h = self.up[i].pool(h, None if st is None else st.pool)  # (B, L_i, H_i)
            h = self._up_blocks(i, h, inputs[i], skips[i], None if st is None else st.blocks, run)
        return h

    def _check_input(self, x: object) -> None:
        check_sequence_input(x, self.config.d_model, self.config.transposed, dtype=self.norm.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # overridden
        raise NotImplementedError


class SaShiMi(_SaShiMiBase):
    """Causal SaShiMi backbone: (B, L, d_model) -> (B, L, d_model), with an exact recurrent step mode.

    Any length L works: the input is zero-padded on the right to a multiple of ``prod(pool)`` and the
    output cropped (the model is causal, so the padding does not change the kept outputs).

    Generation::

        state = model.init_state(batch_size)
        y, state = model.step(x_t, state)        # x_t (B, d_model) -> y (B, d_model)

    Tier i only computes on every ``prod(pool[:i])``-th step. ``forward(x, state)`` continues a stream
    with a chunk of any length (whole pooling windows run in sequence mode, the rest is stepped).

    Args:
        config: a :class:`SaShiMiConfig` with ``bidirectional=False`` (default: ``SaShiMiConfig()``).
    """

    def __init__(self, config: SaShiMiConfig | None = None) -> None:
        config = SaShiMiConfig() if config is None else config
        if isinstance(config, SaShiMiConfig) and config.bidirectional:
            raise ValueError("config.bidirectional=True: use BiSaShiMi for the non-causal model")
        super().__init__(config)

    @staticmethod
    def default_config(**overrides: Any) -> SaShiMiConfig:
        """``SaShiMiConfig(**overrides)`` (causal defaults)."""
        return SaShiMiConfig(**overrides)

    def forward(
        self, x: torch.Tensor, state: SaShiMiState | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, SaShiMiState]:
        """Sequence mode.

        Args:
            x: (B, L, d_model) (or (B, d_model, L) with ``config.transposed``), finite floats, any L >= 1.
            state: optional :class:`SaShiMiState` (from :meth:`init_state` or earlier steps/chunks); the
                chunk continues that stream, the state is updated in place and returned too.

        Returns:
            y: (B, L, d_model) (or transposed), and the state when one was given.
        """
        self._check_input(x)
        u = x.transpose(1, 2) if self.config.transposed else x  # (B, L, H)
        L = u.shape[1]
        if state is None:
            pad = (-L) % self.total_pool
            y = self._forward_aligned(F.pad(u, (0, 0, 0, pad)) if pad else u)[:, :L]  # (B, L, H)
        else:
            self._check_state(state, u.shape[0], u.dtype)
            state.detach_program()
            y = self._forward_stream(u, state)
        y = self.norm(y)
        y = y.transpose(1, 2) if self.config.transposed else y
        return y if state is None else (y, state)

    def _forward_stream(self, u: torch.Tensor, state: SaShiMiState) -> torch.Tensor:
        """Continue the stream: step up to the next window boundary, run whole windows in sequence
        mode, step the remainder. u (B, L, H) -> (B, L, H) before the final norm."""
        P, L = self.total_pool, u.shape[1]
        head = min(L, (-state.offset(self.config.pool)) % P)
        mid = (L - head) // P * P
        parts = []
        if head:
            parts.append(torch.stack([self._step(u[:, t], state) for t in range(head)], dim=1))
        if mid:
            parts.append(self._forward_aligned(u[:, head : head + mid], state))
        if head + mid < L:
            parts.append(torch.stack([self._step(u[:, t], state) for t in range(head + mid, L)], dim=1))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    # ---- recurrent mode -----------------------------------------------------------------------
    def init_state(
        self,
        batch_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        mode: str = "auto",
    ) -> SaShiMiState:
        """A fresh state (zero history) for ``batch_size`` streams.

        Args:
            batch_size: B.
            device, dtype: of the state tensors (default: the model's).
            mode: S4 step discretization (see :meth:`S4Block.init_state`): 'auto', 'linear', 'dense',
                'diagonal'.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        device = device or self.norm.weight.device
        dtype = dtype or self.norm.weight.dtype

        def block_states(blocks: nn.ModuleList) -> list[Any]:
            return [blk.init_state(batch_size, device=device, dtype=dtype, mode=mode) for blk in blocks]

        return SaShiMiState(
            down=[TierState(block_states(t.blocks), t.pool.init_state(batch_size, device, dtype)) for t in self.down],
            center=block_states(self.center),
            up=[TierState(block_states(t.blocks), t.pool.init_state(batch_size, device, dtype)) for t in self.up],
            owner=weakref.ref(self),
        )

    def _check_state(self, state: object, batch: int, dtype: torch.dtype) -> None:
        if not isinstance(state, SaShiMiState):
            raise TypeError(f"state must be a SaShiMiState from init_state(), got {type(state).__name__}")
        if state.owner is not None and state.owner() is not self:
            raise ValueError("state was made by another model: make it with init_state() on this model")
        if len(state.down) != len(self.down) or len(state.up) != len(self.up) or len(state.center) != len(self.center):
            raise ValueError("state does not match this model's tiers (made by a different model?)")
        if state.batch_size != batch:
            raise ValueError(f"state was made for batch size {state.batch_size}, the input has batch size {batch}")
        s4 = state.program.s4_dtype if state.program is not None else _made_for(state)
        if s4 is not None and s4 != self.norm.weight.dtype:
            raise TypeError(
                f"state dtype does not match: it was made for {s4} models, this model's dtype is "
                f"{self.norm.weight.dtype}; make it with init_state(batch_size) on this model"
            )
        if dtype != self.norm.weight.dtype:
            raise TypeError(f"x has dtype {dtype}, the model {self.norm.weight.dtype}: cast the input or the model")

    def step(self, x: torch.Tensor, state: SaShiMiState) -> tuple[torch.Tensor, SaShiMiState]:
        """One recurrent step.

        The first step on a state builds the flat step program of
        :mod:`sashimi.generation.step_program` (real arithmetic, S4 state passes in C, constants
        precomputed, each tier stepped only when its pooling window closes) and keeps it in the state;
        later steps run it. It equals the module-by-module step to float rounding. Like the S4 step
        constants (discretized by :meth:`init_state`), the program captures the weights when it is built:
        after changing the weights, make a new state. In training mode, or for configurations the
        program does not cover, the step runs module by module.

        Args:
            x: (B, d_model) finite input at one time step, of the model's dtype.
            state: from :meth:`init_state` of this model; updated in place.

        Returns:
            y: (B, d_model), and the same state object.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, d_model), got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.config.d_model:
            raise ValueError(f"x must have shape (B, d_model) with d_model={self.config.d_model}, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got dtype {x.dtype}")
        self._check_state(state, x.shape[0], x.dtype)
        if not math.isfinite(x.sum().item()) and not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or Inf: the state would never recover from it")
        program = state.program
        if program is None and not self.training and not state.slow:
            with torch.no_grad():
                program = state.program = build_program(self, state)
            state.slow = program is None
        if program is not None and not self.training:
            with torch.no_grad():
                return program.step(x), state
        state.detach_program()
        return self.norm(self._step(x, state)), state

    def _step(self, x: torch.Tensor, state: SaShiMiState) -> torch.Tensor:
        """(B, H) -> (B, H) before the final norm. Tier i runs only when its DownPool input window closed."""
        run = _run_step
        inputs, skips = [], []
        h: torch.Tensor | None = x
        depth = 0  # deepest tier that receives an input at this step
        for i, tier in enumerate(self.down):
            inputs.append(h)
            outs = []
            for j, blk in enumerate(tier.blocks):
                h = run(blk, h, state.down[i].blocks[j])
                outs.append(h)
            skips.append(outs)
            h, _ = tier.pool.step(h, state.down[i].pool)  # (B, H_{i+1}) once every pool_i steps, else None
            if h is None:
                break
            depth = i + 1
        if depth == len(self.down):
            h = self._center(h, state.center, run)
        # h is None when the deepest active tier's UpPool only emits from its buffer
        for i in range(min(depth, len(self.up) - 1), -1, -1):
            h, _ = self.up[i].pool.step(h, state.up[i].pool)  # (B, H_i)
            h = self._up_blocks(i, h, inputs[i], skips[i], state.up[i].blocks, run)
        return h


class BiSaShiMi(_SaShiMiBase):
    """Non-causal (bidirectional) SaShiMi: bidirectional S4 kernels.

    As in the reference, the UpPools keep their one-window shift by default (``config.up_shift``;
    set it False for unshifted UpPools).

    (B, L, d_model) -> (B, L, d_model) with L a multiple of ``prod(pool)`` (every output depends on
    the whole input, so padding would change it). No step mode.

    Args:
        config: a :class:`SaShiMiConfig` with ``bidirectional=True``; default
            :meth:`default_config` (U-Net on).
    """

    def __init__(self, config: SaShiMiConfig | None = None) -> None:
        config = self.default_config() if config is None else config
        if isinstance(config, SaShiMiConfig) and not config.bidirectional:
            raise ValueError("BiSaShiMi needs config.bidirectional=True (use BiSaShiMi.default_config(...))")
        super().__init__(config)

    @staticmethod
    def default_config(**overrides: Any) -> SaShiMiConfig:
        """``SaShiMiConfig(bidirectional=True, unet=True, **overrides)``; ``unet=False`` may be passed."""
        kw: dict[str, Any] = {"bidirectional": True, "unet": True}
        kw.update(overrides)
        return SaShiMiConfig(**kw)

    def forward(self, x: torch.Tensor, state: None = None) -> torch.Tensor:
        """Args: x (B, L, d_model) (or (B, d_model, L) when transposed), L a multiple of prod(pool).
        Returns: y of the same shape."""
        if state is not None:
            raise RuntimeError("BiSaShiMi is non-causal: it cannot continue a stream from a state")
        self._check_input(x)
        u = x.transpose(1, 2) if self.config.transposed else x  # (B, L, H)
        if u.shape[1] % self.total_pool:
            raise ValueError(
                f"x length L={u.shape[1]} must be a multiple of prod(pool)={self.total_pool} for the "
                "non-causal model (padding would change every output)"
            )
        y = self.norm(self._forward_aligned(u))
        return y.transpose(1, 2) if self.config.transposed else y

    def init_state(self, *args: Any, **kwargs: Any) -> SaShiMiState:
        raise RuntimeError("BiSaShiMi is non-causal and has no step mode; use forward() on whole sequences")

    def step(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, SaShiMiState]:
        raise RuntimeError("BiSaShiMi is non-causal and has no step mode; use forward() on whole sequences")


def _made_for(state: SaShiMiState) -> torch.dtype | None:
    """The real dtype of the models an S4 state was made for (None: no S4 layer)."""
    for s in state.s4_states():
        if s.dtype is not None:
            return s.dtype
        return torch.float64 if s.x.dtype == torch.complex128 else torch.float32
    return None
