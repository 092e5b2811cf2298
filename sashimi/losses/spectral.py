"""Spectral losses on waveforms: SING's log-power-spectrogram loss and the multi-resolution STFT loss.

:class:`SpectralLoss` is the loss of SING (Défossez et al., 2018)::

    l(x)    = log(epsilon + |STFT x|^2)        # power spectrum, natural log, epsilon = 1
    L(x, y) = mean(|l(x) - l(y)|)              # "l1" (the paper); "mse" squares instead (the official default)

with a periodic Hann window of ``n_fft`` samples, ``center=False`` (no padding: ``1 + (T - n_fft) // hop``
frames), onesided, not normalized; the mean runs over every (batch, frequency, frame) element. It ignores phase
and, with ``epsilon = 1``, bins whose power is far below 1.

:class:`MultiResolutionSTFTLoss` is the common multi-resolution STFT loss (Parallel WaveGAN; the defaults of
``auraloss.freq.MultiResolutionSTFTLoss``): for each resolution, with magnitudes
``|S| = sqrt(max(|STFT|^2, eps))`` (centered STFT, reflect padding, Hann window of ``win_length`` centered in
``n_fft``), spectral convergence ``||S_y - S_x||_F / ||S_y||_F`` (over the whole batch) plus the mean absolute
difference of log magnitudes; averaged over the resolutions.

Both compute the STFT in float32 at least, with autocast disabled (float64 inputs stay float64), so they can
serve any task as a main or auxiliary loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from sashimi._validate import check_int

__all__ = ["MultiResolutionSTFTLoss", "SpectralLoss", "log_power_spectrogram"]

Distance = Literal["l1", "mse"]


def _as_batch(x: object, name: str, min_length: int) -> Tensor:
    """(T,), (B, T) or (B, C, T) floating waveforms -> (B', T) in float32 at least."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor waveform, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point waveform, got dtype {x.dtype}")
    if x.ndim not in (1, 2, 3):
        raise ValueError(f"{name} must have shape (T,), (B, T) or (B, C, T), got {tuple(x.shape)}")
    if x.shape[-1] < min_length:
        raise ValueError(f"{name} has {x.shape[-1]} samples, fewer than the {min_length} one STFT frame needs")
    x = x.reshape(-1, x.shape[-1])  # (B', T)
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _check_pair(input: Tensor, target: Tensor) -> None:
    if input.shape != target.shape:
        raise ValueError(f"input and target must have the same shape, got {tuple(input.shape)} and "
                         f"{tuple(target.shape)}")


def log_power_spectrogram(
    x: Tensor, n_fft: int = 1024, hop_length: int = 256, epsilon: float = 1.0
) -> Tensor:
    """SING's ``log(epsilon + |STFT x|^2)`` of waveforms ``x`` (T,) / (B, T) / (B, C, T).

    Periodic Hann window of ``n_fft`` samples, ``center=False``. Computed in float32 at least (float64 stays
    float64), autocast off. Returns (B', n_fft // 2 + 1, 1 + (T - n_fft) // hop_length) with B' = B * C.
    """
    x = _as_batch(x, "x", n_fft)
    with torch.autocast(device_type=x.device.type, enabled=False):
        window = torch.hann_window(n_fft, periodic=True, dtype=x.dtype, device=x.device)
        spec = torch.stft(x, n_fft, hop_length=hop_length, win_length=n_fft, window=window, center=False,
                          normalized=False, onesided=True, return_complex=True)  # (B', F, frames)
        power = spec.real.square() + spec.imag.square()
        return torch.log(epsilon + power)


class SpectralLoss(nn.Module):
    """SING's spectral loss: distance between ``log(epsilon + |STFT|^2)`` of two waveforms.

    Args:
        n_fft: FFT size and window length (periodic Hann).
        hop_length: frame hop.
        epsilon: added to the power before the natural log (SING: 1).
        distance: "l1" (the paper's loss) or "mse" (the official code's default).
        reduction: "mean" (over every element, a scalar) or "per_item" (mean per waveform, shape (B',)).

    ``loss(input, target)``: waveforms (T,), (B, T) or (B, C, T) of the same shape, T >= n_fft.
    """

    def __init__(
        self,
        n_fft: int = 1024,
        hop_length: int = 256,
        epsilon: float = 1.0,
        distance: Distance = "l1",
        reduction: Literal["mean", "per_item"] = "mean",
    ) -> None:
        super().__init__()
        self.n_fft = check_int(n_fft, "n_fft")
        self.hop_length = check_int(hop_length, "hop_length")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise ValueError(f"epsilon must be a positive number, got {epsilon!r}")
        if distance not in ("l1", "mse"):
            raise ValueError(f"distance must be 'l1' or 'mse', got {distance!r}")
        if reduction not in ("mean", "per_item"):
            raise ValueError(f"reduction must be 'mean' or 'per_item', got {reduction!r}")
        self.epsilon, self.distance, self.reduction = float(epsilon), distance, reduction

    def log_spectrogram(self, x: Tensor) -> Tensor:
        """(T,) / (B, T) / (B, C, T) -> (B', n_fft // 2 + 1, frames), see :func:`log_power_spectrogram`."""
        return log_power_spectrogram(x, self.n_fft, self.hop_length, self.epsilon)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Scalar loss (or (B',) per item), in the promoted dtype of the inputs (float32 at least)."""
        _check_pair(input, target)
        diff = self.log_spectrogram(input) - self.log_spectrogram(target)  # (B', F, frames)
        err = diff.abs() if self.distance == "l1" else diff.square()
        return err.mean() if self.reduction == "mean" else err.mean(dim=(1, 2))

    def extra_repr(self) -> str:
        return (f"n_fft={self.n_fft}, hop_length={self.hop_length}, epsilon={self.epsilon}, "
                f"distance={self.distance!r}, reduction={self.reduction!r}")


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over STFT resolutions.

    Args:
        fft_sizes, hop_sizes, win_lengths: one entry per resolution (defaults 1024/2048/512, 120/240/50,
            600/1200/240); each window (periodic Hann of ``win_length <= fft_size``) is centered in the FFT.
        w_sc, w_log_mag: weights of the two terms.
        eps: floor of the power before the square root.

    ``loss(input, target)``: waveforms (T,), (B, T) or (B, C, T) of the same shape; channels are folded into
    the batch. Spectral convergence is normalised by the target's magnitudes.
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        w_sc: float = 1.0,
        w_log_mag: float = 1.0,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        sizes = [list(fft_sizes), list(hop_sizes), list(win_lengths)]
        if not sizes[0] or len({len(s) for s in sizes}) != 1:
            raise ValueError(f"fft_sizes, hop_sizes and win_lengths must be non-empty and of equal length, got "
                             f"{len(sizes[0])}, {len(sizes[1])}, {len(sizes[2])}")
        for name, values in zip(("fft_sizes", "hop_sizes", "win_lengths"), sizes):
            for v in values:
                check_int(v, name)
        for n_fft, win in zip(sizes[0], sizes[2]):
            if win > n_fft:
                raise ValueError(f"win_lengths entry {win} exceeds its fft_sizes entry {n_fft}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.resolutions = list(zip(*sizes))  # [(n_fft, hop, win)]
        self.w_sc, self.w_log_mag, self.eps = float(w_sc), float(w_log_mag), float(eps)

    def _magnitude(self, x: Tensor, n_fft: int, hop: int, win: int) -> Tensor:
        window = torch.hann_window(win, periodic=True, dtype=x.dtype, device=x.device)
        spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=window, center=True, pad_mode="reflect",
                          return_complex=True)  # (B', F, frames)
        return torch.sqrt(torch.clamp(spec.real.square() + spec.imag.square(), min=self.eps))

    def resolution_terms(self, input: Tensor, target: Tensor) -> Tensor:
        """(R, 2): per resolution, [spectral convergence, log-magnitude L1] (unweighted)."""
        _check_pair(input, target)
        x = _as_batch(input, "input", 2)
        y = _as_batch(target, "target", 2)
        rows = []
        with torch.autocast(device_type=x.device.type, enabled=False):
            for n_fft, hop, win in self.resolutions:
                if x.shape[-1] <= n_fft // 2:
                    raise ValueError(f"waveforms of {x.shape[-1]} samples are too short for reflect padding at "
                                     f"n_fft={n_fft}")
                mx, my = self._magnitude(x, n_fft, hop, win), self._magnitude(y, n_fft, hop, win)
                sc = torch.linalg.vector_norm(my - mx) / torch.linalg.vector_norm(my)
                log_mag = (torch.log(my) - torch.log(mx)).abs().mean()
                rows.append(torch.stack([sc, log_mag]))
        return torch.stack(rows)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        """Scalar: mean over resolutions of ``w_sc * SC + w_log_mag * logmag_L1``."""
        terms = self.resolution_terms(input, target)  # (R, 2)
        return (self.w_sc * terms[:, 0] + self.w_log_mag * terms[:, 1]).mean()

    def extra_repr(self) -> str:
        return f"resolutions={self.resolutions}, w_sc={self.w_sc}, w_log_mag={self.w_log_mag}, eps={self.eps}"
