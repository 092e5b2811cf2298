"""Conditioning layers of the diffusion models: the diffusion-step embedding and the mel-spectrogram upsampler.

* :func:`sinusoidal_step_embedding` / :class:`DiffusionStepEmbedding`: the DiffWave step embedding as the
  official diffwave-sashimi code computes it: ``[sin(t f_j), cos(t f_j)]`` with ``f_j = 10^(-4 j / (half - 1))``
  (sin first), then ``Linear -> swish -> Linear -> swish`` (128 -> 512 -> 512).
* :class:`MelUpsampler`: stretches a spectrogram in time by ``prod(strides)`` with weight-normed transposed
  2-D convolutions (kernel ``(3, 2 s)``, stride ``(1, s)``: the 3 taps mix neighbouring mel bins), each
  followed by a leaky ReLU of slope 0.4.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["DiffusionStepEmbedding", "MelUpsampler", "sinusoidal_step_embedding"]


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def sinusoidal_step_embedding(t: torch.Tensor, dim: int = 128, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Sinusoidal features of (possibly fractional) diffusion steps.

    ``emb[:, j] = sin(t f_j)``, ``emb[:, half + j] = cos(t f_j)`` with ``f_j = exp(-j ln(10000) / (half - 1))``,
    ``half = dim / 2`` (the frequencies of the official diffwave-sashimi code; lmnt's DiffWave uses the
    positive exponent instead).

    Args:
        t: (B,) diffusion steps, integer or floating.
        dim: embedding size (even, >= 4).
        dtype: floating dtype of the result (default: float64 for a float64 ``t``, else float32).

    Returns:
        (B, dim).
    """
    _check_int("dim", dim, 4)
    if dim % 2:
        raise ValueError(f"dim must be even, got {dim}")
    if not isinstance(t, torch.Tensor) or t.ndim != 1:
        raise ValueError(f"t must be a 1-D tensor of shape (B,), got {t!r}")
    if dtype is None:
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    half = dim // 2
    j = torch.arange(half, dtype=dtype, device=t.device)
    freqs = torch.exp(-j * (math.log(10000.0) / (half - 1)))  # (half,)
    arg = t.to(dtype).unsqueeze(1) * freqs  # (B, half)
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)  # (B, dim)


class DiffusionStepEmbedding(nn.Module):
    """Step embedding MLP: ``swish(fc2(swish(fc1(sinusoid(t)))))``.

    Args:
        dim_in: sinusoid size (128 in DiffWave).
        dim_mid: hidden width (512).
        dim_out: output width (512); every residual block projects it to its own width.
    """

    def __init__(self, dim_in: int = 128, dim_mid: int = 512, dim_out: int = 512) -> None:
        super().__init__()
        _check_int("dim_in", dim_in, 4)
        if dim_in % 2:
            raise ValueError(f"dim_in must be even, got {dim_in}")
        self.dim_in = dim_in
        self.fc1 = nn.Linear(dim_in, _check_int("dim_mid", dim_mid))
        self.fc2 = nn.Linear(dim_mid, _check_int("dim_out", dim_out))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) steps -> (B, dim_out), in the dtype of the layer's weights."""
        e = sinusoidal_step_embedding(t, self.dim_in, self.fc1.weight.dtype)  # (B, dim_in)
        return F.silu(self.fc2(F.silu(self.fc1(e))))  # (B, dim_out)


class MelUpsampler(nn.Module):
    """Upsample a spectrogram in time by ``prod(strides)``: (B, n_mels, F) -> (B, n_mels, F * prod(strides)).

    Each stage is ``leaky_relu(ConvTranspose2d(1, 1, (3, 2s), stride (1, s), padding (1, s // 2)), 0.4)``
    over the (mel, time) plane, weight-normed with PyTorch's parametrization (``weight = g v / ||v||``,
    ``g`` per input channel, as ``nn.utils.weight_norm`` stores it in the official checkpoints).
    The effective initialisation is PyTorch's default one (the official code's Kaiming init is
    overwritten by its weight norm).

    Args:
        strides: the time stride of each stage; each even (so that each stage multiplies the length exactly).
    """

    def __init__(self, strides: tuple[int, ...] | list[int] = (16, 16)) -> None:
        super().__init__()
        strides = tuple(strides)
        if not strides:
            raise ValueError("strides must hold at least one stage")
        for s in strides:
            _check_int("strides[i]", s, 2)
            if s % 2:
                raise ValueError(f"every stride must be even (the output length is then exactly F * s), got {s}")
        self.strides = strides
        self.convs = nn.ModuleList(
            weight_norm(nn.ConvTranspose2d(1, 1, (3, 2 * s), stride=(1, s), padding=(1, s // 2))) for s in strides
        )

    @property
    def factor(self) -> int:
        """Total upsampling factor (the hop length of the spectrogram)."""
        return math.prod(self.strides)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, F) -> (B, n_mels, F * factor)."""
        y = mel.unsqueeze(1)  # (B, 1, n_mels, F)
        for conv in self.convs:
            y = F.leaky_relu(conv(y), 0.4)
        return y.squeeze(1)  # (B, n_mels, F * factor)
