"""``sashimi.metrics.periodicity``: a direct float64 loop as the reference, tones, noise, silence, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sashimi.data import karplus_strong, plucked_melody, tone
from sashimi.metrics import periodicity

SR = 16000


def _reference(x: np.ndarray, sample_rate: int, silence_threshold: float = 1e-4) -> float:
    """The definition written out: per 64 ms frame, max over lags 1..25 ms of the cosine similarity of the
    frame with its own shifted copy; the (lower) median over the frames above the silence threshold."""
    frame = round(0.064 * sample_rate)
    lags = range(max(1, round(0.001 * sample_rate)), round(0.025 * sample_rate) + 1)
    scores = []
    for start in range(0, len(x) - frame + 1, frame):
        f = x[start : start + frame].astype(np.float64)
        if math.sqrt(np.mean(f * f)) < silence_threshold:
            continue
        best = -np.inf
        for k in lags:
            a, b = f[: frame - k], f[k:]
            d = math.sqrt(np.dot(a, a) * np.dot(b, b))
            best = max(best, np.dot(a, b) / d if d > 0 else 0.0)
        scores.append(best)
    if not scores:
        return 0.0
    return float(np.sort(scores)[(len(scores) - 1) // 2])


def test_matches_the_direct_definition() -> None:
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(SR, generator=g)
    clips = torch.stack([
        noise,
        plucked_melody(1.0, SR, seed=3),
        tone(330.0, 1.0, SR) + 0.3 * noise,
        torch.cat([torch.zeros(SR // 2), karplus_strong(200.0, 0.5, SR, seed=1)]),  # half silent
    ])  # (4, T)
    got = periodicity(clips, SR)
    assert got.shape == (4,) and got.dtype == torch.float32
    want = torch.tensor([_reference(c.numpy(), SR) for c in clips])
    torch.testing.assert_close(got, want.float(), rtol=0, atol=1e-5)
    # the same clip alone gives the same value, as a 0-d tensor
    one = periodicity(clips[1], SR)
    assert one.shape == () and float(one) == pytest.approx(float(got[1]), abs=1e-6)
    # another rate: frames and lags follow the sample rate
    x = tone(250.0, 0.5, 8000) + 0.5 * torch.randn(4000, generator=g)
    assert float(periodicity(x, 8000)) == pytest.approx(_reference(x.numpy(), 8000), abs=1e-5)


@pytest.mark.parametrize("frequency", [55.0, 110.0, 220.0, 440.0, 997.0])
def test_tones_score_one(frequency: float) -> None:
    assert float(periodicity(tone(frequency, 1.0, SR), SR)) > 0.99


def test_integer_period_is_exactly_one_and_scale_free() -> None:
    """A signal repeating every 80 samples (5 ms, inside the lag range) correlates perfectly at lag 80."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, generator=g).repeat(200)  # (16000,)
    assert float(periodicity(x, SR)) == pytest.approx(1.0, abs=1e-6)
    y = torch.randn(SR, generator=g)
    assert float(periodicity(1e3 * y, SR)) == pytest.approx(float(periodicity(y, SR)), abs=1e-6)


def test_white_noise_scores_about_a_tenth() -> None:
    """Max of ~385 correlations of independent samples over a 1024-sample frame: about sqrt(2 ln 385 / 1024)."""
    g = torch.Generator().manual_seed(2)
    got = periodicity(torch.randn(8, 2 * SR, generator=g), SR)  # (8,)
    assert ((got > 0.07) & (got < 0.15)).all(), got
    assert float(got.mean()) == pytest.approx(math.sqrt(2 * math.log(385) / 1024), abs=0.02)


def test_plucked_strings_are_periodic() -> None:
    clips = torch.stack([plucked_melody(2.0, SR, seed=s, root=110.0 * 2 ** (s / 12)) for s in range(4)])
    assert (periodicity(clips, SR) > 0.85).all()


def test_silence_is_zero_not_nan() -> None:
    assert float(periodicity(torch.zeros(SR), SR)) == 0.0
    assert float(periodicity(torch.full((SR,), 1e-6), SR)) == 0.0  # below the threshold
    out = periodicity(torch.stack([torch.zeros(SR), tone(220.0, 1.0, SR)]), SR)
    assert out[0] == 0.0 and out[1] > 0.99
    # a constant above the threshold correlates perfectly with itself: a DC offset is "periodic"
    assert float(periodicity(torch.full((SR,), 0.5), SR)) == pytest.approx(1.0)
    # the silent two thirds of a clip do not pull its median down
    mostly_silent = torch.cat([torch.zeros(2 * SR), tone(220.0, 1.0, SR)])
    assert float(periodicity(mostly_silent, SR)) > 0.99
    # threshold 0: every frame counts, and all-zero frames score 0
    assert float(periodicity(mostly_silent, SR, silence_threshold=0.0)) == 0.0


def test_bad_input_is_a_clear_error() -> None:
    x = tone(220.0, 1.0, SR)
    with pytest.raises(ValueError, match=r"waveform must have shape \(T,\) or \(B, T\)"):
        periodicity(x.reshape(1, 1, -1), SR)
    with pytest.raises(ValueError, match="waveform must have shape"):
        periodicity(torch.tensor(1.0), SR)
    with pytest.raises(TypeError, match="waveform must be a torch.Tensor"):
        periodicity(x.numpy(), SR)
    with pytest.raises(TypeError, match="real floating-point"):
        periodicity(torch.zeros(SR, dtype=torch.int16), SR)
    bad = x.clone()
    bad[100] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        periodicity(bad, SR)
    bad[100] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        periodicity(bad, SR)
    with pytest.raises(ValueError, match="at least one 64 ms frame"):
        periodicity(x[:1000], SR)
    for rate in (0, 16000.0, True, 500):
        with pytest.raises(ValueError, match="sample_rate"):
            periodicity(x, rate)
    for thr in (-1.0, float("nan"), "0"):
        with pytest.raises(ValueError, match="silence_threshold"):
            periodicity(x, SR, silence_threshold=thr)
