"""Spectral features shared by the model families and the evaluation: STFT, mel filter banks, log-mel.

Three pipelines are defined here, each matching the reference implementation it stands in for:

* :func:`mel_filterbank`: the triangular mel filter bank of ``librosa.filters.mel`` (Slaney or HTK mel
  scale, Slaney area normalisation or none), as a ``(n_mels, n_fft // 2 + 1)`` tensor.
* :func:`log_mel_spectrogram`: the DiffWave vocoder conditioning of the SaShiMi diffusion code (the
  Tacotron 2 STFT): n_fft = window = 1024, hop 256, periodic Hann, reflect padding of n_fft / 2 on each
  side, magnitude (power 1), 80 Slaney mel bands from 0 to 8000 Hz, then ``log(clamp(mel, 1e-5))``.
* :func:`sc09_classifier_input`: the SC09 classifier's input (``transforms_wav.py`` of the official
  classifier): pad or trim to 1 s at 16 kHz, ``librosa.feature.melspectrogram(n_mels=32)`` with librosa's
  defaults (n_fft 2048, hop 512, Hann, centred frames, power 2, Slaney mel 0-8000 Hz) and
  ``power_to_db(ref=np.max, top_db=80)``: a ``(32, 32)`` image in dB relative to the clip's maximum.

The centre padding of librosa changed in 0.9.0 from ``'reflect'`` to ``'constant'`` (zeros); the paper-era
classifier was trained with ``'reflect'``, which is the default here (``pad_mode`` selects either).

Everything runs in float32 at least; float64 input stays float64 (the tests compare with librosa in
float64). Inputs are waveforms ``(T,)`` or batches ``(..., T)``; outputs keep the leading dimensions.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "fix_length",
    "hz_to_mel",
    "log_mel_spectrogram",
    "mel_filterbank",
    "mel_spectrogram",
    "mel_to_hz",
    "power_to_db",
    "sc09_classifier_input",
    "stft_magnitude",
]

PadMode = Literal["reflect", "constant"]

# Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4).
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _check_audio(audio: Tensor, name: str = "audio") -> Tensor:
    """A finite floating waveform ``(..., T)`` in float32 or float64 (numpy arrays are converted)."""
    if isinstance(audio, np.ndarray):
        audio = torch.from_numpy(audio)
    if not isinstance(audio, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(audio).__name__}")
    if not audio.is_floating_point():
        raise TypeError(f"{name} must be a floating-point waveform, got dtype {audio.dtype}")
    if audio.ndim == 0 or audio.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., T) with T > 0, got {tuple(audio.shape)}")
    if not bool(torch.isfinite(audio).all()):
        raise ValueError(f"{name} must contain only finite values (found NaN or inf)")
    return audio if audio.dtype == torch.float64 else audio.to(torch.float32)


def hz_to_mel(freq: Tensor | float, htk: bool = False) -> Tensor:
    """Frequencies in Hz to mels: HTK ``2595 log10(1 + f / 700)``, or the Slaney scale (librosa's default)."""
    f = torch.as_tensor(freq, dtype=torch.float64)
    if htk:
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    linear = f / _F_SP
    log_part = _MIN_LOG_MEL + torch.log(torch.clamp(f, min=_MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return torch.where(f >= _MIN_LOG_HZ, log_part, linear)


def mel_to_hz(mels: Tensor | float, htk: bool = False) -> Tensor:
    """Mels to frequencies in Hz, the inverse of :func:`hz_to_mel`."""
    m = torch.as_tensor(mels, dtype=torch.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    linear = _F_SP * m
    log_part = _MIN_LOG_HZ * torch.exp(_LOG_STEP * (m - _MIN_LOG_MEL))
    return torch.where(m >= _MIN_LOG_MEL, log_part, linear)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    norm: Literal["slaney"] | None = "slaney",
    htk: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Triangular mel filters, ``(n_mels, n_fft // 2 + 1)``, equal to ``librosa.filters.mel``.

    ``n_mels + 2`` points evenly spaced in mel between ``fmin`` and ``fmax`` (default ``sample_rate / 2``)
    give the filters' edges and peaks; each filter rises linearly from its lower edge to its peak and falls
    to its upper edge, evaluated at the FFT bin frequencies ``k * sample_rate / n_fft``. ``norm='slaney'``
    scales filter ``m`` by ``2 / (f[m + 2] - f[m])`` (constant energy per band); ``None`` leaves peaks at 1.
    """
    sample_rate = _check_positive_int(sample_rate, "sample_rate")
    n_fft = _check_positive_int(n_fft, "n_fft")
    n_mels = _check_positive_int(n_mels, "n_mels")
    fmax = sample_rate / 2.0 if fmax is None else float(fmax)
    fmin = float(fmin)
    if not 0.0 <= fmin < fmax:
        raise ValueError(f"fmin must satisfy 0 <= fmin < fmax, got fmin={fmin}, fmax={fmax}")
    if norm not in ("slaney", None):
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    fft_freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    mel_edges = torch.linspace(float(hz_to_mel(fmin, htk)), float(hz_to_mel(fmax, htk)), n_mels + 2,
                               dtype=torch.float64)
    hz_edges = mel_to_hz(mel_edges, htk)  # (n_mels + 2,)
    widths = torch.diff(hz_edges)  # (n_mels + 1,)
    ramps = hz_edges[:, None] - fft_freqs[None, :]  # (n_mels + 2, F)
    lower = -ramps[:-2] / widths[:-1, None]  # rising edge, (n_mels, F)
    upper = ramps[2:] / widths[1:, None]  # falling edge, (n_mels, F)
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)  # (n_mels, F)
    if norm == "slaney":
        weights = weights * (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, None]
    return weights.to(dtype)


def stft_magnitude(
    audio: Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    power: float = 1.0,
    center: bool = True,
    pad_mode: PadMode = "reflect",
) -> Tensor:
    """``|STFT(audio)| ** power`` with a periodic Hann window: ``(..., T) -> (..., n_fft // 2 + 1, frames)``.

    With ``center`` the signal is padded by ``n_fft // 2`` on each side (``pad_mode`` 'reflect' or 'constant'),
    giving ``1 + T // hop_length`` frames, as librosa and the Tacotron 2 STFT do. A window shorter than
    ``n_fft`` is zero-padded on both sides to ``n_fft``.
    """
    audio = _check_audio(audio)
    n_fft = _check_positive_int(n_fft, "n_fft")
    hop_length = _check_positive_int(hop_length, "hop_length")
    win_length = n_fft if win_length is None else _check_positive_int(win_length, "win_length")
    if win_length > n_fft:
        raise ValueError(f"win_length must be <= n_fft, got win_length={win_length}, n_fft={n_fft}")
    if pad_mode not in ("reflect", "constant"):
        raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {pad_mode!r}")
    if power <= 0:
        raise ValueError(f"power must be positive, got {power}")
    lead = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1])  # (B, T)
    if center and pad_mode == "reflect" and flat.shape[-1] <= n_fft // 2:
        raise ValueError(f"reflect padding needs more than n_fft // 2 = {n_fft // 2} samples, got {flat.shape[-1]}")
    window = torch.hann_window(win_length, periodic=True, dtype=flat.dtype, device=flat.device)
    spec = torch.stft(flat, n_fft, hop_length=hop_length, win_length=win_length, window=window, center=center,
                      pad_mode=pad_mode, return_complex=True)  # (B, F, frames)
    mag = spec.abs()
    if power != 1.0:
        mag = mag**power
    return mag.reshape(*lead, *mag.shape[-2:])


def mel_spectrogram(
    audio: Tensor,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    fmin: float = 0.0,
    fmax: float | None = None,
    power: float = 2.0,
    win_length: int | None = None,
    pad_mode: PadMode = "reflect",
) -> Tensor:
    """Mel spectrogram ``mel_filterbank @ |STFT| ** power``: ``(..., T) -> (..., n_mels, frames)``.

    With ``power=2`` and the defaults this equals ``librosa.feature.melspectrogram`` (given the same
    ``pad_mode``); Slaney mel scale and normalisation.
    """
    mag = stft_magnitude(audio, n_fft, hop_length, win_length=win_length, power=power, pad_mode=pad_mode)
    fb = mel_filterbank(sample_rate, n_fft, n_mels, fmin=fmin, fmax=fmax, dtype=mag.dtype).to(mag.device)
    return torch.matmul(fb, mag)  # (..., n_mels, frames)


def log_mel_spectrogram(
    audio: Tensor,
    sample_rate: int = 22050,
    n_fft: int = 1024,
    hop_length: int = 256,
    win_length: int = 1024,
    n_mels: int = 80,
    fmin: float = 0.0,
    fmax: float = 8000.0,
    clamp_min: float = 1e-5,
) -> Tensor:
    """The DiffWave vocoder's log-mel: ``log(clamp(mel(|STFT|), 1e-5))``, ``(..., T) -> (..., 80, 1 + T // 256)``.

    Magnitude (power 1) STFT with reflect padding of ``n_fft // 2``, Slaney mel bands, natural log. Audio
    is expected in ``[-1, 1]`` (the official loader divides int16 by 32768). 16000 samples give 63 frames.
    """
    mel = mel_spectrogram(audio, sample_rate, n_fft, hop_length, n_mels, fmin=fmin, fmax=fmax, power=1.0,
                          win_length=win_length, pad_mode="reflect")
    return torch.log(torch.clamp(mel, min=clamp_min))


def power_to_db(spec: Tensor, amin: float = 1e-10, top_db: float | None = 80.0) -> Tensor:
    """``librosa.power_to_db(S, ref=np.max, top_db=80)`` per spectrogram: ``(..., M, N) -> (..., M, N)``.

    ``10 log10(max(S, amin)) - 10 log10(max(S.max(), amin))`` with the maximum taken over the last two
    dimensions of each spectrogram, then floored at ``-top_db`` (values lie in ``[-top_db, 0]``).
    """
    if spec.ndim < 2:
        raise ValueError(f"spec must have shape (..., M, N), got {tuple(spec.shape)}")
    if amin <= 0:
        raise ValueError(f"amin must be positive, got {amin}")
    log_spec = 10.0 * torch.log10(torch.clamp(spec, min=amin))  # (..., M, N)
    ref = torch.amax(spec, dim=(-2, -1), keepdim=True)  # (..., 1, 1)
    log_spec = log_spec - 10.0 * torch.log10(torch.clamp(ref, min=amin))
    if top_db is not None:
        if top_db < 0:
            raise ValueError(f"top_db must be non-negative, got {top_db}")
        floor = torch.amax(log_spec, dim=(-2, -1), keepdim=True) - top_db
        log_spec = torch.maximum(log_spec, floor)
    return log_spec


def fix_length(audio: Tensor, length: int) -> Tensor:
    """Truncate the last dimension to ``length`` samples or zero-pad it at the end: ``(..., T) -> (..., length)``."""
    length = _check_positive_int(length, "length")
    t = audio.shape[-1]
    if t >= length:
        return audio[..., :length]
    return torch.nn.functional.pad(audio, (0, length - t))


def sc09_classifier_input(
    audio: Tensor,
    sample_rate: int = 16000,
    num_samples: int = 16000,
    n_fft: int = 2048,
    hop_length: int = 512,
    n_mels: int = 32,
    top_db: float = 80.0,
    pad_mode: PadMode = "reflect",
) -> Tensor:
    """The SC09 classifier's input: ``(..., T) -> (..., n_mels, 1 + num_samples // hop_length)`` in dB.

    Pad (zeros at the end) or trim to ``num_samples``, power mel spectrogram (Slaney, 0 Hz to
    ``sample_rate / 2``), dB relative to each clip's maximum with a ``top_db`` floor. The defaults give the
    official ``(32, 32)`` image of a 1 s clip at 16 kHz; ``pad_mode`` is the STFT centre padding
    ('reflect' = librosa < 0.9, the paper era; 'constant' = librosa >= 0.9).
    """
    audio = fix_length(_check_audio(audio), num_samples)  # (..., num_samples)
    mel = mel_spectrogram(audio, sample_rate, n_fft, hop_length, n_mels, power=2.0, pad_mode=pad_mode)
    return power_to_db(mel, top_db=top_db)
