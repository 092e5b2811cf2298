"""Tests for sashimi.data.audio_folder: file discovery, the decode/resample/crop/quantize pipeline, bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from sashimi.audio import quantize, resample
from sashimi.data import IGNORE_INDEX, AudioFolder, find_audio_files, karplus_strong, pad_collate, tone

SR = 8000


def _write(path: Path, wav: torch.Tensor | np.ndarray, sr: int = SR, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wav.numpy() if isinstance(wav, torch.Tensor) else wav
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}[path.suffix]
    if fmt != "WAV":
        subtype = {"FLAC": "PCM_16", "OGG": "VORBIS"}[fmt]
    sf.write(str(path), data, sr, subtype=subtype, format=fmt)
    return path


def _read(path: Path) -> torch.Tensor:
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    return torch.from_numpy(data.mean(axis=1))


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "audio"
    _write(root / "b.wav", karplus_strong(220.0, 0.5, SR, seed=1))
    _write(root / "sub" / "a.flac", karplus_strong(330.0, 0.4, SR, seed=2))
    _write(root / "c.ogg", tone(440.0, 0.3, SR))
    _write(root / ".hidden.wav", tone(100.0, 0.1, SR))
    _write(root / ".cache" / "x.wav", tone(100.0, 0.1, SR))
    (root / "notes.txt").write_text("not audio")
    return root


def test_find_audio_files_sorted_and_filtered(folder: Path) -> None:
    files = find_audio_files(folder)
    assert [f.relative_to(folder).as_posix() for f in files] == ["b.wav", "c.ogg", "sub/a.flac"]
    assert [f.name for f in find_audio_files(folder, recursive=False)] == ["b.wav", "c.ogg"]
    upper = folder / "D.WAV"
    _write(upper.with_suffix(".wav"), tone(200.0, 0.1, SR)).rename(upper)
    assert upper in find_audio_files(folder)


def test_whole_clips_match_quantize(folder: Path) -> None:
    ds = AudioFolder(folder, sample_rate=SR, bits=8, quantization="mu-law")
    assert len(ds) == 3 and ds.seq_len is None
    for i, f in enumerate(ds.files):
        q = ds[i]
        assert q.dtype == torch.int64 and q.ndim == 1
        assert torch.equal(q, quantize(_read(f), 8, "mu-law"))
    lin = AudioFolder(folder, sample_rate=SR, bits=6, quantization="linear", minmax=True)
    wav = _read(lin.files[0])
    assert torch.equal(lin[0], quantize(wav, 6, "linear", minmax=True))
    assert int(lin[0].max()) == 63 and int(lin[0].min()) == 0  # min-max scaling spans the range


def test_stereo_mixdown(tmp_path: Path) -> None:
    left, right = tone(300.0, 0.2, SR).numpy(), karplus_strong(200.0, 0.2, SR).numpy()
    path = _write(tmp_path / "st" / "s.wav", np.stack([left, right], axis=1))
    ds = AudioFolder(path.parent, sample_rate=SR)
    assert ds.clips[0].channels == 2
    assert torch.allclose(ds.load(0), torch.from_numpy((left + right) / 2), atol=1e-6)


def test_resampling_and_rate_mismatch(tmp_path: Path) -> None:
    wav = karplus_strong(220.0, 0.5, 11025)
    path = _write(tmp_path / "r" / "x.wav", wav, sr=11025)
    ds = AudioFolder(path.parent, sample_rate=SR)
    expected = resample(wav, 11025, SR).float()
    assert ds.clips[0].length == expected.numel() == round(wav.numel() * SR / 11025)
    assert torch.allclose(ds.load(0), expected, atol=1e-6)
    assert torch.equal(ds[0], quantize(expected, 8))
    with pytest.raises(ValueError, match=r"x\.wav has sample rate 11025 Hz but the model runs at 8000 Hz"):
        AudioFolder(path.parent, sample_rate=SR, resample=False)
    # crops of resampled audio
    crops = AudioFolder(path.parent, sample_rate=SR, seq_len=1000, random_crop=False)
    assert torch.equal(crops[1], quantize(expected[1000:2000], 8))


def test_random_crops_deterministic(tmp_path: Path) -> None:
    wav = karplus_strong(220.0, 1.0, SR, seed=3)
    path = _write(tmp_path / "c" / "x.wav", wav)
    ds = AudioFolder(path.parent, sample_rate=SR, seq_len=1000, seed=5)
    assert len(ds) == 8  # 8000 // 1000 crops per clip
    offsets = [ds.crop_offset(i) for i in range(len(ds))]
    assert all(0 <= o <= 7000 for o in offsets) and len(set(offsets)) > 1
    for i, o in enumerate(offsets):
        assert torch.equal(ds[i], quantize(wav[o : o + 1000], 8))
    again = AudioFolder(path.parent, sample_rate=SR, seq_len=1000, seed=5)
    assert [again.crop_offset(i) for i in range(len(ds))] == offsets
    ds.set_epoch(1)
    assert [ds.crop_offset(i) for i in range(len(ds))] != offsets
    other = AudioFolder(path.parent, sample_rate=SR, seq_len=1000, seed=6)
    assert [other.crop_offset(i) for i in range(len(ds))] != offsets
    tiles = AudioFolder(path.parent, sample_rate=SR, seq_len=3000, random_crop=False, crops_per_clip=3)
    assert [tiles.crop_offset(i) for i in range(3)] == [0, 3000, 5000]  # the last tile stays inside the clip
    cached = AudioFolder(path.parent, sample_rate=SR, seq_len=1000, seed=5, cache=True)
    assert all(torch.equal(cached[i], ds_i) for i, ds_i in enumerate(again[j] for j in range(len(again))))


def test_pad_mode_and_collate(folder: Path) -> None:
    ds = AudioFolder(folder, sample_rate=SR, seq_len=4000, mode="pad", minmax=True)
    for i, f in enumerate(ds.files):
        q = ds[i]
        wav = _read(f)
        assert q.shape == (4000,)
        assert torch.equal(q[: wav.numel()], quantize(wav, 8, minmax=True))
        assert bool((q[wav.numel() :] == IGNORE_INDEX).all())
    with pytest.raises(ValueError, match=r"b\.wav has 4000 samples .* longer than seq_len=3000 in mode='pad'"):
        AudioFolder(folder, sample_rate=SR, seq_len=3000, mode="pad")
    whole = AudioFolder(folder, sample_rate=SR)
    batch = next(iter(DataLoader(whole, batch_size=3, collate_fn=pad_collate)))
    assert batch.shape == (3, 4000)
    assert int((batch != IGNORE_INDEX).sum()) == whole.total_samples


def test_short_clips(folder: Path) -> None:
    # b.wav: 4000 samples, a.flac: 3200, c.ogg: 2400
    with pytest.raises(ValueError, match=r"c\.ogg has 2400 samples at 8000 Hz, shorter than the crop seq_len=3000"):
        AudioFolder(folder, sample_rate=SR, seq_len=3000)
    padded = AudioFolder(folder, sample_rate=SR, seq_len=3000, short="pad")
    q = padded[padded.files.index(folder / "c.ogg")]
    assert q.shape == (3000,) and bool((q[2400:] == IGNORE_INDEX).all()) and bool((q[:2400] >= 0).all())
    with pytest.warns(UserWarning, match=r"skipped 1 clip\(s\) shorter than seq_len=3000: .*c\.ogg"):
        skipped = AudioFolder(folder, sample_rate=SR, seq_len=3000, short="skip")
    assert [f.name for f in skipped.files] == ["b.wav", "a.flac"]
    assert skipped.skipped[0][0].name == "c.ogg"


def test_bad_files(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    _write(root / "good.wav", tone(440.0, 0.2, SR))
    (root / "broken.wav").write_bytes(b"RIFF not really a wav file")
    sf.write(str(root / "empty.wav"), np.zeros(0, dtype=np.float32), SR)
    with pytest.raises(ValueError, match=r"cannot read audio file .*broken\.wav.*on_error='warn'"):
        AudioFolder(root, sample_rate=SR)
    (root / "broken.wav").unlink()
    with pytest.raises(ValueError, match=r"audio file .*empty\.wav contains no samples"):
        AudioFolder(root, sample_rate=SR)
    (root / "broken.wav").write_bytes(b"RIFF not really a wav file")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable or empty audio file\(s\): .*broken\.wav.*empty\.wav"):
        ds = AudioFolder(root, sample_rate=SR, on_error="warn")
    assert [f.name for f in ds.files] == ["good.wav"]
    (root / "good.wav").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"no usable audio files under .*bad: all 2 were skipped"):
            AudioFolder(root, sample_rate=SR, on_error="warn")


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no audio here")
    with pytest.raises(ValueError, match=r"no audio files \(\.wav, \.flac, \.ogg\) found under .*empty"):
        AudioFolder(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        AudioFolder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="audio file not found"):
        AudioFolder(tmp_path, files=[tmp_path / "missing.wav"])


def test_bad_arguments(folder: Path) -> None:
    for kwargs, name in [
        ({"seq_len": 0}, "seq_len"), ({"mode": "trim"}, "mode"), ({"short": "drop"}, "short"),
        ({"on_error": "ignore"}, "on_error"), ({"bits": 17}, "bits"), ({"sample_rate": -1}, "sample_rate"),
        ({"quantization": "alaw"}, "quantization"),
    ]:
        with pytest.raises(ValueError, match=name):
            AudioFolder(folder, **kwargs)
    ds = AudioFolder(folder, sample_rate=SR)
    with pytest.raises(IndexError, match="out of range"):
        ds[3]
