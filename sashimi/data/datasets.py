"""The SaShiMi paper's dataset layouts and splits, and plain folders.

Layouts (``layout=`` / CLI ``--layout``):

* ``'sc09'``: Speech Commands digits. Either the Speech Commands layout, one folder per digit word
  (``zero/`` ... ``nine/``) plus the official ``validation_list.txt`` and ``testing_list.txt`` at the
  root (entries such as ``zero/0a2b400e_nohash_0.wav``; entries of other words are ignored; every
  digit file not listed is training data); or ready-made split folders ``train/``, ``valid/``,
  ``test/``. Clips are at most 1 s; the paper pads them to 16000 samples.
* ``'beethoven'``: 8-second clips whose file names end in their index (``0.wav`` ... ``4327.wav``);
  split by index: train 0-3807, validation 3808-4067, test 4068-4327.
* ``'youtubemix'``: 1-minute files; sorted by name, the first ``floor(88 n / 100)`` are training data,
  the rest is split in half (validation first, the extra file of an odd remainder goes to test).
* ``'folder'``: any folder of audio. Split subfolders ``train/`` and ``valid/`` (or ``validation/``,
  ``val/``) and optionally ``test/`` are used when present; otherwise every file is training data and
  ``val_fraction`` of the files (the last ones by name) are held out for validation.

:data:`DATA_PRESETS` holds each paper dataset's item settings (length, cropping, min-max scaling);
the model's rate and quantization come from its config. :func:`make_dataset` builds one split as an
:class:`~sashimi.data.audio_folder.AudioFolder`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sashimi.data.audio_folder import AUDIO_EXTENSIONS, AudioFolder, find_audio_files

__all__ = [
    "BEETHOVEN_RANGES",
    "DATA_PRESETS",
    "LAYOUTS",
    "SC09",
    "SC09_DIGITS",
    "SPLITS",
    "Beethoven",
    "DataPreset",
    "YouTubeMix",
    "beethoven_splits",
    "detect_layout",
    "folder_splits",
    "make_dataset",
    "sc09_splits",
    "split_files",
    "youtubemix_splits",
]

LAYOUTS = ("folder", "sc09", "beethoven", "youtubemix")
SPLITS = ("train", "validation", "test")
SC09_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: inclusive index ranges of the Beethoven splits
BEETHOVEN_RANGES: dict[str, tuple[int, int]] = {"train": (0, 3807), "validation": (3808, 4067), "test": (4068, 4327)}
YOUTUBEMIX_TRAIN_PERCENT = 88
_VALID_NAMES = ("valid", "validation", "val")

Splits = dict[str, list[Path]]


@dataclass(frozen=True)
class DataPreset:
    """How a paper dataset's items are made.

    Attributes:
        layout: one of :data:`LAYOUTS`.
        seq_len: item length in samples.
        mode: 'pad' (whole clips padded to seq_len) or 'crop' (crops of seq_len).
        minmax: per-item min-max scaling before quantization (the paper's pipeline).
    """

    layout: str
    seq_len: int
    mode: str
    minmax: bool = True


DATA_PRESETS: dict[str, DataPreset] = {
    "sc09": DataPreset("sc09", 16000, "pad"),
    "beethoven": DataPreset("beethoven", 128000, "pad"),
    "youtubemix": DataPreset("youtubemix", 131072, "crop"),
}


def _check_split(split: str) -> str:
    aliases = {"valid": "validation", "val": "validation", "dev": "validation"}
    split = aliases.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _require_dir(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"data folder {root} is not a directory")
    return root


def _split_dirs(root: Path) -> dict[str, Path] | None:
    """``train`` / ``valid`` / ``test`` subfolders, when ``train`` and a validation folder exist."""
    train = root / "train"
    valid = next((root / n for n in _VALID_NAMES if (root / n).is_dir()), None)
    if not train.is_dir() or valid is None:
        return None
    out = {"train": train, "validation": valid}
    if (root / "test").is_dir():
        out["test"] = root / "test"
    return out


def _from_split_dirs(dirs: dict[str, Path]) -> Splits:
    return {s: (find_audio_files(dirs[s]) if s in dirs else []) for s in SPLITS}


# ---- SC09 ---------------------------------------------------------------------------------------------
def _read_list(path: Path) -> set[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the SC09 split list {path}: {exc}") from exc
    return {line.strip().replace("\\", "/") for line in text.splitlines() if line.strip()}


def sc09_splits(root: str | os.PathLike) -> Splits:
    """SC09 train/validation/test files (see the module docstring for the two accepted layouts).

    Raises:
        ValueError: neither layout found, or a split list missing or unreadable.
    """
    root = _require_dir(root)
    digit_dirs = [d for d in SC09_DIGITS if (root / d).is_dir()]
    if not digit_dirs:
        dirs = _split_dirs(root)
        if dirs is not None:
            return _from_split_dirs(dirs)
        raise ValueError(
            f"{root} does not look like SC09: expected digit folders ({', '.join(SC09_DIGITS)}) with "
            "validation_list.txt and testing_list.txt, or train/ and valid/ folders (use --layout folder for "
            "other audio)"
        )
    lists = {}
    for split, name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        path = root / name
        if not path.is_file():
            raise ValueError(
                f"SC09 layout: {path} is missing; the official Speech Commands split lists "
                "(validation_list.txt, testing_list.txt) must sit next to the digit folders"
            )
        lists[split] = _read_list(path)
    both = lists["validation"] & lists["test"]
    if both:
        raise ValueError(f"SC09 split lists overlap: {sorted(both)[:5]} are in both validation and testing lists")
    out: Splits = {s: [] for s in SPLITS}
    for digit in digit_dirs:
        for f in find_audio_files(root / digit, (".wav",)):
            rel = f.relative_to(root).as_posix()
            split = "validation" if rel in lists["validation"] else "test" if rel in lists["test"] else "train"
            out[split].append(f)
    return {k: sorted(v, key=lambda p: p.relative_to(root).as_posix()) for k, v in out.items()}


# ---- Beethoven ----------------------------------------------------------------------------------------
_INDEX = re.compile(r"(\d+)$")


def beethoven_splits(root: str | os.PathLike) -> Splits:
    """Beethoven splits by the index at the end of each file name (``<index>.wav``).

    Raises:
        ValueError: no audio, a name without an index, a duplicate index, or an index outside 0-4327.
    """
    root = _require_dir(root)
    files = find_audio_files(root, AUDIO_EXTENSIONS, recursive=False)
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {root}")
    hi = BEETHOVEN_RANGES["test"][1]
    indexed: dict[int, Path] = {}
    for f in files:
        m = _INDEX.search(f.stem)
        if m is None:
            raise ValueError(
                f"Beethoven layout: {f.name} has no index in its name (expected 0.wav ... {hi}.wav); "
                "use --layout folder for other audio"
            )
        i = int(m.group(1))
        if i > hi:
            raise ValueError(f"Beethoven layout: {f.name} has index {i}, outside 0-{hi}")
        if i in indexed:
            raise ValueError(f"Beethoven layout: {indexed[i].name} and {f.name} share the index {i}")
        indexed[i] = f
    out: Splits = {s: [] for s in SPLITS}
    for i in sorted(indexed):
        split = next(s for s, (a, b) in BEETHOVEN_RANGES.items() if a <= i <= b)
        out[split].append(indexed[i])
    return out


# ---- YouTubeMix ---------------------------------------------------------------------------------------
def youtubemix_splits(root: str | os.PathLike) -> Splits:
    """YouTubeMix splits by file order: 88% train, then validation and test halves of the rest.

    With n files sorted by name: ``n_train = floor(88 n / 100)``, ``n_val = (n - n_train) // 2``, the
    rest is test.
    """
    root = _require_dir(root)
    files = sorted(find_audio_files(root, AUDIO_EXTENSIONS, recursive=False), key=lambda p: p.name)
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {root}")
    n = len(files)
    n_train = YOUTUBEMIX_TRAIN_PERCENT * n // 100
    n_val = (n - n_train) // 2
    return {"train": files[:n_train], "validation": files[n_train : n_train + n_val], "test": files[n_train + n_val :]}


# ---- plain folders ------------------------------------------------------------------------------------
def folder_splits(root: str | os.PathLike, val_fraction: float = 0.0) -> Splits:
    """A plain folder: its ``train/``, ``valid/``, ``test/`` subfolders when present, else every file is
    training data except the last ``ceil(val_fraction * n)`` files (by name), held out for validation
    (at least one file stays in training).
    """
    root = _require_dir(root)
    if not (isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool)
            and 0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    dirs = _split_dirs(root)
    if dirs is not None:
        return _from_split_dirs(dirs)
    files = find_audio_files(root)
    if not files:
        raise ValueError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under {root}")
    n_val = min(len(files) - 1, math.ceil(val_fraction * len(files)))
    cut = len(files) - n_val
    return {"train": files[:cut], "validation": files[cut:], "test": []}


def detect_layout(root: str | os.PathLike) -> str:
    """The paper layout ``root`` follows ('sc09' when it has digit folders and the split lists), else 'folder'."""
    root = _require_dir(root)
    if any((root / d).is_dir() for d in SC09_DIGITS) and (root / "validation_list.txt").is_file():
        return "sc09"
    return "folder"


def split_files(root: str | os.PathLike, layout: str = "folder", *, val_fraction: float = 0.0) -> Splits:
    """``{'train': [...], 'validation': [...], 'test': [...]}`` for ``root`` under ``layout``."""
    if layout == "sc09":
        return sc09_splits(root)
    if layout == "beethoven":
        return beethoven_splits(root)
    if layout == "youtubemix":
        return youtubemix_splits(root)
    if layout == "folder":
        return folder_splits(root, val_fraction)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def make_dataset(
    root: str | os.PathLike,
    layout: str = "folder",
    split: str = "train",
    *,
    val_fraction: float = 0.0,
    splits: Splits | None = None,
    **kwargs: Any,
) -> AudioFolder:
    """One split of ``root`` as an :class:`AudioFolder` (``kwargs`` go to it).

    Non-training splits default to deterministic tiles (``random_crop=False``).

    Raises:
        ValueError: the split has no files.
    """
    split = _check_split(split)
    splits = splits if splits is not None else split_files(root, layout, val_fraction=val_fraction)
    files = splits[split]
    if not files:
        raise ValueError(f"{root} ({layout} layout) has no files in the {split} split")
    if split != "train":
        kwargs.setdefault("random_crop", False)
    return AudioFolder(root, files=files, **kwargs)


class _PaperDataset(AudioFolder):
    preset: str = ""

    def __init__(self, root: str | os.PathLike, split: str = "train", **kwargs: Any) -> None:
        spec = DATA_PRESETS[self.preset]
        split = _check_split(split)
        kwargs.setdefault("seq_len", spec.seq_len)
        kwargs.setdefault("mode", spec.mode)
        kwargs.setdefault("minmax", spec.minmax)
        kwargs.setdefault("quantization", self.quantization_default)
        if split != "train":
            kwargs.setdefault("random_crop", False)
        files = split_files(root, spec.layout)[split]
        if not files:
            raise ValueError(f"{root} ({spec.layout} layout) has no files in the {split} split")
        self.split = split
        super().__init__(root, files=files, **kwargs)


class SC09(_PaperDataset):
    """SC09 spoken digits (16 kHz, 8-bit mu-law, clips padded to 16000 samples, min-max scaled).

    ``SC09(root, split='train' | 'validation' | 'test', **AudioFolder kwargs)``.
    """

    preset = "sc09"
    quantization_default = "mu-law"


class Beethoven(_PaperDataset):
    """Beethoven piano sonatas (8-s clips at 16 kHz, 8-bit linear, whole clips of 128000 samples).

    ``Beethoven(root, split='train' | 'validation' | 'test', **AudioFolder kwargs)``.
    """

    preset = "beethoven"
    quantization_default = "linear"


class YouTubeMix(_PaperDataset):
    """YouTubeMix piano (1-min files at 16 kHz, 8-bit mu-law, crops of 131072 samples).

    ``YouTubeMix(root, split='train' | 'validation' | 'test', **AudioFolder kwargs)``; validation and test
    take non-overlapping tiles.
    """

    preset = "youtubemix"
    quantization_default = "mu-law"
