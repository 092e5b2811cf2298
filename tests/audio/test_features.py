"""sashimi.audio.features against librosa (the library that defines these pipelines), in float64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sashimi.audio.features import (
    fix_length,
    hz_to_mel,
    log_mel_spectrogram,
    mel_filterbank,
    mel_spectrogram,
    mel_to_hz,
    power_to_db,
    sc09_classifier_input,
    stft_magnitude,
)

librosa = pytest.importorskip("librosa", reason="librosa (dev extra) is the reference for the audio features")


def _noise_tone(n: int, sr: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    return 0.5 * np.sin(2 * np.pi * 440.0 * t) * np.exp(-3 * t) + 0.05 * rng.standard_normal(n)


def _librosa_mel64(y, *, sr, n_fft, hop_length, power, n_mels, fmax, pad_mode):
    """``librosa.feature.melspectrogram`` with its filter bank in float64 (librosa's default basis is float32)."""
    spec = np.abs(librosa.stft(y, n_fft=n_fft, hop_length=hop_length, window="hann", center=True,
                               pad_mode=pad_mode)) ** power
    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmax=fmax, dtype=np.float64)
    return basis @ spec


def test_librosa_mel64_is_librosa_melspectrogram():
    """The float64 reference above differs from librosa's own call only by its float32 filter bank."""
    y = _noise_tone(16000, 16000, 7)
    ref32 = librosa.feature.melspectrogram(y=y, sr=16000, n_mels=32, pad_mode="constant")
    ours = _librosa_mel64(y, sr=16000, n_fft=2048, hop_length=512, power=2.0, n_mels=32, fmax=None,
                          pad_mode="constant")
    np.testing.assert_allclose(ours, ref32, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("htk", [False, True])
def test_mel_scale_matches_librosa_and_inverts(htk):
    freqs = np.array([0.0, 20.0, 500.0, 999.9, 1000.0, 1000.1, 4000.0, 8000.0, 11025.0])
    np.testing.assert_allclose(hz_to_mel(torch.from_numpy(freqs), htk).numpy(),
                               librosa.hz_to_mel(freqs, htk=htk), rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(torch.from_numpy(freqs), htk), htk).numpy(), freqs,
                               rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, fmin, fmax, norm, htk",
    [
        (22050, 1024, 80, 0.0, 8000.0, "slaney", False),  # DiffWave vocoder
        (16000, 2048, 32, 0.0, None, "slaney", False),  # SC09 classifier
        (16000, 512, 40, 50.0, 7000.0, None, False),
        (44100, 2048, 128, 20.0, None, "slaney", True),
    ],
)
def test_mel_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax, norm, htk):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin=fmin, fmax=fmax, norm=norm, htk=htk).numpy()
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, norm=norm, htk=htk,
                              dtype=np.float64)
    assert ours.shape == ref.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-13)


def test_mel_filterbank_bad_arguments():
    with pytest.raises(ValueError, match="fmin"):
        mel_filterbank(16000, 512, 40, fmin=9000.0)
    with pytest.raises(ValueError, match="norm"):
        mel_filterbank(16000, 512, 40, norm="l2")
    with pytest.raises(TypeError, match="n_mels"):
        mel_filterbank(16000, 512, 40.0)


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_stft_magnitude_matches_librosa(pad_mode):
    y = _noise_tone(5000, 16000, 0)
    ours = stft_magnitude(torch.from_numpy(y), 1024, 256, pad_mode=pad_mode).numpy()
    ref = np.abs(librosa.stft(y, n_fft=1024, hop_length=256, window="hann", center=True, pad_mode=pad_mode))
    assert ours.shape == ref.shape == (513, 1 + 5000 // 256)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-10)


def test_log_mel_spectrogram_diffwave_settings():
    """n_fft 1024, hop 256, Hann, reflect, magnitude, 80 Slaney bands 0-8 kHz, log(clamp(., 1e-5))."""
    y = _noise_tone(16000, 22050, 1)
    ours = log_mel_spectrogram(torch.from_numpy(y)).numpy()
    mel = _librosa_mel64(y, sr=22050, n_fft=1024, hop_length=256, power=1.0, n_mels=80, fmax=8000.0,
                         pad_mode="reflect")
    ref = np.log(np.maximum(mel, 1e-5))
    assert ours.shape == (80, 63)  # 16000 samples -> 63 frames, as the spec says
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)
    # the clamp is active on silence
    silent = log_mel_spectrogram(torch.zeros(2, 4096, dtype=torch.float64))
    assert silent.shape == (2, 80, 17) and torch.all(silent == np.log(1e-5))


@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
@pytest.mark.parametrize("length", [12000, 16000, 17500])
def test_sc09_classifier_input_matches_librosa_pipeline(pad_mode, length):
    """pad/trim to 1 s, melspectrogram(n_mels=32) with librosa defaults, power_to_db(ref=np.max)."""
    y = _noise_tone(length, 16000, 2)
    ours = sc09_classifier_input(torch.from_numpy(y), pad_mode=pad_mode).numpy()
    fixed = librosa.util.fix_length(y, size=16000)
    mel = _librosa_mel64(fixed, sr=16000, n_fft=2048, hop_length=512, power=2.0, n_mels=32, fmax=None,
                         pad_mode=pad_mode)
    ref = librosa.power_to_db(mel, ref=np.max)
    assert ours.shape == ref.shape == (32, 32)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-8)
    assert ours.max() == 0.0 and ours.min() >= -80.0


def test_sc09_classifier_input_batched_is_per_clip():
    clips = torch.from_numpy(np.stack([_noise_tone(16000, 16000, s) * a for s, a in [(3, 1.0), (4, 0.01)]]))
    batch = sc09_classifier_input(clips)
    assert batch.shape == (2, 32, 32)
    for i in range(2):
        torch.testing.assert_close(batch[i], sc09_classifier_input(clips[i]), rtol=0, atol=1e-10)
    # dB relative to each clip's own maximum: scaling a clip leaves its image unchanged
    torch.testing.assert_close(sc09_classifier_input(clips[0] * 0.01), batch[0], rtol=0, atol=1e-9)


def test_power_to_db_floor_and_float32():
    spec = torch.tensor([[1.0, 1e-3], [1e-12, 0.0]], dtype=torch.float64)
    db = power_to_db(spec).numpy()
    np.testing.assert_allclose(db, librosa.power_to_db(spec.numpy(), ref=np.max), rtol=1e-12, atol=1e-12)
    y32 = torch.from_numpy(_noise_tone(16000, 16000, 5)).float()
    out32 = mel_spectrogram(y32, 16000, 2048, 512, 32)
    assert out32.dtype == torch.float32


def test_fix_length_and_bad_input():
    x = torch.arange(5.0)
    assert torch.equal(fix_length(x, 3), x[:3])
    assert torch.equal(fix_length(x, 7), torch.tensor([0.0, 1, 2, 3, 4, 0, 0]))
    with pytest.raises(ValueError, match="finite"):
        sc09_classifier_input(torch.tensor([0.0, float("nan")] * 100))
    with pytest.raises(TypeError, match="floating"):
        stft_magnitude(torch.zeros(4096, dtype=torch.int64), 1024, 256)
    with pytest.raises(ValueError, match="pad_mode"):
        stft_magnitude(torch.zeros(4096), 1024, 256, pad_mode="edge")


@settings(max_examples=25, deadline=None)
@given(
    sr=st.sampled_from([8000, 16000, 22050, 44100]),
    log2_fft=st.integers(8, 11),
    n_mels=st.integers(4, 96),
    fmin_frac=st.floats(0.0, 0.3),
    fmax_frac=st.floats(0.5, 1.0),
    htk=st.booleans(),
    norm=st.sampled_from(["slaney", None]),
)
def test_mel_filterbank_matches_librosa_property(sr, log2_fft, n_mels, fmin_frac, fmax_frac, htk, norm):
    fmax = fmax_frac * sr / 2
    fmin = fmin_frac * fmax
    n_fft = 2**log2_fft
    ours = mel_filterbank(sr, n_fft, n_mels, fmin=fmin, fmax=fmax, norm=norm, htk=htk).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns when a band holds no FFT bin; both give zeros there
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, norm=norm, htk=htk,
                                  dtype=np.float64)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
