"""Tests for sashimi.data.synth: deterministic synthetic audio."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from sashimi.data import DTMF_FREQUENCIES, dtmf, karplus_strong, plucked_melody, tone

SR = 16000


def _spectrum(
    x: torch.Tensor, sample_rate: int, pad_to_seconds: float = 4.0
) -> tuple[np.ndarray, float]:
    """Hann-windowed, zero-padded magnitude spectrum and its bin width in Hz."""
    n = max(int(pad_to_seconds * sample_rate), x.numel())
    spec = np.abs(np.fft.rfft(x.double().numpy() * np.hanning(x.numel()), n=n))
    return spec, sample_rate / n


def _refined_peak(spec: np.ndarray, res: float, lo_hz: float, hi_hz: float) -> float:
    """Frequency of the largest bin in [lo_hz, hi_hz], refined by a parabola on log-magnitudes."""
    lo, hi = int(lo_hz / res), int(hi_hz / res) + 1
    k = lo + int(np.argmax(spec[lo:hi]))
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-300)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * res


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: karplus_strong(220.0, 0.5, SR, seed=seed),
        lambda seed: dtmf("123", SR, seed=seed),
        lambda seed: plucked_melody(1.0, SR, seed=seed),
    ],
    ids=["karplus_strong", "dtmf", "plucked_melody"],
)
def test_deterministic_by_seed(make) -> None:
    a, b, c = make(0), make(0), make(1)
    assert a.dtype == torch.float32 and a.ndim == 1
    assert torch.equal(a, b)
    assert a.shape == c.shape and not torch.equal(a, c)
    # the global RNG is neither used nor advanced
    state = torch.random.get_rng_state()
    make(3)
    assert torch.equal(state, torch.random.get_rng_state())


def test_amplitude_bounded() -> None:
    signals = [
        tone(440.0, 0.2, SR, amplitude=1.0),
        dtmf("0123456789*#ABCD", SR),
        karplus_strong(100.0, 1.0, SR, decay=1.0),
        karplus_strong(3000.0, 0.2, SR),
        plucked_melody(3.0, SR, seed=7),
    ]
    for x in signals:
        assert torch.isfinite(x).all()
        assert float(x.abs().max()) <= 1.0
        assert float(x.abs().max()) > 0.3


@pytest.mark.parametrize("frequency", [100.0, 440.0, 1000.0, 3725.0])
def test_tone_fft_peak(frequency: float) -> None:
    x = tone(frequency, 1.0, SR, amplitude=0.5)
    assert x.shape == (SR,)
    spec = np.abs(np.fft.rfft(x.double().numpy()))  # 1 Hz bins
    assert int(np.argmax(spec)) == round(frequency)
    assert abs(float(x.abs().max()) - 0.5) < 1e-3


def test_dtmf_layout_and_peaks() -> None:
    digits = "159#0D*"
    tone_n, gap_n = int(0.1 * SR), int(0.05 * SR)
    x = dtmf(digits, SR, tone_seconds=0.1, gap_seconds=0.05)
    assert x.numel() == len(digits) * tone_n + (len(digits) - 1) * gap_n
    for i, key in enumerate(digits):
        start = i * (tone_n + gap_n)
        segment = x[start : start + tone_n]
        if i < len(digits) - 1:  # silence in the gap
            assert float(x[start + tone_n : start + tone_n + gap_n].abs().max()) == 0.0
        spec, res = _spectrum(segment, SR, pad_to_seconds=2.0)
        row, col = DTMF_FREQUENCIES[key]
        first = _refined_peak(spec, res, 50.0, SR / 2 - 50.0)
        # the other peak, away from the first one
        masked = spec.copy()
        k = int(round(first / res))
        masked[max(k - int(100 / res), 0) : k + int(100 / res)] = 0
        second = _refined_peak(masked, res, 50.0, SR / 2 - 50.0)
        assert sorted([first, second]) == pytest.approx([row, col], abs=3.0)


def test_dtmf_keypad_and_validation() -> None:
    assert DTMF_FREQUENCIES["1"] == (697.0, 1209.0)
    assert DTMF_FREQUENCIES["0"] == (941.0, 1336.0)
    assert DTMF_FREQUENCIES["#"] == (941.0, 1477.0)
    assert DTMF_FREQUENCIES["D"] == (941.0, 1633.0)
    assert len(DTMF_FREQUENCIES) == 16
    assert torch.equal(dtmf("abc", SR), dtmf("ABC", SR))
    with pytest.raises(ValueError, match="digits"):
        dtmf("12x", SR)
    with pytest.raises(ValueError, match="digits"):
        dtmf("", SR)
    with pytest.raises(TypeError, match="digits"):
        dtmf(123, SR)  # type: ignore[arg-type]


@pytest.mark.parametrize("frequency", [82.41, 110.0, 261.63, 440.0, 659.25, 1000.0])
def test_karplus_strong_fundamental(frequency: float) -> None:
    x = karplus_strong(frequency, 1.0, SR, seed=1)
    assert x.shape == (SR,)
    spec, res = _spectrum(x, SR, pad_to_seconds=8.0)
    f0 = _refined_peak(spec, res, 0.6 * frequency, 1.4 * frequency)
    assert f0 == pytest.approx(frequency, abs=1.0)
    # the strongest partial overall is a harmonic of the fundamental
    strongest = float(np.argmax(spec)) * res
    ratio = strongest / frequency
    assert abs(ratio - round(ratio)) < 0.02 and round(ratio) >= 1
    # no DC drift: the signal stays zero-mean over time
    assert abs(float(x.double().mean())) < 1e-2


def test_karplus_strong_decays() -> None:
    x = karplus_strong(220.0, 2.0, SR)
    early = float(x[:1600].abs().max())
    late = float(x[-1600:].abs().max())
    assert late < 0.5 * early
    slower = karplus_strong(220.0, 2.0, SR, decay=0.999)
    assert float(slower[-1600:].abs().max()) > late


def test_plucked_melody_properties() -> None:
    x = plucked_melody(4.0, SR, seed=3)
    assert x.shape == (4 * SR,)
    assert float(x.abs().max()) == pytest.approx(0.9, abs=1e-6)
    # sound throughout: every half second carries energy
    frames = x.reshape(8, -1)
    assert bool((frames.pow(2).mean(dim=1) > 1e-6).all())
    assert plucked_melody(0.5, 8000, seed=3).shape == (4000,)


def test_synth_validation() -> None:
    with pytest.raises(ValueError, match="frequency"):
        tone(8000.0, 1.0, SR)
    with pytest.raises(ValueError, match="frequency"):
        karplus_strong(0.0, 1.0, SR)
    with pytest.raises(ValueError, match="seconds"):
        karplus_strong(440.0, 0.0, SR)
    with pytest.raises(ValueError, match="decay"):
        karplus_strong(440.0, 1.0, SR, decay=1.5)
    with pytest.raises(ValueError, match="amplitude"):
        tone(440.0, 1.0, SR, amplitude=2.0)
    with pytest.raises(ValueError, match="sample_rate"):
        tone(440.0, 1.0, 0)
    with pytest.raises(ValueError, match="seconds"):
        plucked_melody(-1.0, SR)


def test_plucked_melody_ring() -> None:
    """``ring`` only changes how long notes sound into the following ones: ring=0 is one note at a time."""
    assert torch.equal(plucked_melody(2.0, SR, seed=4), plucked_melody(2.0, SR, seed=4, ring=1.0))
    mono, poly = plucked_melody(2.0, SR, seed=4, ring=0.0), plucked_melody(2.0, SR, seed=4, ring=1.0)
    assert float(mono.abs().max()) == pytest.approx(0.9, abs=1e-6)
    # the first note is at least 1/8 s long; before the second pluck both clips hold only it (up to the
    # peak normalization of the whole mix)
    head = SR // 8
    scale = float(mono[:head].abs().max() / poly[:head].abs().max())
    torch.testing.assert_close(mono[:head], poly[:head] * scale, rtol=0, atol=1e-5)
    assert not torch.allclose(mono, poly * scale, atol=1e-3)  # later notes overlap only with ring > 0
    # one note at a time: the clip is a sum of non-overlapping Karplus-Strong notes whose plucks start a
    # note with a full-scale burst; a longer ring adds energy from earlier notes
    assert float(mono.pow(2).mean()) < float((poly * scale).pow(2).mean())
    with pytest.raises(ValueError, match="ring"):
        plucked_melody(1.0, SR, ring=-0.5)
    with pytest.raises(ValueError, match="ring"):
        plucked_melody(1.0, SR, ring=float("inf"))
