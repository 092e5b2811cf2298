"""``load_audio`` and the values in the file (issue 15, item 17): float files outside [-1, 1] are
reported (or normalized on request), never silently clipped; files with NaN/inf samples are refused
with the file named; integer PCM and in-range float files are returned as stored."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi.audio import check_finite_samples, load_audio, quantize
from sashimi.data.synth import tone

SR = 8000


def _float_wav(path: Path, data: np.ndarray, subtype: str = "FLOAT") -> Path:
    sf.write(str(path), data, SR, subtype=subtype, format="WAV")
    return path


def test_loud_float_file_warns_and_is_returned_as_stored(tmp_path: Path) -> None:
    x = 3.0 * tone(220.0, 0.2, SR).numpy()  # peak ~3
    peak = float(np.abs(x).max())
    path = _float_wav(tmp_path / "loud.wav", x)
    with pytest.warns(UserWarning, match=rf"loud\.wav: samples reach {peak:.4g}, outside \[-1, 1\].*normalize=True"):
        y, sr = load_audio(path)
    assert sr == SR
    np.testing.assert_array_equal(y.numpy(), x.astype(np.float32))  # unchanged, not clipped
    # what the warning says: quantizing clips those samples (the tokens equal those of the clipped wave)
    assert torch.equal(quantize(y), quantize(y.clamp(-1, 1)))


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_normalize_divides_by_the_peak(tmp_path: Path, subtype: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, size=(400, 2))
    x[123, 1] = -2.5  # the peak is in the second channel
    path = _float_wav(tmp_path / "loud.wav", x, subtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, _ = load_audio(path, mono=False, normalize=True)
    np.testing.assert_allclose(y.numpy(), (x / 2.5).T, rtol=1e-6, atol=1e-7)
    assert float(y.abs().max()) == pytest.approx(1.0, abs=1e-7)
    mono, _ = load_audio(path, normalize=True)
    np.testing.assert_allclose(mono.numpy(), (x / 2.5).mean(axis=1), rtol=1e-5, atol=1e-7)


def test_in_range_files_are_untouched_and_silent(tmp_path: Path) -> None:
    x = tone(300.0, 0.1, SR, amplitude=0.8).numpy()
    f = _float_wav(tmp_path / "f.wav", x)
    pcm = tmp_path / "p.wav"
    sf.write(str(pcm), x, SR, subtype="PCM_16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a, _ = load_audio(f, normalize=True)  # not rescaled: its peak is below 1
        b, _ = load_audio(pcm)
    np.testing.assert_array_equal(a.numpy(), x.astype(np.float32))
    np.testing.assert_allclose(b.numpy(), x, atol=1.5 / 32768)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused_naming_the_file(tmp_path: Path, bad: float) -> None:
    x = tone(300.0, 0.1, SR).numpy()[:, None].repeat(2, axis=1)
    x[417, 1] = bad
    path = _float_wav(tmp_path / "nan.wav", x)
    with pytest.raises(ValueError, match=rf"audio file .*nan\.wav contains non-finite samples \(the first: "
                       rf"{bad}.* at frame 417, channel 1\)"):
        load_audio(path)


def test_check_finite_samples_offset() -> None:
    data = np.zeros((10, 1))
    check_finite_samples(data, "x.wav")
    data[7, 0] = np.nan
    with pytest.raises(ValueError, match=r"x\.wav .*at frame 107, channel 0"):
        check_finite_samples(data, "x.wav", offset=100)
