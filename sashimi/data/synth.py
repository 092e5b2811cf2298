"""Deterministic synthetic audio for tests and demos: sine tones, DTMF digits, plucked strings.

Every function returns a float32 tensor of shape ``(T,)`` with ``T = round(seconds * sample_rate)``
(DTMF: the sum of its tone and gap lengths) and peak amplitude at most 1. Functions that take a
``seed`` are deterministic given it and use their own random generator (global RNG state is
neither used nor changed).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor

__all__ = ["DTMF_FREQUENCIES", "dtmf", "karplus_strong", "plucked_melody", "tone"]

_ROWS = (697.0, 770.0, 852.0, 941.0)
_COLS = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")

#: ``digit -> (row frequency, column frequency)`` in Hz for the 16 DTMF keys.
DTMF_FREQUENCIES: dict[str, tuple[float, float]] = {
    key: (_ROWS[r], _COLS[c]) for r, line in enumerate(_KEYPAD) for c, key in enumerate(line)
}

# Minor pentatonic scale degrees (semitones above the root) used by plucked_melody.
_PENTATONIC = (0, 3, 5, 7, 10)


def _check_rate(sample_rate: int) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise TypeError(f"sample_rate must be an int, got {type(sample_rate).__name__}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    return int(sample_rate)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _num_samples(seconds: float, sample_rate: int, name: str = "seconds") -> int:
    if not (_is_real(seconds) and math.isfinite(seconds)) or seconds <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {seconds!r}")
    n = int(round(seconds * sample_rate))
    if n == 0:
        raise ValueError(f"{name}={seconds} is shorter than one sample at {sample_rate} Hz")
    return n


def _check_frequency(frequency: float, sample_rate: int, allow_zero: bool = False) -> float:
    nyquist = sample_rate / 2
    ok = _is_real(frequency) and math.isfinite(frequency)
    ok = ok and (0 <= frequency if allow_zero else 0 < frequency) and frequency < nyquist
    if not ok:
        lower = "[0" if allow_zero else "(0"
        raise ValueError(
            f"frequency must be in {lower}, {nyquist:g}) Hz (below Nyquist for sample_rate="
            f"{sample_rate}), got {frequency!r}"
        )
    return float(frequency)


def tone(
    frequency: float, seconds: float, sample_rate: int = 16000, amplitude: float = 0.5
) -> Tensor:
    """Sine tone ``amplitude * sin(2 pi f t)`` starting at phase 0. Returns ``(T,)`` float32."""
    sample_rate = _check_rate(sample_rate)
    frequency = _check_frequency(frequency, sample_rate, allow_zero=True)
    n = _num_samples(seconds, sample_rate)
    if not (_is_real(amplitude) and 0 <= amplitude <= 1):
        raise ValueError(f"amplitude must be in [0, 1], got {amplitude!r}")
    t = np.arange(n, dtype=np.float64) / sample_rate
    return torch.from_numpy(amplitude * np.sin(2 * np.pi * frequency * t)).float()


def dtmf(
    digits: str,
    sample_rate: int = 16000,
    tone_seconds: float = 0.1,
    gap_seconds: float = 0.05,
    seed: int = 0,
) -> Tensor:
    """DTMF (touch-tone) signal for ``digits`` (``0-9``, ``*``, ``#``, ``A-D``; case-insensitive).

    Each digit is the sum of its row (697/770/852/941 Hz) and column (1209/1336/1477/1633 Hz)
    sines, amplitude 0.5 each with seed-dependent random phases, lasting ``tone_seconds``; digits
    are separated by ``gap_seconds`` of silence (none after the last). Returns ``(T,)`` float32.
    """
    sample_rate = _check_rate(sample_rate)
    if not isinstance(digits, str):
        raise TypeError(f"digits must be a str, got {type(digits).__name__}")
    if not digits:
        raise ValueError("digits must be a non-empty string")
    digits = digits.upper()
    bad = sorted({d for d in digits if d not in DTMF_FREQUENCIES})
    if bad:
        raise ValueError(f"digits contains invalid DTMF keys {bad}; allowed: 0-9, *, #, A-D")
    n_tone = _num_samples(tone_seconds, sample_rate, "tone_seconds")
    if not (_is_real(gap_seconds) and math.isfinite(gap_seconds)) or gap_seconds < 0:
        raise ValueError(f"gap_seconds must be a non-negative finite number, got {gap_seconds!r}")
    for f in _COLS:
        _check_frequency(f, sample_rate)
    n_gap = int(round(gap_seconds * sample_rate))

    rng = np.random.default_rng(seed)
    t = np.arange(n_tone, dtype=np.float64) / sample_rate
    out = np.zeros(len(digits) * n_tone + (len(digits) - 1) * n_gap, dtype=np.float64)
    for i, key in enumerate(digits):
        low, high = DTMF_FREQUENCIES[key]
        phases = rng.uniform(0.0, 2 * np.pi, size=2)
        start = i * (n_tone + n_gap)
        out[start : start + n_tone] = 0.5 * (
            np.sin(2 * np.pi * low * t + phases[0]) + np.sin(2 * np.pi * high * t + phases[1])
        )
    return torch.from_numpy(out).float()


def _slow_mode_weight(state: np.ndarray, m: int, w0: float, w1: float, w2: float) -> float:
    """Amplitude of the slowly decaying near-DC mode of the Karplus-Strong loop in ``state``.

    The loop ``y[k] = w0 y[k-M] + w1 y[k-M-1] + w2 y[k-M-2]`` has exactly one positive
    characteristic root ``r`` (close to 1: a DC offset that decays more slowly than the notes).
    ``Q = sum_i B_i y[L-i]`` over the first ``L = M + 2`` samples is that mode's amplitude
    (``Q_k = r^k Q_0``); a burst with ``Q = 0`` produces no DC drift.
    """
    length = m + 2
    coeffs = np.zeros(length + 1)
    coeffs[m], coeffs[m + 1], coeffs[m + 2] = w0, w1, w2

    def poly(z: float) -> float:  # z^L - w0 z^2 - w1 z - w2: one sign change, one positive root
        return z**length - w0 * z**2 - w1 * z - w2

    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if poly(mid) < 0 else (lo, mid)
    r = hi
    weights = np.zeros(length + 2)  # weights[i] = B_i, B_{L+1} = 0, B_i = (a_i + B_{i+1}) / r
    for i in range(length, 0, -1):
        weights[i] = (coeffs[i] + weights[i + 1]) / r
    return float(np.dot(weights[1 : length + 1], state[::-1]))


def karplus_strong(
    frequency: float,
    seconds: float,
    sample_rate: int = 16000,
    decay: float = 0.996,
    seed: int = 0,
) -> Tensor:
    """Plucked string by the Karplus-Strong algorithm. Returns ``(T,)`` float32, peak at most 1.

    A noise burst (peak 1, drawn from ``seed``, with its slowly decaying DC component removed)
    fills a delay line of ``sample_rate / frequency`` samples that feeds back through a
    two-point averaging filter scaled by ``decay`` (in ``(0, 1]``, per period). The fractional
    part of the loop length is realized by linear interpolation whose weight gives the exact
    phase delay at the fundamental, so the pitch is within a fraction of a Hz for notes up to
    about ``sample_rate / 16``; very high notes die away fast and come out somewhat flat, as in
    the classic algorithm. The recursion runs one delay-line period at a time (vectorized within
    a period): 8 s of a 440 Hz note at 16 kHz take about 20 ms.
    """
    sample_rate = _check_rate(sample_rate)
    frequency = _check_frequency(frequency, sample_rate)
    n = _num_samples(seconds, sample_rate)
    if not (_is_real(decay) and 0 < decay <= 1):
        raise ValueError(f"decay must be in (0, 1], got {decay!r}")

    # Loop delay P = M + 0.5 (averaging filter) + delta (linear interpolation), M >= 1 since
    # f < sr/2. The interpolation weight d gives phase delay exactly delta at the fundamental
    # w: arg((1 - d) + d e^{-iw}) = -w delta
    #    <=>  d = sin(w delta) / (sin(w delta) + sin(w (1 - delta))).
    period = sample_rate / frequency
    m = int(math.floor(period - 0.5))
    omega = 2 * math.pi * frequency / sample_rate
    theta = omega * (period - 0.5 - m)
    d = math.sin(theta) / (math.sin(theta) + math.sin(omega - theta))
    # y[k] = decay/2 * ((1-d) y[k-M] + y[k-M-1] + d y[k-M-2])
    w0, w1, w2 = 0.5 * decay * (1 - d), 0.5 * decay, 0.5 * decay * d

    rng = np.random.default_rng(seed)
    burst = rng.uniform(-1.0, 1.0, size=m + 2)
    dc = _slow_mode_weight(np.ones(m + 2), m, w0, w1, w2)
    burst -= _slow_mode_weight(burst, m, w0, w1, w2) / dc  # no slowly decaying DC offset
    burst /= np.abs(burst).max()

    y = np.zeros(max(n, m + 2), dtype=np.float64)
    y[: m + 2] = burst
    k = m + 2
    while k < n:
        end = min(k + m, n)
        length = end - k
        y[k:end] = (
            w0 * y[k - m : k - m + length]
            + w1 * y[k - m - 1 : k - m - 1 + length]
            + w2 * y[k - m - 2 : k - m - 2 + length]
        )
        k = end
    # Non-negative weights summing to decay <= 1 keep |y| <= max|burst| = 1.
    return torch.from_numpy(y[:n]).float()


def plucked_melody(
    seconds: float,
    sample_rate: int = 16000,
    seed: int = 0,
    *,
    root: float = 110.0,
    octaves: int = 2,
    ring: float = 1.0,
) -> Tensor:
    """A random melody of Karplus-Strong plucks from a minor pentatonic scale on ``root`` Hz.

    Notes (durations of 1/8, 1/4 or 1/2 s, random loudness) start one after the other; each rings
    on for up to ``ring`` seconds into the following notes (``ring=0``: one note at a time, each
    stopped by the next pluck). The mix is normalized to peak 0.9.
    Deterministic given ``seed``. Returns ``(T,)`` float32.
    """
    sample_rate = _check_rate(sample_rate)
    n = _num_samples(seconds, sample_rate)
    if octaves < 1:
        raise ValueError(f"octaves must be at least 1, got {octaves!r}")
    if not (_is_real(ring) and math.isfinite(ring)) or ring < 0:
        raise ValueError(f"ring must be a non-negative finite number of seconds, got {ring!r}")
    ring_samples = round(ring * sample_rate)
    scale = [
        root * 2.0 ** ((12 * o + s) / 12) for o in range(octaves) for s in _PENTATONIC
    ] + [root * 2.0**octaves]
    for f in scale:
        _check_frequency(f, sample_rate)

    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=np.float64)
    start = 0
    while start < n:
        duration = int(round(rng.choice((0.125, 0.25, 0.5)) * sample_rate))
        freq = float(scale[rng.integers(len(scale))])
        gain = float(rng.uniform(0.4, 1.0))
        note_seed = int(rng.integers(2**31))
        length = min(n - start, duration + ring_samples)
        note = karplus_strong(freq, length / sample_rate, sample_rate, decay=0.995, seed=note_seed)
        out[start : start + note.numel()] += gain * note.double().numpy()[: n - start]
        start += max(duration, 1)
    peak = np.abs(out).max()
    if peak > 0:
        out *= 0.9 / peak
    return torch.from_numpy(out).float()
