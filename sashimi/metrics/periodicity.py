"""Periodicity: how pitched a waveform is, in one number between 0 and 1.

The waveform is cut into non-overlapping frames of 64 ms (a trailing partial frame is dropped).
In each frame the normalized autocorrelation at lag ``k``,

    r(k) = sum_t x[t] x[t + k] / sqrt(sum_t x[t]^2 * sum_t x[t + k]^2),    t = 0 .. N - k - 1,

is the cosine similarity of the frame with itself shifted by ``k`` samples (1 for a signal that
repeats every ``k`` samples). The frame's score is the largest ``r(k)`` over lags of 1 to 25 ms
(pitches of 40 Hz to 1 kHz), and the waveform's periodicity is the median of the frame scores
(for an even count the lower of the two middle values, as :func:`torch.median`).
A steady tone scores close to 1, white noise about 0.1 (the largest of a few hundred correlations
of independent samples), and plucked-string notes, which repeat with a slowly decaying envelope,
above 0.9.

Frames whose energy is negligible (RMS below ``silence_threshold``) carry no pitch: they are left
out of the median. A waveform whose frames are all silent has periodicity 0 (defined, never NaN).
"""

from __future__ import annotations

import math

import torch

__all__ = ["periodicity"]

FRAME_SECONDS = 0.064
MIN_LAG_SECONDS = 0.001
MAX_LAG_SECONDS = 0.025


def _frame_scores(frames: torch.Tensor, min_lag: int, max_lag: int) -> torch.Tensor:
    """Largest normalized autocorrelation over lags ``min_lag..max_lag`` of each frame.

    ``frames``: ``(F, N)`` float64. Returns ``(F,)``.
    """
    n = frames.shape[-1]
    # all lags at once through the FFT: full linear autocorrelation needs length >= 2N - 1
    size = 1 << (2 * n - 1).bit_length()
    spec = torch.fft.rfft(frames, size)  # (F, size // 2 + 1)
    acf = torch.fft.irfft(spec.abs().square(), size)[:, : max_lag + 1]  # (F, max_lag + 1): sum_t x[t] x[t+k]
    sq = frames.square()
    cum = torch.cat([torch.zeros_like(sq[:, :1]), sq.cumsum(-1)], dim=-1)  # (F, N + 1)
    lags = torch.arange(min_lag, max_lag + 1)
    head = cum[:, n - lags]  # (F, K): energy of x[0 : N - k]
    tail = cum[:, -1:] - cum[:, lags]  # (F, K): energy of x[k : N]
    denom = (head * tail).sqrt()
    r = acf[:, min_lag:] / denom.clamp_min(torch.finfo(frames.dtype).tiny)  # (F, K)
    r = torch.where(denom > 0, r, torch.zeros_like(r))
    return r.amax(dim=-1).clamp(-1.0, 1.0)


def periodicity(
    waveform: torch.Tensor,
    sample_rate: int,
    *,
    silence_threshold: float = 1e-4,
) -> torch.Tensor:
    """Median over 64 ms frames of the largest normalized autocorrelation at lags of 1-25 ms.

    Args:
        waveform: ``(T,)`` or ``(B, T)`` real audio (float, finite), at least one 64 ms frame long;
            a trailing partial frame is ignored.
        sample_rate: samples per second (positive int, at least 1 kHz so the lag range has a lag).
        silence_threshold: frames with RMS below this are left out (silence has no pitch).

    Returns:
        ``()`` for a ``(T,)`` input, ``(B,)`` for ``(B, T)``: float32 values in ``[-1, 1]``; about 1 for
        pitched sound, about 0.1 for white noise, 0 for a clip with no frame above the threshold.
    """
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"waveform must be a torch.Tensor, got {type(waveform).__name__}")
    if waveform.ndim not in (1, 2):
        raise ValueError(f"waveform must have shape (T,) or (B, T), got {tuple(waveform.shape)}")
    if waveform.is_complex() or not waveform.is_floating_point():
        raise TypeError(f"waveform must be a real floating-point tensor, got {waveform.dtype}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1000:
        raise ValueError(f"sample_rate must be an int of at least 1000 Hz, got {sample_rate!r}")
    if isinstance(silence_threshold, bool) or not (
        isinstance(silence_threshold, (int, float)) and math.isfinite(silence_threshold) and silence_threshold >= 0
    ):
        raise ValueError(f"silence_threshold must be a finite number >= 0, got {silence_threshold!r}")
    if not torch.isfinite(waveform).all():
        raise ValueError("waveform contains NaN or infinite values")
    frame = round(FRAME_SECONDS * sample_rate)
    min_lag = max(1, round(MIN_LAG_SECONDS * sample_rate))
    max_lag = round(MAX_LAG_SECONDS * sample_rate)
    if waveform.shape[-1] < frame:
        raise ValueError(
            f"waveform must hold at least one 64 ms frame ({frame} samples at {sample_rate} Hz), "
            f"got {waveform.shape[-1]} samples"
        )
    x = waveform.detach().to("cpu", torch.float64)
    batch = x.reshape(-1, x.shape[-1])  # (B, T)
    n_frames = batch.shape[-1] // frame
    frames = batch[:, : n_frames * frame].reshape(-1, frame)  # (B * F, N)
    scores = _frame_scores(frames, min_lag, max_lag).reshape(batch.shape[0], n_frames)  # (B, F)
    voiced = frames.square().mean(-1).sqrt().reshape(batch.shape[0], n_frames) >= silence_threshold  # (B, F)
    out = torch.zeros(batch.shape[0], dtype=torch.float64)
    for i in range(batch.shape[0]):
        if voiced[i].any():
            out[i] = scores[i][voiced[i]].median()
    out = out.float()
    return out.reshape(()) if waveform.ndim == 1 else out
