"""AudioFolder checks the samples of float files at the scan (issue 15, item 8): a NaN/inf sample is an
error naming the file (or the file is skipped under ``on_error='warn'``, like an unreadable one), and
files outside [-1, 1] are reported; a file changed after the scan is refused when read."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi.audio import quantize
from sashimi.data import AudioFolder, tone
from sashimi.data import audio_folder as af

SR = 8000


def _wav(path: Path, data: np.ndarray, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, SR, subtype=subtype, format="WAV")
    return path


def _good(seed: int = 0, n: int = 2000) -> np.ndarray:
    return 0.5 * np.random.default_rng(seed).uniform(-1, 1, size=n)


@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_one_non_finite_sample_fails_the_scan_naming_the_file(tmp_path: Path, subtype: str, bad: float) -> None:
    root = tmp_path / "data"
    _wav(root / "a.wav", _good(0))
    x = _good(1)
    x[1500] = bad
    _wav(root / "sub" / "poisoned.wav", x, subtype)
    with pytest.raises(ValueError, match=r"audio file .*sub/poisoned\.wav contains non-finite samples \(the first: "
                       r".* at frame 1500, channel 0\).*on_error='warn'"):
        AudioFolder(root, sample_rate=SR, seq_len=256)


def test_non_finite_file_is_skipped_under_the_bad_file_policy(tmp_path: Path) -> None:
    root = tmp_path / "data"
    good = _wav(root / "a.wav", _good(0))
    x = _good(1)
    x[7] = np.nan
    _wav(root / "b.wav", x)
    (root / "c.wav").write_bytes(b"RIFF not really a wav file")
    with pytest.warns(UserWarning) as record:
        ds = AudioFolder(root, sample_rate=SR, seq_len=256, on_error="warn")
    messages = [str(w.message) for w in record]
    assert any("skipped 1 audio file(s) with NaN or infinite samples" in m and "b.wav" in m and "frame 7" in m
               for m in messages), messages
    assert any("skipped 1 unreadable or empty audio file(s)" in m and "c.wav" in m for m in messages), messages
    assert ds.files == [good]
    assert sorted(p.name for p, _ in ds.skipped) == ["b.wav", "c.wav"]
    # the kept file still gives the tokens of its samples
    ref = quantize(torch.from_numpy(sf.read(str(good), dtype="float32")[0]))
    assert torch.equal(AudioFolder(root, files=[good], sample_rate=SR)[0], ref)


def test_non_finite_sample_found_in_a_later_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan reads float files block by block; a NaN in a later block is found and located exactly."""
    monkeypatch.setattr(af, "_SCAN_BLOCK", 100)
    x = _good(2)
    x[1234] = np.nan
    path = _wav(tmp_path / "d" / "late.wav", x)
    with pytest.raises(ValueError, match=r"late\.wav .*at frame 1234, channel 0"):
        AudioFolder(path.parent, sample_rate=SR)


def test_integer_pcm_files_are_not_read_at_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only float files can hold NaN: PCM files keep the header-only scan."""
    calls = []
    monkeypatch.setattr(af, "_scan_float_samples", lambda p: calls.append(p) or 0.5)
    root = tmp_path / "d"
    _wav(root / "p.wav", _good(0), "PCM_16")
    f = _wav(root / "f.wav", _good(1))
    AudioFolder(root, sample_rate=SR)
    assert calls == [f]


def test_loud_float_files_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _wav(root / "ok.wav", _good(0))
    _wav(root / "loud.wav", 2.5 * tone(200.0, 0.25, SR, amplitude=0.9).numpy())
    with pytest.warns(UserWarning, match=r"1 float audio file\(s\) have samples outside \[-1, 1\].*loud\.wav \(peak 2"):
        AudioFolder(root, sample_rate=SR)
    with warnings.catch_warnings():  # minmax scales every item into [-1, 1]: nothing to report
        warnings.simplefilter("error")
        AudioFolder(root, sample_rate=SR, minmax=True)


def test_file_changed_after_the_scan_is_refused_when_read(tmp_path: Path) -> None:
    root = tmp_path / "d"
    path = _wav(root / "a.wav", _good(0))
    ds = AudioFolder(root, sample_rate=SR, seq_len=500, random_crop=False)
    x = _good(0)
    x[1700] = np.inf
    _wav(path, x)
    ds[0]  # the crop [0, 500) is finite
    with pytest.raises(ValueError, match=r"a\.wav contains non-finite samples \(the first: inf at frame 1700"):
        ds[3]  # the crop [1500, 2000)
