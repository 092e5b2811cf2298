"""Tests for sashimi.data.datasets: the SC09 / Beethoven / YouTubeMix layouts and splits on small synthetic folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sashimi.data import IGNORE_INDEX, SC09, Beethoven, YouTubeMix, detect_layout, make_dataset, split_files, tone
from sashimi.data.datasets import beethoven_splits, folder_splits, sc09_splits, youtubemix_splits

SR = 16000


def _wav(path: Path, seconds: float = 0.05, freq: float = 440.0, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(freq, seconds, sr).numpy(), sr, subtype="PCM_16")
    return path


def _names(files: list[Path], root: Path) -> list[str]:
    return [f.relative_to(root).as_posix() for f in files]


# ---- SC09 -----------------------------------------------------------------------------------------------
@pytest.fixture()
def sc09(tmp_path: Path) -> Path:
    root = tmp_path / "sc09"
    for digit in ("zero", "one", "nine"):
        for speaker in ("aa11", "bb22", "cc33"):
            _wav(root / digit / f"{speaker}_nohash_0.wav", seconds=0.25)
    _wav(root / "dog" / "aa11_nohash_0.wav")  # not a digit: not part of SC09
    _wav(root / "_background_noise_" / "noise.wav")
    (root / "validation_list.txt").write_text("zero/bb22_nohash_0.wav\none/bb22_nohash_0.wav\ndog/aa11_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("zero/cc33_nohash_0.wav\nnine/cc33_nohash_0.wav\nnine/missing.wav\n")
    return root


def test_sc09_splits(sc09: Path) -> None:
    s = sc09_splits(sc09)
    assert _names(s["validation"], sc09) == ["one/bb22_nohash_0.wav", "zero/bb22_nohash_0.wav"]
    assert _names(s["test"], sc09) == ["nine/cc33_nohash_0.wav", "zero/cc33_nohash_0.wav"]
    assert _names(s["train"], sc09) == [
        "nine/aa11_nohash_0.wav", "nine/bb22_nohash_0.wav", "one/aa11_nohash_0.wav", "one/cc33_nohash_0.wav",
        "zero/aa11_nohash_0.wav",
    ]
    assert detect_layout(sc09) == "sc09"
    assert split_files(sc09, "sc09") == s


def test_sc09_dataset_pads_to_one_second(sc09: Path) -> None:
    ds = SC09(sc09, split="validation")
    assert ds.seq_len == 16000 and ds.mode == "pad" and ds.minmax and ds.quantization == "mu-law"
    q = ds[0]
    assert q.shape == (16000,)
    assert bool((q[:4000] >= 0).all()) and bool((q[4000:] == IGNORE_INDEX).all())
    assert len(SC09(sc09, split="train")) == 5 and len(SC09(sc09, split="test")) == 2


def test_sc09_bad_layouts(sc09: Path, tmp_path: Path) -> None:
    (sc09 / "testing_list.txt").unlink()
    with pytest.raises(ValueError, match=r"testing_list\.txt is missing"):
        sc09_splits(sc09)
    (sc09 / "testing_list.txt").write_text("zero/bb22_nohash_0.wav\n")
    with pytest.raises(ValueError, match="overlap"):
        sc09_splits(sc09)
    other = tmp_path / "music"
    _wav(other / "a.wav")
    with pytest.raises(ValueError, match=r"does not look like SC09.*--layout folder"):
        sc09_splits(other)


def test_sc09_split_folders(tmp_path: Path) -> None:
    root = tmp_path / "sc09_wavegan"
    _wav(root / "train" / "Zero_aa.wav")
    _wav(root / "train" / "One_bb.wav")
    _wav(root / "valid" / "Two_cc.wav")
    _wav(root / "test" / "Nine_dd.wav")
    s = sc09_splits(root)
    assert _names(s["train"], root) == ["train/One_bb.wav", "train/Zero_aa.wav"]
    assert _names(s["validation"], root) == ["valid/Two_cc.wav"]
    assert _names(s["test"], root) == ["test/Nine_dd.wav"]


# ---- Beethoven ------------------------------------------------------------------------------------------
def test_beethoven_splits_by_index(tmp_path: Path) -> None:
    root = tmp_path / "beethoven"
    for i in (0, 1, 10, 3807, 3808, 4067, 4068, 4327):
        _wav(root / f"{i}.wav")
    s = beethoven_splits(root)
    assert [p.stem for p in s["train"]] == ["0", "1", "10", "3807"]  # numeric, not lexicographic, order
    assert [p.stem for p in s["validation"]] == ["3808", "4067"]
    assert [p.stem for p in s["test"]] == ["4068", "4327"]
    ds = Beethoven(root, split="test", seq_len=1600)
    assert ds.quantization == "linear" and ds.mode == "pad" and ds[1].shape == (1600,)


def test_beethoven_bad_names(tmp_path: Path) -> None:
    root = tmp_path / "b1"
    _wav(root / "4328.wav")
    with pytest.raises(ValueError, match=r"4328\.wav has index 4328, outside 0-4327"):
        beethoven_splits(root)
    root = tmp_path / "b2"
    _wav(root / "intro.wav")
    with pytest.raises(ValueError, match=r"intro\.wav has no index"):
        beethoven_splits(root)
    root = tmp_path / "b3"
    _wav(root / "12.wav")
    _wav(root / "012.wav")
    with pytest.raises(ValueError, match="share the index 12"):
        beethoven_splits(root)
    (tmp_path / "b4").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        beethoven_splits(tmp_path / "b4")


# ---- YouTubeMix -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, expected", [(1, (0, 0, 1)), (9, (7, 1, 1)), (10, (8, 1, 1)), (25, (22, 1, 2)),
                                         (100, (88, 6, 6)), (101, (88, 6, 7))])
def test_youtubemix_split_sizes(tmp_path: Path, n: int, expected: tuple[int, int, int]) -> None:
    root = tmp_path / "ytm"
    root.mkdir()
    for i in range(n):
        (root / f"out{i:03d}.wav").write_bytes(b"")  # the split only looks at names
    s = youtubemix_splits(root)
    assert (len(s["train"]), len(s["validation"]), len(s["test"])) == expected
    order = [p.name for p in s["train"] + s["validation"] + s["test"]]
    assert order == sorted(order)


def test_youtubemix_dataset_crops(tmp_path: Path) -> None:
    root = tmp_path / "ytm"
    for i in range(10):
        _wav(root / f"out{i:02d}.wav", seconds=0.5, freq=200.0 + 30 * i)
    train = YouTubeMix(root, split="train", seq_len=2000)
    val = YouTubeMix(root, split="validation", seq_len=2000)
    assert [p.name for p in val.files] == ["out08.wav"] and val.random_crop is False and train.random_crop
    assert len(train) == 8 * 4 and train[0].shape == (2000,) and train.quantization == "mu-law"
    assert [val.crop_offset(i) for i in range(len(val))] == [0, 2000, 4000, 6000]


# ---- plain folders --------------------------------------------------------------------------------------
def test_folder_splits(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    for name in ("a", "b", "c", "d"):
        _wav(root / f"{name}.wav")
    s = folder_splits(root)
    assert len(s["train"]) == 4 and s["validation"] == [] and s["test"] == []
    s = folder_splits(root, val_fraction=0.3)
    assert [p.stem for p in s["train"]] == ["a", "b"] and [p.stem for p in s["validation"]] == ["c", "d"]
    one = tmp_path / "one"
    _wav(one / "x.wav")
    assert len(folder_splits(one, val_fraction=0.5)["train"]) == 1  # at least one training file stays
    with pytest.raises(ValueError, match="val_fraction"):
        folder_splits(root, val_fraction=1.0)
    split = tmp_path / "split"
    _wav(split / "train" / "t.wav")
    _wav(split / "validation" / "v.wav")
    s = folder_splits(split)
    assert [p.stem for p in s["train"]] == ["t"] and [p.stem for p in s["validation"]] == ["v"] and s["test"] == []
    assert detect_layout(split) == "folder"
    ds = make_dataset(split, "folder", "validation", sample_rate=SR, seq_len=400)
    assert ds.random_crop is False and len(ds) == 2
    with pytest.raises(ValueError, match="no files in the test split"):
        make_dataset(split, "folder", "test", sample_rate=SR)
    with pytest.raises(ValueError, match="split must be one of"):
        make_dataset(split, "folder", "holdout")
    with pytest.raises(ValueError, match="layout must be one of"):
        split_files(split, "librispeech")
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        split_files(tmp_path / "nope", "youtubemix")


def test_paper_items_are_deterministic(sc09: Path) -> None:
    a, b = SC09(sc09, split="train"), SC09(sc09, split="train")
    assert all(torch.equal(a[i], b[i]) for i in range(len(a)))
    assert np.unique(a[0][a[0] != IGNORE_INDEX].numpy()).size > 10
