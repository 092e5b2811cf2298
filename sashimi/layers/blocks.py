"""Residual building blocks of SaShiMi: the position-wise feed-forward block, the scalar channel norm of
the released checkpoints, and the pre-norm residual wrapper (with forward and step modes)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["FFBlock", "ResidualBlock", "ScalarChannelNorm"]

NORMS = ("layer", "scalar")


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_dropout(dropout: object) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return float(dropout)


class FFBlock(nn.Module):
    """Position-wise feed-forward layer: ``Linear(H, expand*H) -> GELU -> dropout -> Linear(expand*H, H)``.

    Acts on the last dimension, so it takes (B, L, H) sequences and (B, H) steps alike.

    Args:
        d_model: H.
        expand: hidden width factor.
        dropout: dropout after the GELU.
    """

    def __init__(self, d_model: int, expand: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model = _check_int("d_model", d_model)
        self.expand = _check_int("expand", expand)
        dropout = _check_dropout(dropout)
        self.fc1 = nn.Linear(d_model, expand * d_model)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc2 = nn.Linear(expand * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., H)."""
        return self.fc2(self.dropout(self.activation(self.fc1(x))))

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None, **kwargs: Any) -> None:
        """Stateless: None."""
        return

    def step(self, x: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        """One step (pointwise): (B, H) -> ((B, H), None)."""
        return self.forward(x), None


class ScalarChannelNorm(nn.Module):
    """The released checkpoints' scalar "TransposedLN": ``(s / std_c(x)) * (x - mean_c(x) + m)``.

    Mean and population standard deviation are taken over the channel (last) dimension at each position,
    with **no epsilon** (a position whose channels are all equal gives inf/NaN, as in the reference);
    ``m`` and ``s`` are learned scalars of shape (1,), initialised to 0 and 1.
    """

    def __init__(self, d_model: int | None = None) -> None:
        super().__init__()
        self.m = nn.Parameter(torch.zeros(1))
        self.s = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., H)."""
        # the population variance of the centred input, written out: same values as
        # torch.std_mean(unbiased=False), about twice as fast forward + backward on CPU
        xc = x - x.mean(dim=-1, keepdim=True)
        var = (xc * xc).mean(dim=-1, keepdim=True)  # (..., 1)
        return (self.s * torch.rsqrt(var)) * (xc + self.m)


class ResidualBlock(nn.Module):
    """Residual wrapper: ``x + dropout(layer(norm(x)))`` (pre-norm) or ``norm(x + dropout(layer(x)))``.

    ``layer`` is any module taking (B, L, H) (an S4Block with ``transposed=False``, an FFBlock, ...).
    Step mode needs ``layer.step(x, state) -> (y, state)`` and ``layer.init_state(batch_size, ...)``.

    Args:
        d_model: H.
        layer: the wrapped layer.
        norm: 'layer' (``nn.LayerNorm(H)``, per-channel affine, as the reference standalone model) or
            'scalar' (:class:`ScalarChannelNorm`, as the released checkpoints).
        prenorm: normalise the layer input (default) rather than the residual sum.
        dropout: dropout on the layer output.
    """

    def __init__(
        self, d_model: int, layer: nn.Module, norm: str = "layer", prenorm: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.d_model = _check_int("d_model", d_model)
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layer must be an nn.Module, got {type(layer).__name__}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        dropout = _check_dropout(dropout)
        self.layer = layer
        self.norm = nn.LayerNorm(d_model) if norm == "layer" else ScalarChannelNorm(d_model)
        self.prenorm = bool(prenorm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _combine(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = self.dropout(y)
        return x + y if self.prenorm else self.norm(x + y)

    def forward(self, x: torch.Tensor, state: Any = None) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """Sequence mode.

        Args:
            x: (B, L, H).
            state: optional stream state of the wrapped layer (from :meth:`init_state`), updated in
                place; when given, ``(y, state)`` is returned.

        Returns:
            y: (B, L, H) (and the state when one was given).
        """
        z = self.norm(x) if self.prenorm else x
        if state is None:
            return self._combine(x, self.layer(z))
        y, state = self.layer(z, state)
        return self._combine(x, y), state

    def init_state(self, batch_size: int, device: Any = None, dtype: Any = None, **kwargs: Any) -> Any:
        """The wrapped layer's step state (None for a stateless layer); kwargs go to its ``init_state``."""
        if not hasattr(self.layer, "init_state"):
            raise RuntimeError(f"{type(self.layer).__name__} has no step mode")
        return self.layer.init_state(batch_size, device=device, dtype=dtype, **kwargs)

    def step(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """One step: x (B, H) -> (y (B, H), state); the layer's state is updated in place."""
        z = self.norm(x) if self.prenorm else x
        y, state = self.layer.step(z, state)
        return self._combine(x, y), state
