"""NSynth notes for SING: the dataset layout, SING's train/valid/test split and its velocity mapping.

Layout (NSynth's ``nsynth-*.jsonwav``)::

    root/examples.json        {note_str: {"instrument": int, "pitch": int, "velocity": int, ...}, ...}
    root/audio/<note_str>.wav 4 s mono at 16 kHz (64000 samples), 16-bit PCM

Items are dicts: ``wav`` (padded_length,) float32 (int16 / (2**15 - 1), as SING reads them, zero-padded by
``pad`` samples on each side), ``instrument``, ``pitch``, ``velocity`` (mapped ids, int64 scalars), ``name``.

Velocity mapping: NSynth velocities are MIDI {25, 50, 75, 100, 127}. SING maps them to {0, 1, 2, 4, 5} (id 3 is
never used, so its velocity table has 6 rows; its released model depends on that): ``velocity_mapping="sing"``.
``"dense"`` (the default for new models) maps them to 0..4.

Split (:func:`nsynth_split`, as SING's ``make_datasets``): notes are grouped by (instrument, pitch), groups taken
in order of first appearance among the sorted note names; for each group one ``random.random()`` draw of a Python
RNG seeded with 42: below 0.1 -> valid, below 0.2 -> test, else train. All velocities of a pair share a split, so
valid and test hold unseen (instrument, pitch) pairs.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

__all__ = [
    "NSYNTH_VELOCITIES",
    "VELOCITY_MAPPINGS",
    "NSynth",
    "harmonic_note",
    "map_velocity",
    "nsynth_split",
    "write_synthetic_nsynth",
]

VelocityMapping = Literal["sing", "dense"]

#: The MIDI velocities of NSynth notes.
NSYNTH_VELOCITIES: tuple[int, ...] = (25, 50, 75, 100, 127)

#: MIDI velocity -> label id. "sing": the official code's table (id 3 unused; 6 ids); "dense": 0..4.
VELOCITY_MAPPINGS: dict[str, dict[int, int]] = {
    "sing": {25: 0, 50: 1, 75: 2, 100: 4, 127: 5},
    "dense": {v: i for i, v in enumerate(NSYNTH_VELOCITIES)},
}


def _check_mapping(velocity_mapping: str) -> dict[int, int]:
    if velocity_mapping not in VELOCITY_MAPPINGS:
        raise ValueError(f"velocity_mapping must be one of {sorted(VELOCITY_MAPPINGS)}, got {velocity_mapping!r}")
    return VELOCITY_MAPPINGS[velocity_mapping]


def map_velocity(velocity: int, velocity_mapping: VelocityMapping = "dense", note: str | None = None) -> int:
    """MIDI velocity (one of 25, 50, 75, 100, 127) -> label id under ``velocity_mapping``."""
    table = _check_mapping(velocity_mapping)
    if isinstance(velocity, bool) or not isinstance(velocity, (int, np.integer)) or int(velocity) not in table:
        where = f" (note {note!r})" if note is not None else ""
        raise ValueError(f"velocity must be one of NSynth's MIDI velocities {sorted(table)}, got {velocity!r}{where}")
    return table[int(velocity)]


def _read_examples(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"NSynth metadata not found: {path} (expected root/examples.json)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(meta, dict) or not meta:
        raise ValueError(f"{path} must map note names to their attributes and hold at least one note")
    for name, entry in meta.items():
        if not isinstance(entry, dict):
            raise TypeError(f"note {name!r} in {path}: expected a dict of attributes, got {type(entry).__name__}")
        for key in ("instrument", "pitch", "velocity"):
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"note {name!r} in {path}: {key!r} must be an int >= 0, got {value!r}")
    return meta


class NSynth(Dataset):
    """NSynth notes in SING's form (see the module docstring).

    Args:
        root: folder with ``examples.json`` and ``audio/``.
        pad: zeros added on each side of every waveform (SING: 2304 = the decoder's strip 1792 + 512).
        velocity_mapping: "dense" (0..4) or "sing" (the official table, ids {0, 1, 2, 4, 5}).
        sample_rate: the rate every WAV must have.
        num_samples: the length every WAV must have (NSynth: 64000).

    Raises at construction if an entry has no WAV (naming the notes) or has a bad velocity; when an item is read,
    if its WAV has another rate, length or more than one channel (naming the note).

    Attributes:
        names: the sorted note names (item ``i`` is ``names[i]``).
        cardinalities: ``{"instrument", "pitch", "velocity"}`` -> 1 + the largest id (SING's table sizes).
        instrument_names: ``instrument_str`` per instrument id (for ``SINGConfig.instrument_names``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        pad: int = 2304,
        velocity_mapping: VelocityMapping = "dense",
        sample_rate: int = 16000,
        num_samples: int = 64000,
    ) -> None:
        self.root = Path(root)
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise ValueError(f"pad must be an int >= 0, got {pad!r}")
        for name, value in (("sample_rate", sample_rate), ("num_samples", num_samples)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        _check_mapping(velocity_mapping)
        self.pad, self.velocity_mapping = pad, velocity_mapping
        self.sample_rate, self.num_samples = sample_rate, num_samples
        meta = _read_examples(self.root / "examples.json")
        self.names: list[str] = sorted(meta)
        self._labels = [
            (int(meta[n]["instrument"]), int(meta[n]["pitch"]), map_velocity(meta[n]["velocity"], velocity_mapping, n))
            for n in self.names
        ]
        missing = [n for n in self.names if not self.audio_path(n).is_file()]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            shown = ", ".join(repr(n) for n in missing[:5]) + more
            raise FileNotFoundError(f"{len(missing)} note(s) of {self.root / 'examples.json'} have no WAV in "
                                    f"{self.root / 'audio'}: {shown}")
        names = {int(meta[n]["instrument"]): str(meta[n].get("instrument_str", "")) for n in self.names}
        self._instrument_names = names
        self.cardinalities = {
            key: 1 + max(lab[i] for lab in self._labels) for i, key in enumerate(("instrument", "pitch", "velocity"))
        }

    @property
    def instrument_names(self) -> tuple[str, ...]:
        """``instrument_str`` of every instrument id up to the largest ('' for ids without notes)."""
        return tuple(self._instrument_names.get(i, "") for i in range(self.cardinalities["instrument"]))

    def audio_path(self, name: str) -> Path:
        """``root/audio/<name>.wav``."""
        return self.root / "audio" / f"{name}.wav"

    def labels(self, index: int) -> tuple[int, int, int]:
        """(instrument, pitch, velocity id) of item ``index`` without reading its audio."""
        return self._labels[index]

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, name: str) -> torch.Tensor:
        path = self.audio_path(name)
        try:
            info = sf.info(str(path))
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise ValueError(f"note {name!r}: cannot read {path}: {exc}") from exc
        if info.samplerate != self.sample_rate:
            raise ValueError(f"note {name!r}: {path} has sample rate {info.samplerate} Hz, expected {self.sample_rate}")
        if info.channels != 1:
            raise ValueError(f"note {name!r}: {path} has {info.channels} channels, expected mono")
        if info.frames != self.num_samples:
            raise ValueError(f"note {name!r}: {path} has {info.frames} samples, expected {self.num_samples}")
        if info.subtype == "PCM_16":  # SING: int16 / (2**15 - 1)
            data = sf.read(str(path), dtype="int16")[0].astype(np.float32) / (2**15 - 1)
        else:
            data = sf.read(str(path), dtype="float32")[0]
        return torch.from_numpy(np.ascontiguousarray(data))  # (num_samples,)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} notes")
        name = self.names[index]
        instrument, pitch, velocity = self._labels[index]
        wav = F.pad(self._read(name), (self.pad, self.pad))  # (num_samples + 2 pad,)
        return {
            "wav": wav,
            "instrument": torch.tensor(instrument),
            "pitch": torch.tensor(pitch),
            "velocity": torch.tensor(velocity),
            "name": name,
        }

    def split(
        self, valid_ratio: float = 0.1, test_ratio: float = 0.1, seed: int = 42
    ) -> tuple[Subset, Subset, Subset]:
        """(train, valid, test) subsets by :func:`nsynth_split`."""
        train, valid, test = nsynth_split(self.names, [lab[:2] for lab in self._labels], valid_ratio, test_ratio, seed)
        return Subset(self, train), Subset(self, valid), Subset(self, test)


def nsynth_split(
    names: Sequence[str],
    pairs: Sequence[tuple[int, int]],
    valid_ratio: float = 0.1,
    test_ratio: float = 0.1,
    seed: int = 42,
) -> tuple[list[int], list[int], list[int]]:
    """SING's split of note indices into (train, valid, test) by (instrument, pitch) groups.

    Args:
        names: note names, sorted (the dataset order; item ``i`` is ``names[i]``).
        pairs: (instrument, pitch) of each note, aligned with ``names``.
        valid_ratio, test_ratio: probabilities of a group going to valid / test (sum <= 1).
        seed: seed of the Python ``random.Random`` drawing one number per group (the global RNG is untouched).

    Returns index lists; a group's notes keep their dataset order.
    """
    if len(names) != len(pairs):
        raise ValueError(f"names and pairs must have the same length, got {len(names)} and {len(pairs)}")
    if list(names) != sorted(names):
        raise ValueError("names must be sorted (SING groups notes in the order of the sorted note names)")
    for name, value in (("valid_ratio", valid_ratio), ("test_ratio", test_ratio)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    if valid_ratio + test_ratio > 1.0:
        raise ValueError(f"valid_ratio + test_ratio must be <= 1, got {valid_ratio + test_ratio}")
    groups: dict[tuple[int, int], list[int]] = {}
    for index, pair in enumerate(pairs):
        groups.setdefault(tuple(pair), []).append(index)
    rng = random.Random(seed)
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for indexes in groups.values():
        score = rng.random()
        if score < valid_ratio:
            valid.extend(indexes)
        elif score < valid_ratio + test_ratio:
            test.extend(indexes)
        else:
            train.extend(indexes)
    return train, valid, test


def harmonic_note(
    pitch: int, velocity: int, instrument: int, num_samples: int = 64000, sample_rate: int = 16000,
    held: float = 0.75,
) -> np.ndarray:
    """A deterministic instrument-like note (num_samples,) float32: additive harmonics of MIDI ``pitch``.

    The ``instrument`` id sets the spectral tilt (harmonic ``h`` has amplitude ``h**-(0.6 + 0.35 * (i % 5))``),
    odd-harmonic emphasis (odd ids), attack (5 to 65 ms) and decay rate; ``velocity`` (MIDI) scales the peak
    to ``0.8 * velocity / 127``. The note is held for ``held`` of its length, then released in 50 ms.
    """
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12)
    if not 0 < f0 < sample_rate / 2:
        raise ValueError(f"pitch {pitch} has its fundamental {f0:.1f} Hz outside (0, {sample_rate / 2}) Hz")
    t = np.arange(num_samples) / sample_rate
    tilt = 0.6 + 0.35 * (instrument % 5)
    x = np.zeros(num_samples)
    for h in range(1, int(sample_rate / 2 / f0) + 1):
        amp = h ** -tilt * (0.4 if instrument % 2 and h % 2 == 0 else 1.0)
        x += amp * np.sin(2 * np.pi * h * f0 * t + 0.3 * h * instrument)
    attack = 0.005 + 0.015 * (instrument % 5)
    decay = 0.5 + 0.7 * ((instrument // 5) % 4)
    env = np.minimum(t / attack, 1.0) * np.exp(-decay * t)
    release_at = held * num_samples / sample_rate
    env *= np.clip(1.0 - (t - release_at) / 0.05, 0.0, 1.0)
    x *= env
    return (0.8 * velocity / 127 * x / np.abs(x).max()).astype(np.float32)


def write_synthetic_nsynth(
    root: str | os.PathLike,
    instruments: Sequence[int] = (0, 1),
    pitches: Sequence[int] = (57, 64),
    velocities: Sequence[int] = (50, 100),
    num_samples: int = 64000,
    sample_rate: int = 16000,
) -> int:
    """Write :func:`harmonic_note` notes in NSynth's layout (``examples.json`` + ``audio/*.wav``, 16-bit PCM)
    under ``root``, one per (instrument, pitch, velocity); note names follow NSynth
    (``synth_<instrument:03d>-<pitch:03d>-<velocity:03d>``). Returns the number of notes written."""
    root = Path(root)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    meta: dict[str, dict[str, Any]] = {}
    for instrument in instruments:
        for pitch in pitches:
            for velocity in velocities:
                name = f"synth_{instrument:03d}-{pitch:03d}-{velocity:03d}"
                wav = harmonic_note(pitch, velocity, instrument, num_samples, sample_rate)
                sf.write(str(root / "audio" / f"{name}.wav"), wav, sample_rate, subtype="PCM_16")
                meta[name] = {"note_str": name, "instrument": int(instrument),
                              "instrument_str": f"synth_{instrument:03d}", "pitch": int(pitch),
                              "velocity": int(velocity), "sample_rate": sample_rate}
    (root / "examples.json").write_text(json.dumps(meta, indent=1))
    return len(meta)
