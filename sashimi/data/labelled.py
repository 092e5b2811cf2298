"""Fixed-length waveform clips from folders: labelled datasets (subfolder = class) and flat clip sets.

Used to train classifiers (:class:`LabelledAudioFolder`) and to read the sample and reference folders that
the evaluation scores (:func:`load_clips`). Every clip is read with :func:`sashimi.audio.load_audio` (mono,
float32 in [-1, 1]); a file at another sample rate is an error unless ``resample=True``; clips are
zero-padded at the end or trimmed to ``num_samples``. Files are ordered naturally (``x_2.wav`` before
``x_10.wav``), the order in which the official evaluation reads likelihood-sorted samples.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from sashimi.audio import load_audio
from sashimi.audio.features import fix_length
from sashimi.data.audio_folder import find_audio_files

__all__ = ["LabelledAudioFolder", "load_clips", "natural_key", "sorted_audio_files"]


def natural_key(path: str | os.PathLike) -> list:
    """Sort key that orders digit runs by value: ``gen_2.wav`` < ``gen_10.wav``."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", Path(path).as_posix())]


def sorted_audio_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Audio files in ``folder`` in natural order; an error when there are none."""
    folder = Path(folder)
    files = sorted(find_audio_files(folder, recursive=recursive), key=lambda p: natural_key(p.relative_to(folder)))
    if not files:
        raise ValueError(f"no audio files (.wav, .flac, .ogg) in {folder}")
    return files


def _read_clip(path: Path, sample_rate: int, num_samples: int, resample: bool) -> Tensor:
    wav, _ = load_audio(path, sample_rate, resample=resample)  # (T,)
    return fix_length(wav, num_samples)  # (num_samples,)


def load_clips(
    folder: str | os.PathLike,
    sample_rate: int,
    num_samples: int,
    *,
    resample: bool = False,
    progress: bool = True,
) -> tuple[Tensor, list[Path]]:
    """All clips of ``folder`` (not recursive), natural order: ``(clips (N, num_samples) float32, paths)``."""
    files = sorted_audio_files(folder)
    clips = [_read_clip(p, sample_rate, num_samples, resample)
             for p in tqdm(files, desc=f"reading {Path(folder).name}", disable=not progress)]
    return torch.stack(clips), files  # (N, num_samples)


class LabelledAudioFolder(Dataset):
    """A folder whose subfolders are classes: items ``(waveform (num_samples,) float32, class id)``.

    Classes are the subfolder names in sorted order, or ``labels`` (then every subfolder must be one of them
    and ids follow ``labels``; a missing class is allowed, e.g. a small validation split). Clips are read
    lazily. Attributes: ``labels`` (class id per item), ``classes`` (names), ``files``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        sample_rate: int,
        num_samples: int,
        *,
        labels: Sequence[str] | None = None,
        resample: bool = False,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"labelled data folder not found: {root}")
        subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not subdirs:
            raise ValueError(f"{root} has no class subfolders (expected one subfolder of clips per label)")
        if labels is None:
            classes = subdirs
        else:
            classes = list(labels)
            extra = sorted(set(subdirs) - set(classes))
            if extra:
                raise ValueError(f"{root} has subfolders {extra} that are not among the labels {classes}")
        self.root = root
        self.classes: list[str] = classes
        self.sample_rate = int(sample_rate)
        self.num_samples = int(num_samples)
        self.resample = resample
        self.files: list[Path] = []
        self.labels: list[int] = []
        for name in subdirs:
            found = find_audio_files(root / name)
            if not found:
                raise ValueError(f"class folder {root / name} contains no audio files")
            self.files.extend(found)
            self.labels.extend([classes.index(name)] * len(found))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        clip = _read_clip(self.files[index], self.sample_rate, self.num_samples, self.resample)
        return clip, self.labels[index]
