"""Waveform quantization (mu-law and linear) and audio file input/output.

Token conventions follow the reference SaShiMi data pipeline. With ``b`` bits there are ``2**b``
classes, ``mu = 2**b - 1`` and the zero token (silence) is ``2**(b - 1)`` (128 for 8 bits).

Encoding of a waveform ``x`` (optionally min-max scaled first, see :func:`minmax_scale`):

* ``x`` is clipped to ``[-1, 1]``;
* mu-law only: ``y = sign(x) * log1p(mu * |x + 1e-8|) / log1p(mu)`` (the reference companding,
  with its epsilon inside the absolute value, so it folds over on ``(-1e-8, 0)``: invisible up
  to 15 bits, a few sub-cell tokens at 16 bits); linear: ``y = x``;
* ``v = (y + 1) / 2`` in ``[0, 1]``;
* mu-law: ``q = floor(v * (2**b - 0.01) + 0.005)`` (the reference quantizer);
  linear: ``q = floor(v * 2**b)``; both clamped to ``[0, 2**b - 1]``.

Decoding of a token ``q``: ``y = q / 2**(b - 1) - 1``; linear returns ``y``, mu-law returns
``sign(y) * ((1 + mu)**|y| - 1) / mu``. Both decode the zero token to exactly 0.

Round-trip error: linear satisfies ``0 <= x - decode(encode(x)) <= 2 / 2**b`` (one step, reached
only at ``x = 1``). For mu-law the error is at most ``g'(min(1, |y| + d)) * d + 1e-8`` with
``d = 2.01 / (2**b - 0.01)`` (a companded cell, width ``2 / (2**b - 0.01)``, plus the offset of the
decoded point from the cell's lower edge), ``y`` the companded input,
``g'(t) = log1p(mu) * (1 + mu)**t / mu`` the slope of the expansion curve (so ``g' * d`` is the
local step size) and 1e-8 the companding epsilon.

Companding and quantization run in float64 (after the min-max step, which runs in the input's dtype
as the reference does), so 16-bit codes are exact; the encoder reproduces the reference tokens
exactly (see ``tests/test_audio.py``).
"""

from __future__ import annotations

import math
import os
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "check_finite_samples",
    "dequantize",
    "linear_decode",
    "linear_encode",
    "load_audio",
    "minmax_scale",
    "mu_law_decode",
    "mu_law_encode",
    "quantize",
    "resample",
    "save_audio",
]

Quantization = Literal["mu-law", "linear"]

_MINMAX_EPS = 1e-6  # added to (max - min) by the reference min-max scaling
_MULAW_EPS = 1e-8  # added inside |.| by the reference mu-law companding
_QUANT_EPS = 0.01  # reference quantizer: floor(v * (2**bits - eps) + eps / 2)


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"bits must be an int, got {type(bits).__name__}")
    bits = int(bits)
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    return bits


def _as_waveform(x: Tensor, name: str = "x") -> Tensor:
    """Check that ``x`` is a finite floating-point tensor (numpy arrays are converted)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point waveform, got dtype {x.dtype}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        kind = "NaN" if bool(torch.isnan(x).any()) else "inf"
        raise ValueError(f"{name} must contain only finite values, found {kind}")
    return x


def _as_tokens(q: Tensor, bits: int, name: str = "q") -> Tensor:
    """Check that ``q`` is an integer tensor with values in ``[0, 2**bits)``."""
    if isinstance(q, np.ndarray):
        q = torch.from_numpy(q)
    if not isinstance(q, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integer tokens, got {type(q).__name__}")
    if q.is_floating_point() or q.is_complex() or q.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of tokens, got dtype {q.dtype}")
    if q.numel():
        lo, hi = int(q.min()), int(q.max())
        if lo < 0 or hi >= 2**bits:
            raise ValueError(
                f"{name} must lie in [0, {2**bits}) for bits={bits}, got values in [{lo}, {hi}]"
            )
    return q


def _compute_dtype(x: Tensor) -> torch.dtype:
    # float64 everywhere except on backends without it (MPS)
    return torch.float32 if x.device.type == "mps" else torch.float64


def _check_quantization(quantization: str) -> str:
    if not isinstance(quantization, str):
        raise TypeError(f"quantization must be a str, got {type(quantization).__name__}")
    key = quantization.lower().replace("_", "-")
    if key in ("mu-law", "mulaw"):
        return "mu-law"
    if key == "linear":
        return "linear"
    raise ValueError(f"quantization must be 'mu-law' or 'linear', got {quantization!r}")


# --------------------------------------------------------------------------------------------
# quantization
# --------------------------------------------------------------------------------------------


def minmax_scale(x: Tensor, dim: int | Sequence[int] | None = -1) -> Tensor:
    """Per-clip min-max scaling to ``[-1, 1]``, as the reference data pipeline does.

    Computes ``-1 + 2 * (x - min) / (max - min + 1e-6)`` with min and max taken over ``dim``
    (an int, a tuple of ints, or None for the whole tensor), so the maximum maps just below 1.
    Constant clips (max == min) map to 0. Same shape and dtype as ``x``, any shape.
    """
    x = _as_waveform(x)
    if dim is None:
        dims: tuple[int, ...] = tuple(range(x.ndim))
    elif isinstance(dim, int):
        dims = (dim,)
    else:
        dims = tuple(int(d) for d in dim)
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension to min-max scale")
    for d in dims:
        if x.shape[d] == 0:
            raise ValueError(f"x has size 0 along dim {d}: cannot min-max scale an empty clip")
    lo = torch.amin(x, dim=dims, keepdim=True)
    hi = torch.amax(x, dim=dims, keepdim=True)
    span = hi - lo
    scaled = -1 + 2 * (x - lo) / (span + _MINMAX_EPS)
    return torch.where(span > 0, scaled, torch.zeros_like(scaled))


def _maybe_minmax(x: Tensor, minmax: bool, dim: int | Sequence[int] | None) -> Tensor:
    x = _as_waveform(x)
    return minmax_scale(x, dim=dim) if minmax else x


def mu_law_encode(
    x: Tensor, bits: int = 8, *, minmax: bool = False, dim: int | Sequence[int] | None = -1
) -> Tensor:
    """Mu-law encode a waveform to tokens in ``[0, 2**bits)``.

    ``x``: floating waveform of any shape, values in ``[-1, 1]`` (clipped otherwise). With
    ``minmax=True`` the input is first scaled per clip with :func:`minmax_scale` over ``dim``
    (the reference data pipeline). Returns an int64 tensor of the same shape.
    """
    bits = _check_bits(bits)
    x = _maybe_minmax(x, minmax, dim)
    mu = 2**bits - 1
    x = x.to(_compute_dtype(x)).clamp(-1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * torch.abs(x + _MULAW_EPS)) / math.log1p(mu)
    v = (y + 1) / 2
    q = torch.floor(v * (2**bits - _QUANT_EPS) + _QUANT_EPS / 2)
    return q.clamp_(0, 2**bits - 1).long()


def mu_law_decode(q: Tensor, bits: int = 8, dtype: torch.dtype = torch.float32) -> Tensor:
    """Decode mu-law tokens ``q`` (integer tensor, any shape) to a waveform in ``[-1, 1)``.

    ``x = q / 2**(bits-1) - 1``, then ``sign(x) * ((1 + mu)**|x| - 1) / mu``. Same shape as ``q``.
    """
    bits = _check_bits(bits)
    q = _as_tokens(q, bits)
    mu = 2**bits - 1
    x = q.to(_compute_dtype(q)) / 2 ** (bits - 1) - 1
    x = torch.sign(x) * (torch.pow(1.0 + mu, torch.abs(x)) - 1) / mu
    return x.to(dtype)


def linear_encode(
    x: Tensor, bits: int = 8, *, minmax: bool = False, dim: int | Sequence[int] | None = -1
) -> Tensor:
    """Uniformly quantize a waveform to tokens in ``[0, 2**bits)``.

    ``q = clamp(floor((x + 1) / 2 * 2**bits), 0, 2**bits - 1)``: ``2**bits`` cells of width
    ``2 / 2**bits`` covering ``[-1, 1]``, with 0 on the lower edge of token ``2**(bits-1)``.
    ``x``: floating waveform of any shape (clipped to ``[-1, 1]``; ``minmax`` as in
    :func:`mu_law_encode`). Returns an int64 tensor of the same shape.
    """
    bits = _check_bits(bits)
    x = _maybe_minmax(x, minmax, dim)
    x = x.to(_compute_dtype(x)).clamp(-1.0, 1.0)
    q = torch.floor((x + 1) / 2 * 2**bits)
    return q.clamp_(0, 2**bits - 1).long()


def linear_decode(q: Tensor, bits: int = 8, dtype: torch.dtype = torch.float32) -> Tensor:
    """Decode linear tokens ``q`` (integer tensor, any shape): ``x = q / 2**(bits-1) - 1``.

    Returns the lower edge of each cell, so token ``2**(bits-1)`` decodes to exactly 0 and
    ``0 <= x - linear_decode(linear_encode(x)) <= 2 / 2**bits``. Same shape as ``q``.
    """
    bits = _check_bits(bits)
    q = _as_tokens(q, bits)
    x = q.to(_compute_dtype(q)) / 2 ** (bits - 1) - 1
    return x.to(dtype)


def quantize(
    x: Tensor,
    bits: int = 8,
    quantization: Quantization = "mu-law",
    *,
    minmax: bool = False,
    dim: int | Sequence[int] | None = -1,
) -> Tensor:
    """Encode a waveform (any shape) to int64 tokens, ``'mu-law'`` or ``'linear'`` quantization."""
    kind = _check_quantization(quantization)
    encode = mu_law_encode if kind == "mu-law" else linear_encode
    return encode(x, bits, minmax=minmax, dim=dim)


def dequantize(
    q: Tensor,
    bits: int = 8,
    quantization: Quantization = "mu-law",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Decode tokens (integer tensor, any shape) produced by :func:`quantize` to a waveform."""
    kind = _check_quantization(quantization)
    decode = mu_law_decode if kind == "mu-law" else linear_decode
    return decode(q, bits, dtype=dtype)


# --------------------------------------------------------------------------------------------
# audio files
# --------------------------------------------------------------------------------------------


def _check_rate(rate: int, name: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(rate).__name__}")
    if rate <= 0:
        raise ValueError(f"{name} must be a positive number of samples per second, got {rate}")
    return int(rate)


def resample(x: Tensor, orig_sr: int, new_sr: int) -> Tensor:
    """Resample a waveform ``(T,)`` or channels-first ``(C, T)`` from ``orig_sr`` to ``new_sr`` Hz.

    Uses soxr (high quality). Returns a tensor of the same layout, length about
    ``T * new_sr / orig_sr``, on ``x``'s device; float64 input stays float64, other floating
    dtypes give float32.
    """
    x = _as_waveform(x)
    orig_sr = _check_rate(orig_sr, "orig_sr")
    new_sr = _check_rate(new_sr, "new_sr")
    if x.ndim not in (1, 2):
        raise ValueError(f"x must have shape (T,) or (C, T), got {tuple(x.shape)}")
    if orig_sr == new_sr:
        return x.clone()
    import soxr

    out_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    data = x.detach().to("cpu", out_dtype).numpy()
    data = data if x.ndim == 1 else data.T  # soxr wants (frames, channels)
    out = soxr.resample(np.ascontiguousarray(data), orig_sr, new_sr)
    out = out if x.ndim == 1 else out.T
    return torch.from_numpy(np.ascontiguousarray(out)).to(x.device)


_resample = resample  # load_audio's ``resample`` flag shadows the function name there


def load_audio(
    path: str | os.PathLike,
    sample_rate: int | None = None,
    *,
    resample: bool = False,
    mono: bool = True,
    normalize: bool = False,
) -> tuple[Tensor, int]:
    """Read an audio file with soundfile; returns ``(waveform, sample_rate)``.

    ``waveform`` is float32 of shape ``(T,)`` (channels averaged) when ``mono``, else ``(C, T)``
    (also for single-channel files). Integer PCM files (WAV 16/24/32-bit, FLAC, ...) give values in
    ``[-1, 1)``. Float files (WAV/AIFF 32- or 64-bit float) store samples as they are and may exceed
    ``[-1, 1]``: such a file is returned unchanged with a warning naming it and its peak (quantizing
    or saving clips those samples), or, with ``normalize=True``, divided by its peak so that it lies in
    ``[-1, 1]`` (a file within ``[-1, 1]`` is never rescaled). A file with NaN or infinite samples is
    refused (ValueError naming the file and the first such sample).

    If ``sample_rate`` is given and differs from the file's rate, the audio is resampled with soxr
    when ``resample=True``; otherwise a ValueError is raised. The returned rate is the rate of the
    returned waveform.
    """
    import soundfile as sf

    path = Path(path)
    if sample_rate is not None:
        sample_rate = _check_rate(sample_rate, "sample_rate")
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    if path.is_dir():
        raise ValueError(f"cannot read audio from {path}: it is a directory")
    try:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise ValueError(f"cannot read audio file {path}: {exc}") from exc
    if data.shape[0] == 0:
        raise ValueError(f"audio file {path} contains no samples")
    check_finite_samples(data, path)
    peak = float(np.abs(data).max())
    if peak > 1.0:
        if normalize:
            data = data / np.float32(peak)
        else:
            warnings.warn(
                f"{path}: samples reach {peak:.4g}, outside [-1, 1] (a float file); they are returned as stored "
                "and are clipped when quantized or saved. Pass normalize=True to divide the file by its peak.",
                stacklevel=2,
            )
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # (C, T)
    if mono:
        wav = wav.mean(dim=0)
    rate = int(file_rate)
    if sample_rate is not None and sample_rate != rate:
        if not resample:
            raise ValueError(
                f"{path} has sample rate {rate} Hz but {sample_rate} Hz was expected; "
                "pass resample=True to resample it"
            )
        wav = _resample(wav, rate, sample_rate)
        rate = sample_rate
    return wav.to(torch.float32).contiguous(), rate


def check_finite_samples(data: np.ndarray, path: str | os.PathLike, offset: int = 0) -> None:
    """Raise ValueError naming ``path`` and the first bad sample if ``data`` (T, C) has NaN or inf.

    ``offset`` is the frame index of ``data[0]`` in the file (for block-wise reads).
    """
    finite = np.isfinite(data)
    if finite.all():
        return
    frame, channel = (int(i) for i in np.argwhere(~finite)[0])
    value = data[frame, channel]
    raise ValueError(
        f"audio file {path} contains non-finite samples (the first: {value} at frame {offset + frame}, "
        f"channel {channel})"
    )


def save_audio(
    path: str | os.PathLike,
    waveform: Tensor | np.ndarray,
    sample_rate: int,
    *,
    subtype: str = "PCM_16",
    format: str | None = None,
) -> Path:
    """Write a waveform ``(T,)`` or channels-first ``(C, T)``, values in ``[-1, 1]``, to ``path``.

    Uses soundfile; ``subtype`` defaults to 16-bit PCM, ``format`` to the one named by the file
    extension (WAV when there is none or it is unknown). Values are clipped to ``[-1, 1]``; parent
    directories are created. The audio is written to a temporary file in the same directory and
    moved into place with ``os.replace``, so an error never leaves a partial file (an existing file
    at ``path`` stays intact). Returns the path written.
    """
    import soundfile as sf

    path = Path(path)
    sample_rate = _check_rate(sample_rate, "sample_rate")
    if isinstance(waveform, Tensor):
        if not waveform.is_floating_point():
            raise TypeError(f"waveform must be floating point, got dtype {waveform.dtype}")
        dtype = torch.float64 if waveform.dtype == torch.float64 else torch.float32
        data = waveform.detach().to("cpu", dtype).numpy()
    elif isinstance(waveform, np.ndarray):
        if not np.issubdtype(waveform.dtype, np.floating):
            raise TypeError(f"waveform must be floating point, got dtype {waveform.dtype}")
        data = waveform
    else:
        raise TypeError(
            f"waveform must be a torch.Tensor or numpy array, got {type(waveform).__name__}"
        )
    if data.ndim not in (1, 2) or data.size == 0:
        raise ValueError(f"waveform must have shape (T,) or (C, T) with T, C > 0, got {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("waveform must contain only finite values (found NaN or inf)")
    data = np.clip(data, -1.0, 1.0)
    data = data if data.ndim == 1 else data.T  # soundfile wants (frames, channels)

    if format is None:
        ext = path.suffix[1:].upper()
        format = ext if ext in sf.available_formats() else "WAV"
    if not sf.check_format(format, subtype):
        raise ValueError(f"subtype {subtype!r} is not valid for format {format!r}")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        sf.write(str(tmp), np.ascontiguousarray(data), sample_rate, subtype=subtype, format=format)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
