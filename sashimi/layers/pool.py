"""SaShiMi pooling: DownPool folds ``pool`` time steps into channels, UpPool unfolds them (causally shifted).

Both use the (h, s) channel order of the reference and the released checkpoints: at pooled step l,
feature ``h * pool + s`` corresponds to channel h at time ``pool * l + s`` (h major).

Step mode keeps a caller-owned :class:`PoolState`: a preallocated (B, H, pool) buffer plus an integer
phase. DownPool emits one output every ``pool`` steps; UpPool emits one output per step and takes one
lower-tier input every ``pool`` steps, so a model only runs its lower tiers when they have new input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

__all__ = ["DownPool", "PoolState", "UpPool"]


@dataclass
class PoolState:
    """Step state of a :class:`DownPool` or :class:`UpPool`, owned by the caller.

    Attributes:
        buffer: (B, H, pool) preallocated tensor. DownPool: the inputs received in the current pooling
            window (columns ``< phase`` are valid). UpPool: the outputs pending emission for the
            current window (H = the UpPool's output width).
        phase: position inside the pooling window, ``0 <= phase < pool``.
    """

    buffer: torch.Tensor
    phase: int = 0

    @property
    def batch_size(self) -> int:
        return self.buffer.shape[0]

    @property
    def pool(self) -> int:
        return self.buffer.shape[-1]

    def clone(self) -> PoolState:
        """An independent copy (the buffer is cloned)."""
        return PoolState(self.buffer.clone(), self.phase)


def _linear(d_in: int, d_out: int, weight_norm: bool) -> nn.Linear:
    linear = nn.Linear(d_in, d_out)
    if weight_norm:
        # W = g * v / ||v||_row with g of shape (d_out, 1), as in the released checkpoints
        linear = _weight_norm(linear, name="weight", dim=0)
    return linear


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_seq(x: object, d: int, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, L, H), got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != d:
        raise ValueError(f"{name} must have shape (B, L, H) with H={d}, got {tuple(x.shape)}")


def _check_step_input(x: object, d: int, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, H), got {type(x).__name__}")
    if x.ndim != 2 or x.shape[-1] != d:
        raise ValueError(f"{name} must have shape (B, H) with H={d}, got {tuple(x.shape)}")


def _check_state(state: object, batch: int, width: int, pool: int, owner: str) -> PoolState:
    if not isinstance(state, PoolState):
        raise TypeError(f"state must be a PoolState from {owner}.init_state(), got {type(state).__name__}")
    if tuple(state.buffer.shape[1:]) != (width, pool):
        raise ValueError(
            f"state buffer has shape {tuple(state.buffer.shape)}, {owner} expects (B, {width}, {pool})"
        )
    if state.buffer.shape[0] != batch:
        raise ValueError(f"state was made for batch size {state.buffer.shape[0]}, the input has batch size {batch}")
    return state


class DownPool(nn.Module):
    """Fold ``pool`` time steps into channels, then a linear map: (B, L, H) -> (B, L/pool, expand*H).

    ``y[b, l] = W x~[b, l] + b`` with ``x~[b, l, h*pool + s] = x[b, pool*l + s, h]``
    (W: (expand*H, H*pool)).

    Args:
        d_input: H.
        expand: output width factor (output = expand * H).
        pool: pooling factor (>= 1).
        weight_norm: weight-normalised linear (``W = g v / ||v||_row``), as in the released checkpoints.
    """

    def __init__(self, d_input: int, expand: int, pool: int, weight_norm: bool = False) -> None:
        super().__init__()
        self.d_input = _check_int("d_input", d_input)
        self.expand = _check_int("expand", expand)
        self.pool = _check_int("pool", pool)
        self.d_output = expand * d_input
        self.linear = _linear(d_input * pool, self.d_output, weight_norm)

    def extra_repr(self) -> str:
        return f"d_input={self.d_input}, d_output={self.d_output}, pool={self.pool}"

    def forward(self, x: torch.Tensor, state: PoolState | None = None) -> torch.Tensor:
        """Pool a sequence.

        Args:
            x: (B, L, H) with L a multiple of ``pool`` (pad first otherwise).
            state: optional stream state; it must be at phase 0 (no partial window buffered), and
                stays so (this layer keeps no memory across whole windows).

        Returns:
            (B, L/pool, expand*H).
        """
        _check_seq(x, self.d_input)
        B, L, H = x.shape
        if L % self.pool:
            raise ValueError(f"x length L={L} must be a multiple of pool={self.pool} (pad the input first)")
        if state is not None:
            _check_state(state, B, H, self.pool, "DownPool")
            if state.phase != 0:
                raise ValueError(
                    f"DownPool.forward with a state needs phase 0, got phase {state.phase}: step the "
                    "remaining inputs of the window first"
                )
        x = x.reshape(B, L // self.pool, self.pool, H).transpose(2, 3)  # (B, L', H, pool)
        return self.linear(x.reshape(B, L // self.pool, H * self.pool))  # (B, L', expand*H)

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> PoolState:
        """An empty window: buffer (B, H, pool) of zeros, phase 0."""
        _check_int("batch_size", batch_size)
        ref = self.linear.bias
        buf = torch.zeros(batch_size, self.d_input, self.pool, device=device or ref.device, dtype=dtype or ref.dtype)
        return PoolState(buf, 0)

    def step(self, x: torch.Tensor, state: PoolState) -> tuple[torch.Tensor | None, PoolState]:
        """Buffer one input; emit the pooled output when the window is full.

        Args:
            x: (B, H).
            state: from :meth:`init_state`; updated in place.

        Returns:
            (B, expand*H) on every ``pool``-th call (when the window completes), else None; and the state.
        """
        _check_step_input(x, self.d_input)
        _check_state(state, x.shape[0], self.d_input, self.pool, "DownPool")
        state.buffer[..., state.phase] = x
        state.phase += 1
        if state.phase < self.pool:
            return None, state
        state.phase = 0
        return self.linear(state.buffer.reshape(x.shape[0], -1)), state  # (B, expand*H)


class UpPool(nn.Module):
    """A linear map to ``pool`` steps of channels, unfolded in time: (B, L', H) -> (B, L'*pool, H/expand).

    ``z[b, l] = W x[b, l] + b`` (W: (H/expand * pool, H)), then with ``shift`` the pooled sequence is
    shifted right by one step (zeros first: output window l only sees inputs of windows < l, which makes
    the layer causal), and ``y[b, pool*l + s, h] = z[b, l - 1, h*pool + s]`` (``z[b, l, ...]`` without
    the shift).

    Args:
        d_input: H (a multiple of ``expand``).
        expand: width reduction factor (output = H / expand).
        pool: unpooling factor (>= 1).
        weight_norm: weight-normalised linear, as in the released checkpoints.
        shift: shift by one pooled step (default; needed for causality and for step mode). The
            reference shifts in its bidirectional model too; ``shift=False`` gives an unshifted,
            non-causal layer without step mode.
    """

    def __init__(self, d_input: int, expand: int, pool: int, weight_norm: bool = False, shift: bool = True) -> None:
        super().__init__()
        self.d_input = _check_int("d_input", d_input)
        self.expand = _check_int("expand", expand)
        self.pool = _check_int("pool", pool)
        if d_input % expand:
            raise ValueError(f"d_input={d_input} must be a multiple of expand={expand}")
        self.d_output = d_input // expand
        self.shift = bool(shift)
        self.linear = _linear(d_input, self.d_output * pool, weight_norm)

    def extra_repr(self) -> str:
        return f"d_input={self.d_input}, d_output={self.d_output}, pool={self.pool}, shift={self.shift}"

    def forward(self, x: torch.Tensor, state: PoolState | None = None) -> torch.Tensor:
        """Unpool a sequence.

        Args:
            x: (B, L', H).
            state: optional stream state (``shift`` only; at phase 0, i.e. between whole windows): its
                buffer provides the first output window, and receives the last window of this chunk.

        Returns:
            (B, L'*pool, H/expand).
        """
        _check_seq(x, self.d_input)
        B, Lp, _ = x.shape
        z = self.linear(x)  # (B, L', Ho*pool), (h, s) order
        if state is not None:
            if not self.shift:
                raise RuntimeError("an UpPool with shift=False is non-causal: it cannot continue a stream from a state")
            _check_state(state, B, self.d_output, self.pool, "UpPool")
            if state.phase != 0:
                raise ValueError(
                    f"UpPool.forward with a state needs phase 0, got phase {state.phase}: step the rest of "
                    "the window first"
                )
            first = state.buffer.reshape(B, 1, -1).to(z.dtype)  # (B, 1, Ho*pool), a view of the buffer
            last = z[:, -1].reshape(B, self.d_output, self.pool)
            z = torch.cat([first, z[:, :-1]], dim=1)  # built before the buffer is overwritten
            state.buffer.copy_(last)
        elif self.shift:
            z = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], dim=1)  # shift by one pooled step
        z = z.reshape(B, Lp, self.d_output, self.pool).transpose(2, 3)  # (B, L', pool, Ho)
        return z.reshape(B, Lp * self.pool, self.d_output)  # (B, L'*pool, Ho)

    def init_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> PoolState:
        """The first window's outputs (zeros, the causal shift), phase 0."""
        _check_int("batch_size", batch_size)
        if not self.shift:
            raise RuntimeError("an UpPool with shift=False is non-causal and has no step mode")
        ref = self.linear.bias
        buf = torch.zeros(batch_size, self.d_output, self.pool, device=device or ref.device, dtype=dtype or ref.dtype)
        return PoolState(buf, 0)

    def step(self, x: torch.Tensor | None, state: PoolState) -> tuple[torch.Tensor, PoolState]:
        """Emit the next output; on the last step of a window, take the next lower-tier input.

        Args:
            x: (B, H) lower-tier output when ``state.phase == pool - 1`` (the window closes), else None.
            state: from :meth:`init_state`; updated in place.

        Returns:
            y: (B, H/expand), and the state.
        """
        if not self.shift:
            raise RuntimeError("an UpPool with shift=False is non-causal and has no step mode")
        if not isinstance(state, PoolState):
            raise TypeError(f"state must be a PoolState from UpPool.init_state(), got {type(state).__name__}")
        last = state.phase == self.pool - 1
        if last and x is None:
            raise ValueError("UpPool.step needs the lower-tier input x at the last step of a window")
        if not last and x is not None:
            raise ValueError(
                f"UpPool.step got an input at phase {state.phase}; inputs arrive only at phase {self.pool - 1}"
            )
        batch = state.buffer.shape[0] if x is None else x.shape[0]
        if x is not None:
            _check_step_input(x, self.d_input)
        _check_state(state, batch, self.d_output, self.pool, "UpPool")
        y = state.buffer[..., state.phase].clone()  # (B, Ho)
        if last:
            state.buffer.copy_(self.linear(x).reshape(batch, self.d_output, self.pool))
            state.phase = 0
        else:
            state.phase += 1
        return y, state
