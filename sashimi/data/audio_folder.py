"""AudioFolder: a folder (or list) of audio files as a dataset of token sequences for training.

Every item is a 1-D int64 tensor of *target* tokens ``q`` (the model's input is
``model.shift_right(q)``), produced by this pipeline:

1. read the file with soundfile (WAV, FLAC, OGG; any subtype soundfile reads);
2. mix down to mono (mean over channels);
3. resample to the model's rate with soxr (high quality), or refuse a file at another rate
   when ``resample=False``;
4. take the item's segment: a fixed-length crop (``mode='crop'``: random offsets for training,
   non-overlapping tiles from the start for evaluation) or the whole clip padded to ``seq_len``
   (``mode='pad'``; ``seq_len=None`` keeps whole clips of any length);
5. optionally min-max scale the segment to [-1, 1] (``minmax=True``: the SaShiMi paper's pipeline
   scales each training example this way);
6. quantize to ``2**bits`` classes, mu-law or linear (:func:`sashimi.audio.quantize`);
7. pad to ``seq_len`` with :data:`IGNORE_INDEX`, which the loss skips.

Files are scanned once at construction (headers, and the samples of float files, with a progress
bar): unreadable and zero-length files, and float files with NaN or infinite samples, are an error
that names the file, or are skipped with a warning that names them (``on_error='warn'``); float files
with samples outside [-1, 1] get one warning naming them (quantization clips those samples unless
``minmax=True``); a file at another sample rate is an error when ``resample=False``; a clip
shorter than the crop is an error, or is padded or skipped (``short=``). Items are deterministic
given ``seed``, the epoch (:meth:`AudioFolder.set_epoch`) and the index, so training runs resume
exactly and every DataLoader worker / DDP rank agrees on the data.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from sashimi.audio import _check_quantization, check_finite_samples, quantize
from sashimi.audio import resample as _resample

__all__ = [
    "AUDIO_EXTENSIONS",
    "IGNORE_INDEX",
    "AudioFolder",
    "ClipInfo",
    "find_audio_files",
    "pad_collate",
]

#: File extensions (lower case) that :func:`find_audio_files` picks up.
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg")
#: Target value of padding positions; ``F.cross_entropy(..., ignore_index=IGNORE_INDEX)`` skips them.
IGNORE_INDEX = -100

Mode = Literal["crop", "pad"]
ShortPolicy = Literal["error", "pad", "skip"]
ErrorPolicy = Literal["raise", "warn"]


@dataclass(frozen=True)
class ClipInfo:
    """Header information of one audio file.

    Attributes:
        path: the file.
        frames: samples per channel at the file's rate.
        sample_rate: the file's rate (Hz).
        channels: channel count.
        length: samples at the dataset's rate (after resampling).
    """

    path: Path
    frames: int
    sample_rate: int
    channels: int
    length: int


def find_audio_files(
    root: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS, recursive: bool = True
) -> list[Path]:
    """Audio files under ``root`` with one of ``extensions`` (case-insensitive), sorted by relative path.

    Hidden files and folders (name starting with '.') are skipped.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data folder not found: {root}")
    if not root.is_dir():
        raise ValueError(f"data folder {root} is not a directory")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    pattern = root.rglob("*") if recursive else root.glob("*")
    files = []
    for p in pattern:
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in exts and p.is_file():
            files.append(p)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _check_positive_int(value: object, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


#: soundfile subtypes that store float samples (which may be NaN, inf or outside [-1, 1]).
FLOAT_SUBTYPES: frozenset[str] = frozenset({"FLOAT", "DOUBLE"})
#: frames per block when a float file's samples are checked during the scan
_SCAN_BLOCK = 1 << 16


def _scan_float_samples(path: Path) -> float:
    """Read a float file block by block; return its peak |sample|, or raise ValueError naming the
    file and the first NaN/inf sample."""
    import soundfile as sf

    peak, offset = 0.0, 0
    for block in sf.blocks(str(path), blocksize=_SCAN_BLOCK, dtype="float64", always_2d=True):  # (T, C)
        check_finite_samples(block, path, offset)
        if block.size:
            peak = max(peak, float(np.abs(block).max()))
        offset += block.shape[0]
    return peak


def _resampled_length(frames: int, orig: int, new: int) -> int:
    """Length soxr produces when resampling ``frames`` samples from ``orig`` to ``new`` Hz."""
    if orig == new:
        return frames
    return int(round(frames * new / orig))


class AudioFolder(Dataset):
    """Audio files as token sequences for an autoregressive waveform model.

    Args:
        root: folder searched recursively for ``extensions`` (ignored for discovery when ``files`` is
            given, but still used in messages).
        files: explicit list of files (e.g. one split of a dataset layout); default: all audio under
            ``root``.
        sample_rate: the model's rate in Hz; every clip is brought to it.
        bits: tokens are ``2**bits`` classes.
        quantization: 'mu-law' or 'linear'.
        seq_len: item length L in samples; None keeps whole clips (batch them with :func:`pad_collate`).
        mode: 'crop' (fixed-length crops of length L) or 'pad' (each clip from its start, padded to L;
            a clip longer than L is an error).
        random_crop: 'crop' mode: random offsets (training) or non-overlapping tiles from the start of
            each clip (evaluation, deterministic).
        crops_per_clip: 'crop' mode: items per clip; None = ``max(1, length // seq_len)`` (an epoch
            covers the data about once).
        minmax: min-max scale each item's segment to [-1, 1] before quantizing (the paper's pipeline).
        resample: resample clips at other rates with soxr; False makes such a file an error.
        short: 'crop' mode, clips shorter than L: 'error' (default), 'pad' (padded with
            :data:`IGNORE_INDEX`) or 'skip' (dropped with a warning naming them).
        on_error: unreadable or zero-length files, and float files with NaN/inf samples: 'raise'
            (default) or 'warn' (skipped with a warning naming each one; :attr:`skipped` lists them).
        extensions: extensions picked up under ``root``.
        seed: seed of the random crops.
        cache: keep decoded (resampled, mono) clips in memory after first use.
        progress: tqdm bar while scanning many files.

    Items: ``dataset[i]`` is an int64 tensor ``(L,)`` of target tokens (``(T_clip,)`` when ``seq_len``
    is None), padded positions set to :data:`IGNORE_INDEX`.

    Raises:
        FileNotFoundError / ValueError: see the module docstring; every message names the file or the
            argument at fault.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        files: Iterable[str | os.PathLike] | None = None,
        sample_rate: int = 16000,
        bits: int = 8,
        quantization: str = "mu-law",
        seq_len: int | None = None,
        mode: Mode = "crop",
        random_crop: bool = True,
        crops_per_clip: int | None = None,
        minmax: bool = False,
        resample: bool = True,
        short: ShortPolicy = "error",
        on_error: ErrorPolicy = "raise",
        extensions: Sequence[str] = AUDIO_EXTENSIONS,
        seed: int = 0,
        cache: bool = False,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.sample_rate = _check_positive_int(sample_rate, "sample_rate")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise ValueError(f"bits must be an int in [1, 16], got {bits!r}")
        self.bits = bits
        self.quantization = _check_quantization(quantization)
        self.seq_len = _check_positive_int(seq_len, "seq_len", allow_none=True)
        if mode not in ("crop", "pad"):
            raise ValueError(f"mode must be 'crop' or 'pad', got {mode!r}")
        self.mode = mode
        self.random_crop = bool(random_crop)
        self.crops_per_clip = _check_positive_int(crops_per_clip, "crops_per_clip", allow_none=True)
        if short not in ("error", "pad", "skip"):
            raise ValueError(f"short must be 'error', 'pad' or 'skip', got {short!r}")
        if on_error not in ("raise", "warn"):
            raise ValueError(f"on_error must be 'raise' or 'warn', got {on_error!r}")
        self.short, self.on_error = short, on_error
        self.minmax, self.resample = bool(minmax), bool(resample)
        self.seed = int(seed)
        self.epoch = 0
        self.cache = bool(cache)
        self._cache: dict[int, Tensor] = {}

        if files is None:
            paths = find_audio_files(self.root, extensions)
            if not paths:
                raise ValueError(
                    f"no audio files ({', '.join(extensions)}) found under {self.root}"
                )
        else:
            paths = [Path(p) for p in files]
            if not paths:
                raise ValueError(f"no audio files given for {self.root} (the file list is empty)")
        self.clips: list[ClipInfo] = []
        #: (path, reason) of files skipped by ``on_error='warn'`` or ``short='skip'``
        self.skipped: list[tuple[Path, str]] = []
        self._scan(paths, progress)
        if not self.clips:
            reasons = "; ".join(f"{p}: {r}" for p, r in self.skipped[:5])
            raise ValueError(f"no usable audio files under {self.root}: all {len(paths)} were skipped ({reasons})")
        self._build_index()

    # ---- scanning --------------------------------------------------------------------------------
    def _scan(self, paths: list[Path], progress: bool) -> None:
        import soundfile as sf

        bad: list[tuple[Path, str]] = []
        short: list[tuple[Path, str]] = []
        nonfinite: list[tuple[Path, str]] = []
        loud: list[tuple[Path, float]] = []
        it: Iterable[Path] = paths
        if progress and len(paths) > 256:
            from tqdm.auto import tqdm

            it = tqdm(paths, desc=f"scanning {self.root.name or self.root}", unit="file", leave=False)
        for path in it:
            if not path.is_file():
                problem = "file not found"
                if self.on_error == "raise":
                    raise FileNotFoundError(f"audio file not found: {path}")
                bad.append((path, problem))
                continue
            try:
                info = sf.info(str(path))
                frames, rate, channels = int(info.frames), int(info.samplerate), int(info.channels)
            except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
                if self.on_error == "raise":
                    raise ValueError(
                        f"cannot read audio file {path}: {exc} (pass on_error='warn' / --skip-bad-files to skip "
                        "unreadable files with a warning)"
                    ) from exc
                bad.append((path, f"unreadable: {exc}"))
                continue
            if frames <= 0:
                if self.on_error == "raise":
                    raise ValueError(
                        f"audio file {path} contains no samples (pass on_error='warn' / --skip-bad-files to skip "
                        "empty files with a warning)"
                    )
                bad.append((path, "zero-length"))
                continue
            if info.subtype in FLOAT_SUBTYPES:
                try:
                    peak = _scan_float_samples(path)
                except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
                    finite_err = isinstance(exc, ValueError)  # check_finite_samples names the file
                    if self.on_error == "raise":
                        msg = str(exc) if finite_err else f"cannot read audio file {path}: {exc}"
                        raise ValueError(
                            f"{msg} (pass on_error='warn' / --skip-bad-files to skip such files with a warning)"
                        ) from exc
                    if finite_err:
                        nonfinite.append((path, str(exc).removeprefix(f"audio file {path} contains ")))
                    else:
                        bad.append((path, f"unreadable: {exc}"))
                    continue
                if peak > 1.0:
                    loud.append((path, peak))
            if rate != self.sample_rate and not self.resample:
                raise ValueError(
                    f"{path} has sample rate {rate} Hz but the model runs at {self.sample_rate} Hz and resampling "
                    "is off; pass resample=True (CLI: drop --no-resample) or convert the file"
                )
            length = _resampled_length(frames, rate, self.sample_rate)
            if self.seq_len is not None and self.mode == "pad" and length > self.seq_len:
                raise ValueError(
                    f"{path} has {length} samples at {self.sample_rate} Hz, longer than seq_len={self.seq_len} "
                    "in mode='pad'; use mode='crop' to train on crops, or a larger seq_len"
                )
            if self.seq_len is not None and self.mode == "crop" and length < self.seq_len:
                if self.short == "error":
                    raise ValueError(
                        f"{path} has {length} samples at {self.sample_rate} Hz, shorter than the crop "
                        f"seq_len={self.seq_len}; use short='pad' (CLI --short pad) to pad it with ignored "
                        "targets, short='skip' to drop such clips, or a shorter seq_len"
                    )
                if self.short == "skip":
                    short.append((path, f"shorter than seq_len={self.seq_len} ({length} samples)"))
                    continue
            self.clips.append(ClipInfo(path, frames, rate, channels, length))
        if bad:
            names = ", ".join(f"{p} ({r})" for p, r in bad[:20])
            more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
            warnings.warn(f"skipped {len(bad)} unreadable or empty audio file(s): {names}{more}", stacklevel=3)
        if nonfinite:
            names = ", ".join(f"{p} ({r})" for p, r in nonfinite[:20])
            more = f" and {len(nonfinite) - 20} more" if len(nonfinite) > 20 else ""
            warnings.warn(
                f"skipped {len(nonfinite)} audio file(s) with NaN or infinite samples: {names}{more}", stacklevel=3
            )
        if loud and not self.minmax:
            names = ", ".join(f"{p} (peak {v:.4g})" for p, v in loud[:20])
            more = f" and {len(loud) - 20} more" if len(loud) > 20 else ""
            warnings.warn(
                f"{len(loud)} float audio file(s) have samples outside [-1, 1], which quantization clips: "
                f"{names}{more} (minmax=True scales each item instead)",
                stacklevel=3,
            )
        if short:
            names = ", ".join(str(p) for p, _ in short[:20])
            more = f" and {len(short) - 20} more" if len(short) > 20 else ""
            warnings.warn(
                f"skipped {len(short)} clip(s) shorter than seq_len={self.seq_len}: {names}{more}", stacklevel=3
            )
        self.skipped = bad + nonfinite + short

    def _build_index(self) -> None:
        counts = []
        for clip in self.clips:
            if self.mode == "crop" and self.seq_len is not None:
                n = self.crops_per_clip or max(1, clip.length // self.seq_len)
            else:
                n = 1
            counts.append(n)
        self._counts = np.asarray(counts, dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self._counts)])

    # ---- dataset protocol ------------------------------------------------------------------------
    @property
    def files(self) -> list[Path]:
        """The files in use (after skipping)."""
        return [c.path for c in self.clips]

    @property
    def total_samples(self) -> int:
        """Total audio length over all clips, in samples at the dataset's rate."""
        return int(sum(c.length for c in self.clips))

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of ``epoch`` (call before iterating, like ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """Item index -> (clip index, crop number within the clip)."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        index %= len(self)
        clip = int(np.searchsorted(self._starts, index, side="right") - 1)
        return clip, index - int(self._starts[clip])

    def load(self, clip: int) -> Tensor:
        """The whole clip ``clip`` as a mono float32 waveform ``(T,)`` at the dataset's rate."""
        if self.cache and clip in self._cache:
            return self._cache[clip]
        info = self.clips[clip]
        wav = self._read(info, 0, info.frames)
        if info.sample_rate != self.sample_rate:
            wav = _resample(wav, info.sample_rate, self.sample_rate).float()
        if self.cache:
            self._cache[clip] = wav
        return wav

    def _read(self, info: ClipInfo, start: int, frames: int) -> Tensor:
        import soundfile as sf

        try:
            data, _ = sf.read(str(info.path), start=start, frames=frames, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot read audio file {info.path}: {exc}") from exc
        if data.shape[0] == 0:
            raise ValueError(f"audio file {info.path} returned no samples (truncated or changed since the scan?)")
        check_finite_samples(data, info.path, start)
        return torch.from_numpy(np.ascontiguousarray(data.mean(axis=1, dtype=np.float32)))

    def crop_offset(self, index: int) -> int:
        """Start sample (at the dataset's rate) of item ``index``'s crop ('crop' mode)."""
        clip, j = self.locate(index)
        length, L = self.clips[clip].length, self.seq_len
        if L is None or self.mode != "crop" or length <= L:
            return 0
        if self.random_crop:
            rng = np.random.default_rng([self.seed, self.epoch, index % len(self)])
            return int(rng.integers(0, length - L + 1))
        return min(j * L, length - L)

    def segment(self, index: int) -> Tensor:
        """Float32 waveform ``(T,)`` of item ``index`` before scaling and quantization (unpadded)."""
        clip, _ = self.locate(index)
        info = self.clips[clip]
        L = self.seq_len
        if L is None or self.mode == "pad":
            return self.load(clip)
        start = self.crop_offset(index)
        if info.sample_rate == self.sample_rate and not self.cache:
            return self._read(info, start, min(L, info.frames - start))  # read just the crop
        return self.load(clip)[start : start + L]

    def __getitem__(self, index: int) -> Tensor:
        seg = self.segment(index)
        if seg.numel() == 0:
            raise ValueError(f"item {index} of {self.clips[self.locate(index)[0]].path} is empty")
        q = quantize(seg, bits=self.bits, quantization=self.quantization, minmax=self.minmax)
        L = self.seq_len
        if L is None:
            return q
        if q.numel() > L:  # resampling rounding can add a sample
            q = q[:L]
        if q.numel() < L:
            q = torch.cat([q, torch.full((L - q.numel(),), IGNORE_INDEX, dtype=q.dtype)])
        return q

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, clips={len(self.clips)}, items={len(self)}, "
            f"sample_rate={self.sample_rate}, bits={self.bits}, quantization={self.quantization!r}, "
            f"seq_len={self.seq_len}, mode={self.mode!r}, minmax={self.minmax})"
        )


def pad_collate(batch: Sequence[Tensor]) -> Tensor:
    """Stack 1-D token tensors into ``(B, max_len)``, padding with :data:`IGNORE_INDEX`."""
    if not batch:
        raise ValueError("pad_collate got an empty batch")
    n = max(int(t.numel()) for t in batch)
    out = torch.full((len(batch), n), IGNORE_INDEX, dtype=torch.int64)
    for i, t in enumerate(batch):
        out[i, : t.numel()] = t
    return out
