"""SING: the symbol-to-instrument neural generator (Défossez, Zeghidour et al., NeurIPS 2018), with an S4 variant.

A whole note is synthesized in one pass from its labels (instrument, pitch, velocity)::

    label tables (instrument 16 · pitch 8 · velocity 2 · time 4, per frame)     (B, T, 30)
      -> sequence generator: 3-layer LSTM 1024 + linear  | or an S4 / SaShiMi stack   (B, 128, T)
      -> FrameDecoder: Conv1d k=9 (no padding) + ReLU -> rewrite 1x1 convs + ReLU
         -> transposed conv (kernel 1024, stride 256) whose weight is tapered by a squared periodic Hann window:
            each frame vector becomes a 1024-sample frame, overlap-added every 256 samples; linear output.

Length bookkeeping (paper sizes): ``strip = kernel - stride + (context - 1) * stride / 2 = 1792``; notes are
padded by ``pad = strip + 512 = 2304`` samples per side (64000 -> 68608), which the FrameEncoder turns into
``T = 265`` frames; the decoder maps 265 frames to ``(T - context + 2) * stride - kernel = 65024`` samples (the
padded note less ``strip`` per side; the training target) and generation crops 512 more per side: 64000.

Training (SING's three phases, each with a fresh Adam at 3e-4): :func:`autoencoder_step` (FrameEncoder ->
FrameDecoder under the spectral loss), :func:`sequence_steps` (the generator regresses the frozen encoder's
embeddings with an MSE, truncated backpropagation over 32 frames for the LSTM), :func:`end2end_step` (generator
and decoder under the spectral loss); :func:`train_phase` runs one phase over a data loader.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from sashimi._validate import is_int as _is_int
from sashimi.data.nsynth import VELOCITY_MAPPINGS, map_velocity
from sashimi.losses.spectral import SpectralLoss
from sashimi.models.base import PretrainedModel, register_model
from sashimi.models.config import ModelConfig, SaShiMiConfig
from sashimi.models.sashimi import BiSaShiMi, SaShiMi

__all__ = [
    "SING",
    "SING_PRESETS",
    "FrameDecoder",
    "FrameEncoder",
    "SINGAutoencoder",
    "SINGConfig",
    "SequenceGenerator",
    "autoencoder_step",
    "end2end_step",
    "sequence_steps",
    "sing_preset",
    "train_phase",
]

SequenceModel = Literal["lstm", "s4"]
LSTMState = tuple[Tensor, Tensor]


@dataclass
class SINGConfig(ModelConfig):
    """Hyperparameters of :class:`SING` (defaults: the paper's sizes with NSynth's tables and dense velocity ids;
    ``sing_preset("nsynth-sing")`` is exactly the paper's model, with SING's 6 velocity ids).

    Attributes:
        num_instruments, num_pitches, num_velocities: label table sizes (NSynth: 1006 / 121 / 5 dense velocity
            ids; SING's velocity table has 6 rows).
        instrument_dim, pitch_dim, velocity_dim, time_dim: embedding sizes (16 / 8 / 2 / 4; ``time_dim=0``
            drops the per-frame time table, SING's ablation).
        dimension: size of a frame embedding (128).
        channels: width of the FrameDecoder / FrameEncoder convolutions (4096).
        kernel_size, stride: frame length and hop of the overlap-add (1024 / 256).
        context_size: kernel of the decoder's first convolution (9, no padding).
        rewrite_layers: 1x1 convolutions after it (2).
        sequence_model: "lstm" (SING) or "s4" (an S4 / SaShiMi stack over the frames).
        lstm_hidden, lstm_layers: the LSTM (1024 x 3).
        s4_d_model, s4_n_layers, s4_pool, s4_expand, s4_ff, s4_d_state, s4_bidirectional: the SaShiMi backbone
            of the "s4" generator (bidirectional by default: the whole note is generated at once); the frame
            sequence is zero-padded on the right to a multiple of ``prod(s4_pool)`` and cropped.
        sample_rate: 16000.
        note_length: samples per generated note (64000; a multiple of ``stride``).
        extra_pad: samples the decoder produces beyond the note on each side, cropped by generation (512).
        instrument_names: optional name of every instrument id (NSynth's ``instrument_str``; '' for unused ids),
            for :meth:`SING.label_vocabularies` and generation by name.
        velocity_mapping: how MIDI velocities map to velocity ids ("dense": 0..4, the default for new models;
            "sing": SING's table, ids {0,1,2,4,5}, which its released model needs), see :mod:`sashimi.data.nsynth`.
        config_version: format version of this config.
    """

    model_type: ClassVar[str] = "sing"

    num_instruments: int = 1006
    num_pitches: int = 121
    num_velocities: int = 5
    instrument_dim: int = 16
    pitch_dim: int = 8
    velocity_dim: int = 2
    time_dim: int = 4
    dimension: int = 128
    channels: int = 4096
    kernel_size: int = 1024
    stride: int = 256
    context_size: int = 9
    rewrite_layers: int = 2
    sequence_model: str = "lstm"
    lstm_hidden: int = 1024
    lstm_layers: int = 3
    s4_d_model: int = 128
    s4_n_layers: int = 4
    s4_pool: tuple[int, ...] = ()
    s4_expand: int = 2
    s4_ff: int = 2
    s4_d_state: int = 64
    s4_bidirectional: bool = True
    sample_rate: int = 16000
    note_length: int = 64000
    extra_pad: int = 512
    velocity_mapping: str = "dense"
    instrument_names: tuple[str, ...] = ()
    config_version: int = 1

    def __post_init__(self) -> None:
        positive = ("num_instruments", "num_pitches", "num_velocities", "instrument_dim", "pitch_dim",
                    "velocity_dim", "dimension", "channels", "kernel_size", "stride", "context_size",
                    "lstm_hidden", "lstm_layers", "s4_d_model", "s4_n_layers", "s4_expand", "s4_d_state",
                    "sample_rate", "note_length", "config_version")
        for name in positive:
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        for name in ("time_dim", "rewrite_layers", "s4_ff", "extra_pad"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an int >= 0, got {getattr(self, name)!r}")
        if self.sequence_model not in ("lstm", "s4"):
            raise ValueError(f"sequence_model must be 'lstm' or 's4', got {self.sequence_model!r}")
        if not isinstance(self.s4_pool, (list, tuple)) or not all(_is_int(p) and p >= 1 for p in self.s4_pool):
            raise ValueError(f"s4_pool must be a list or tuple of ints >= 1, got {self.s4_pool!r}")
        self.s4_pool = tuple(self.s4_pool)
        if not isinstance(self.s4_bidirectional, bool):
            raise TypeError(f"s4_bidirectional must be a bool, got {self.s4_bidirectional!r}")
        if self.velocity_mapping not in VELOCITY_MAPPINGS:
            raise ValueError(f"velocity_mapping must be one of {sorted(VELOCITY_MAPPINGS)}, got "
                             f"{self.velocity_mapping!r}")
        if not isinstance(self.instrument_names, (list, tuple)) or not all(
                isinstance(n, str) for n in self.instrument_names):
            raise TypeError(f"instrument_names must be a list of str, got {self.instrument_names!r}")
        self.instrument_names = tuple(self.instrument_names)
        if self.instrument_names and len(self.instrument_names) != self.num_instruments:
            raise ValueError(f"instrument_names has {len(self.instrument_names)} names for num_instruments="
                             f"{self.num_instruments} (give one per id, '' for unused ids, or none)")
        if self.kernel_size % self.stride or self.kernel_size < 2 * self.stride:
            raise ValueError(f"kernel_size ({self.kernel_size}) must be a multiple of stride ({self.stride}) and at "
                             "least twice it")
        if (self.context_size - 1) * self.stride % 2:
            raise ValueError(f"(context_size - 1) * stride must be even, got context_size={self.context_size}")
        if self.note_length % self.stride:
            raise ValueError(f"note_length ({self.note_length}) must be a multiple of stride ({self.stride})")
        if self.num_frames < self.context_size:
            raise ValueError(f"note_length={self.note_length} gives {self.num_frames} frames, fewer than "
                             f"context_size={self.context_size}")

    # ---- length bookkeeping -----------------------------------------------------------------
    @property
    def strip(self) -> int:
        """Samples the decoder loses on each side: ``kernel - stride + (context - 1) * stride / 2`` (1792)."""
        return self.kernel_size - self.stride + (self.context_size - 1) * self.stride // 2

    @property
    def pad(self) -> int:
        """Zero padding of a note on each side for the autoencoder: ``strip + extra_pad`` (2304)."""
        return self.strip + self.extra_pad

    @property
    def padded_length(self) -> int:
        """``note_length + 2 * pad`` (68608)."""
        return self.note_length + 2 * self.pad

    @property
    def num_frames(self) -> int:
        """Frame embeddings per note: the encoder's frames on a padded note (265)."""
        return 1 + (self.padded_length - self.kernel_size) // self.stride

    @property
    def decoder_length(self) -> int:
        """Decoder output samples: ``(num_frames - context + 2) * stride - kernel`` (65024)."""
        return (self.num_frames - self.context_size + 2) * self.stride - self.kernel_size

    @property
    def input_size(self) -> int:
        """Width of the concatenated label embeddings per frame (30)."""
        return self.instrument_dim + self.pitch_dim + self.velocity_dim + self.time_dim


#: Named configurations. "nsynth-sing": the paper's model with SING's velocity ids (63,747,929 parameters in
#: SING = generator + decoder). "tiny-sing": SING's debug sizes (channels 128, dimension 16, one rewrite layer,
#: LSTM 128 x 1) with dense velocity ids; trains on a CPU.
SING_PRESETS: dict[str, dict[str, Any]] = {
    "nsynth-sing": {"num_velocities": 6, "velocity_mapping": "sing"},
    "tiny-sing": {"dimension": 16, "channels": 128, "rewrite_layers": 1, "lstm_hidden": 128, "lstm_layers": 1,
                  "s4_d_model": 64, "s4_n_layers": 2, "s4_d_state": 32},
}


def sing_preset(name: str, **overrides: Any) -> SINGConfig:
    """``SINGConfig`` of preset ``name`` (see :data:`SING_PRESETS`) with ``overrides`` applied."""
    if name not in SING_PRESETS:
        raise ValueError(f"unknown SING preset {name!r}; available: {sorted(SING_PRESETS)}")
    return SINGConfig(**{**SING_PRESETS[name], **overrides})


def squared_hann(length: int) -> Tensor:
    """The squared periodic Hann window (length,), float32: SING's frame taper."""
    return torch.hann_window(length, periodic=True).square()


def _check_frames(z: object, dimension: int, name: str = "z") -> Tensor:
    if not isinstance(z, Tensor) or not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (B, {dimension}, T), got {type(z).__name__}")
    if z.ndim != 3 or z.shape[1] != dimension:
        raise ValueError(f"{name} must have shape (B, {dimension}, T), got {tuple(z.shape)}")
    return z


class WindowedConvTranspose1d(nn.Module):
    """``ConvTranspose1d(channels -> 1, kernel, stride, padding=kernel - stride)`` with its weight multiplied by a
    squared periodic Hann window at every forward: each input step adds one tapered frame."""

    def __init__(self, channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv_tr = nn.ConvTranspose1d(channels, 1, kernel_size, stride=stride, padding=kernel_size - stride)
        self.register_buffer("window", squared_hann(kernel_size), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, T) -> (B, 1, (T + 1) * stride - kernel)."""
        c = self.conv_tr
        return F.conv_transpose1d(x, c.weight * self.window, c.bias, stride=c.stride, padding=c.padding)


class WindowedConv1d(nn.Module):
    """``Conv1d(1 -> channels, kernel, stride)`` with its weight multiplied by a squared periodic Hann window."""

    def __init__(self, channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, channels, kernel_size, stride=stride)
        self.register_buffer("window", squared_hann(kernel_size), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, N) -> (B, C, 1 + (N - kernel) // stride)."""
        c = self.conv
        return F.conv1d(x, c.weight * self.window, c.bias, stride=c.stride)


class FrameDecoder(nn.Module):
    """Frame embeddings (B, dimension, T) -> waveform (B, (T - context + 2) * stride - kernel).

    ``layers``: Conv1d(dimension -> channels, context_size) + ReLU, ``rewrite_layers`` x [1x1 Conv1d + ReLU],
    then :class:`WindowedConvTranspose1d` (linear output). Parameter names follow SING's decoder.
    """

    def __init__(self, dimension: int = 128, channels: int = 4096, kernel_size: int = 1024, stride: int = 256,
                 context_size: int = 9, rewrite_layers: int = 2) -> None:
        super().__init__()
        self.dimension, self.kernel_size, self.stride, self.context_size = dimension, kernel_size, stride, context_size
        layers: list[nn.Module] = [nn.Conv1d(dimension, channels, context_size), nn.ReLU()]
        for _ in range(rewrite_layers):
            layers += [nn.Conv1d(channels, channels, 1), nn.ReLU()]
        layers.append(WindowedConvTranspose1d(channels, kernel_size, stride))
        self.layers = nn.Sequential(*layers)

    @property
    def strip(self) -> int:
        """Samples lost on each side relative to the padded input of the matching encoder (1792)."""
        return self.kernel_size - self.stride + (self.context_size - 1) * self.stride // 2

    def wav_length(self, frames: int) -> int:
        """Output samples for ``frames`` embeddings."""
        return (frames - self.context_size + 2) * self.stride - self.kernel_size

    def forward(self, z: Tensor) -> Tensor:
        """z (B, dimension, T) with T >= context_size -> (B, wav_length(T))."""
        _check_frames(z, self.dimension)
        if z.shape[-1] < self.context_size:
            raise ValueError(f"z has {z.shape[-1]} frames, fewer than context_size={self.context_size}")
        return self.layers(z).squeeze(1)  # (B, L)


class FrameEncoder(nn.Module):
    """Waveform (B, N) -> frame embeddings (B, dimension, 1 + (N - kernel) // stride), for the autoencoder phase.

    :class:`WindowedConv1d` (1 -> channels) + ReLU, ``rewrite_layers`` x [1x1 Conv1d + ReLU], 1x1 Conv1d
    (channels -> dimension), linear output.
    """

    def __init__(self, dimension: int = 128, channels: int = 4096, kernel_size: int = 1024, stride: int = 256,
                 rewrite_layers: int = 2) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        layers: list[nn.Module] = [WindowedConv1d(channels, kernel_size, stride), nn.ReLU()]
        for _ in range(rewrite_layers):
            layers += [nn.Conv1d(channels, channels, 1), nn.ReLU()]
        layers.append(nn.Conv1d(channels, dimension, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, wav: Tensor) -> Tensor:
        """wav (B, N), N >= kernel_size -> (B, dimension, frames)."""
        if not isinstance(wav, Tensor) or not wav.is_floating_point() or wav.ndim != 2:
            raise ValueError(f"wav must be a floating-point tensor (B, N), got "
                             f"{tuple(wav.shape) if isinstance(wav, Tensor) else type(wav).__name__}")
        if wav.shape[-1] < self.kernel_size:
            raise ValueError(f"wav has {wav.shape[-1]} samples, fewer than kernel_size={self.kernel_size}")
        return self.layers(wav.unsqueeze(1))


def _labels(value: object, name: str, size: int) -> Tensor:
    """An int, a list of ints or an integer tensor of label ids in [0, size) -> int64 tensor (B,)."""
    if _is_int(value):
        value = torch.tensor([value])
    elif isinstance(value, (list, tuple)) and all(_is_int(v) for v in value):
        value = torch.tensor(value, dtype=torch.long)
    if not isinstance(value, Tensor) or value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must be an int, a list of ints or an integer tensor of label ids, got "
                        f"{getattr(value, 'dtype', type(value).__name__)}")
    value = value.reshape(-1).long()
    if value.numel() == 0:
        raise ValueError(f"{name} is empty")
    lo, hi = int(value.min()), int(value.max())
    if lo < 0 or hi >= size:
        raise ValueError(f"{name} ids must lie in [0, {size}), got values in [{lo}, {hi}]")
    return value


class SequenceGenerator(nn.Module):
    """Labels -> frame embeddings (B, dimension, T): label tables concatenated per frame (instrument, pitch,
    velocity, time) -> LSTM + linear, or linear -> SaShiMi / BiSaShiMi -> linear (``config.sequence_model``).

    The inputs are the same at every frame except the time embedding; the generator is not autoregressive.
    """

    def __init__(self, config: SINGConfig) -> None:
        super().__init__()
        c = self.config = config
        self.instrument = nn.Embedding(c.num_instruments, c.instrument_dim)
        self.pitch = nn.Embedding(c.num_pitches, c.pitch_dim)
        self.velocity = nn.Embedding(c.num_velocities, c.velocity_dim)
        self.time = nn.Embedding(c.num_frames, c.time_dim) if c.time_dim else None
        if c.sequence_model == "lstm":
            self.lstm = nn.LSTM(c.input_size, c.lstm_hidden, num_layers=c.lstm_layers, batch_first=True)
            self.output = nn.Linear(c.lstm_hidden, c.dimension)
        else:
            backbone = SaShiMiConfig(d_model=c.s4_d_model, n_layers=c.s4_n_layers, pool=c.s4_pool,
                                     expand=c.s4_expand, ff=c.s4_ff, d_state=c.s4_d_state,
                                     bidirectional=c.s4_bidirectional)
            self.input = nn.Linear(c.input_size, c.s4_d_model)
            self.backbone = BiSaShiMi(backbone) if c.s4_bidirectional else SaShiMi(backbone)
            self.output = nn.Linear(c.s4_d_model, c.dimension)

    def features(self, instrument: Tensor, pitch: Tensor, velocity: Tensor, start: int, length: int) -> Tensor:
        """Concatenated label embeddings of frames ``start .. start + length``: (B, length, input_size)."""
        B = instrument.shape[0]
        parts = [self.instrument(instrument), self.pitch(pitch), self.velocity(velocity)]  # each (B, d)
        x = torch.cat(parts, dim=-1).unsqueeze(1).expand(B, length, -1)  # (B, length, 26)
        if self.time is not None:
            t = torch.arange(start, start + length, device=instrument.device)
            x = torch.cat([x, self.time(t).unsqueeze(0).expand(B, -1, -1)], dim=-1)  # (B, length, 30)
        return x

    def forward(
        self, instrument: Tensor, pitch: Tensor, velocity: Tensor, *, start: int = 0, length: int | None = None,
        state: LSTMState | None = None,
    ) -> tuple[Tensor, LSTMState | None]:
        """Embeddings of frames ``start .. start + length`` (default: the whole note) and the LSTM state after them.

        Args:
            instrument, pitch, velocity: (B,) int64 label ids (checked by :class:`SING`).
            start, length: a chunk of frames; the "s4" generator only runs whole notes (start 0, all frames).
            state: LSTM (h, c) from the previous chunk (None: zeros).

        Returns:
            z (B, dimension, length) and the LSTM state (None for "s4").
        """
        c = self.config
        length = c.num_frames - start if length is None else length
        if not (0 <= start and length >= 1 and start + length <= c.num_frames):
            raise ValueError(f"frames {start}..{start + length} are outside 0..{c.num_frames}")
        x = self.features(instrument, pitch, velocity, start, length)  # (B, length, input_size)
        if c.sequence_model == "lstm":
            y, state = self.lstm(x, state)  # (B, length, hidden)
        else:
            if start != 0 or length != c.num_frames or state is not None:
                raise ValueError("the s4 sequence generator runs on whole notes (start=0, all frames, no state)")
            h = self.input(x)  # (B, T, d_model)
            pad = (-length) % self.backbone.total_pool
            y = self.backbone(F.pad(h, (0, 0, 0, pad)))[:, :length]  # (B, T, d_model)
        return self.output(y).transpose(1, 2), state  # (B, dimension, length)


@register_model
class SING(PretrainedModel, nn.Module):
    """SING: labels -> :class:`SequenceGenerator` -> :class:`FrameDecoder` -> note waveform.

    ``model(instrument, pitch, velocity)`` -> (B, note_length) (64000 samples at 16 kHz for the paper sizes);
    labels are ints or integer tensors (B,) of ids in range of the tables. :meth:`generate` runs many notes in
    batches without gradients. The paper configuration has 63,747,929 parameters. Saved and loaded with
    ``save_pretrained`` / ``from_pretrained`` / ``sashimi.load_model`` (``model_type`` "sing").

    Args:
        config: a :class:`SINGConfig` or its dict (default: ``SINGConfig()``, the paper's sizes).
    """

    config_class = SINGConfig
    card_tags = ("audio", "music", "sing", "nsynth", "s4", "sashimi-audio")

    def __init__(self, config: SINGConfig | dict | None = None) -> None:
        super().__init__()
        config = self._coerce_config(config)
        self.config = config
        self.generator = SequenceGenerator(config)
        self.decoder = FrameDecoder(config.dimension, config.channels, config.kernel_size, config.stride,
                                    config.context_size, config.rewrite_layers)

    def check_labels(self, instrument: Any, pitch: Any, velocity: Any) -> tuple[Tensor, Tensor, Tensor]:
        """Labels (ints, lists of ints or integer tensors) as int64 (B,) on the model's device, size-1 labels broadcast;
        ValueError naming the label when out of range."""
        c = self.config
        ids = [_labels(instrument, "instrument", c.num_instruments), _labels(pitch, "pitch", c.num_pitches),
               _labels(velocity, "velocity", c.num_velocities)]
        n = max(len(t) for t in ids)
        if any(len(t) not in (1, n) for t in ids):
            raise ValueError(f"instrument, pitch and velocity must have the same batch size (or size 1), got "
                             f"{[len(t) for t in ids]}")
        ids = [t.expand(n) for t in ids]  # size-1 labels broadcast
        device = self.decoder.layers[0].weight.device
        return ids[0].to(device), ids[1].to(device), ids[2].to(device)

    def velocity_id(self, midi_velocity: int) -> int:
        """MIDI velocity (25, 50, 75, 100 or 127) -> velocity id under ``config.velocity_mapping``."""
        return map_velocity(midi_velocity, self.config.velocity_mapping)

    def instrument_id(self, instrument: int | str) -> int:
        """An instrument id, or the id of an instrument name of ``config.instrument_names``."""
        if isinstance(instrument, str):
            names = self.config.instrument_names
            if instrument not in names or not instrument:
                raise ValueError(f"unknown instrument name {instrument!r}" + (
                    f"; e.g. {[n for n in names if n][:5]}" if names else " (this model has no instrument names)"))
            return names.index(instrument)
        return int(_labels(instrument, "instrument", self.config.num_instruments)[0])

    def label_vocabularies(self) -> dict[str, Any]:
        """What each label means: ``{"instrument": {id: name} (or the id range), "pitch": MIDI range,
        "velocity": {MIDI velocity: id}}`` (for ``sashimi info``)."""
        c = self.config
        names = {i: n for i, n in enumerate(c.instrument_names) if n}
        return {
            "instrument": names or f"ids 0..{c.num_instruments - 1}",
            "pitch": f"MIDI pitches 0..{c.num_pitches - 1}",
            "velocity": dict(VELOCITY_MAPPINGS[c.velocity_mapping]),
        }

    def embed(self, instrument: Any, pitch: Any, velocity: Any) -> Tensor:
        """Frame embeddings (B, dimension, num_frames) of the labels."""
        return self.generator(*self.check_labels(instrument, pitch, velocity))[0]

    def forward(self, instrument: Any, pitch: Any, velocity: Any, *, crop: bool = True) -> Tensor:
        """Waveforms (B, note_length); with ``crop=False`` the decoder's full output (B, decoder_length), which
        has ``extra_pad`` more samples on each side (the end-to-end training target's length)."""
        wav = self.decoder(self.embed(instrument, pitch, velocity))  # (B, decoder_length)
        e = self.config.extra_pad
        return wav[:, e:wav.shape[-1] - e] if crop and e else wav

    @torch.no_grad()
    def generate(self, instrument: Any, pitch: Any, velocity: Any, *, batch_size: int = 64,
                 progress: bool = False) -> Tensor:
        """Notes (N, note_length) for N label triples (ints broadcast), ``batch_size`` at a time, no gradients."""
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        instrument, pitch, velocity = self.check_labels(instrument, pitch, velocity)  # (N,) each
        out = []
        for i in tqdm(range(0, len(instrument), batch_size), disable=not progress, desc="SING", unit="batch"):
            sl = slice(i, i + batch_size)
            out.append(self(instrument[sl], pitch[sl], velocity[sl]))  # (b, note_length)
        return torch.cat(out)

    def card_description(self) -> str:
        """A paragraph for the model card."""
        c = self.config
        generator = (f"a {c.lstm_layers}-layer LSTM ({c.lstm_hidden})" if c.sequence_model == "lstm" else
                     f"a {'bidirectional ' if c.s4_bidirectional else ''}S4 / SaShiMi stack (d_model {c.s4_d_model}, "
                     f"{c.s4_n_layers} layers per tier, pool {list(c.s4_pool)})")
        return ("A [SING](https://arxiv.org/abs/1810.09785) note synthesizer (Défossez et al., NeurIPS 2018): "
                f"(instrument, pitch, velocity) labels -> {generator} -> a frame decoder (channels {c.channels}, "
                f"{c.kernel_size}-sample Hann^2 frames every {c.stride} samples); "
                f"{c.note_length / c.sample_rate:g} s notes at {c.sample_rate} Hz; label tables: "
                f"{c.num_instruments} instruments, {c.num_pitches} pitches, {c.num_velocities} velocity ids "
                f"({c.velocity_mapping!r} mapping of MIDI velocities).")


class SINGAutoencoder(nn.Module):
    """SING's autoencoder (phase 1): :class:`FrameEncoder` -> :class:`FrameDecoder`.

    ``model(padded_wav)``: (B, padded_length) -> (B, decoder_length) (the padded note less ``strip`` per side).
    """

    def __init__(self, config: SINGConfig | None = None) -> None:
        super().__init__()
        config = SINGConfig() if config is None else config
        if not isinstance(config, SINGConfig):
            raise TypeError(f"config must be a SINGConfig, got {type(config).__name__}")
        self.config = config
        self.encoder = FrameEncoder(config.dimension, config.channels, config.kernel_size, config.stride,
                                    config.rewrite_layers)
        self.decoder = FrameDecoder(config.dimension, config.channels, config.kernel_size, config.stride,
                                    config.context_size, config.rewrite_layers)

    def forward(self, wav: Tensor) -> Tensor:
        """(B, padded_length) -> (B, decoder_length)."""
        return self.decoder(self.encoder(wav))


# ---- training: SING's three phases --------------------------------------------------------------
def _target(batch: dict[str, Tensor], config: SINGConfig) -> Tensor:
    """The padded notes of a batch less ``strip`` per side: (B, decoder_length)."""
    wav = batch["wav"]
    if wav.ndim != 2 or wav.shape[-1] != config.padded_length:
        raise ValueError(f"batch['wav'] must have shape (B, {config.padded_length}) (notes of {config.note_length} "
                         f"samples padded by {config.pad} per side), got {tuple(wav.shape)}")
    return wav[:, config.strip:wav.shape[-1] - config.strip]


def autoencoder_step(model: SINGAutoencoder, batch: dict[str, Tensor], loss_fn: nn.Module) -> dict[str, Tensor]:
    """Phase 1: ``{"loss": loss_fn(decoder(encoder(wav)), wav without strip)}`` (no optimizer step)."""
    target = _target(batch, model.config)
    return {"loss": loss_fn(model(batch["wav"]), target)}


def end2end_step(model: SING, batch: dict[str, Tensor], loss_fn: nn.Module) -> dict[str, Tensor]:
    """Phase 3: ``{"loss": loss_fn(model(labels, crop=False), wav without strip)}`` (no optimizer step)."""
    target = _target(batch, model.config)
    return {"loss": loss_fn(model(batch["instrument"], batch["pitch"], batch["velocity"], crop=False), target)}


def sequence_steps(
    generator: SequenceGenerator, batch: dict[str, Tensor], embeddings: Tensor,
    optimizer: torch.optim.Optimizer | None, truncation: int = 32,
) -> dict[str, Tensor]:
    """Phase 2 on one batch: MSE of the generator's frames to the frozen encoder's ``embeddings`` (B, dim, T).

    The LSTM runs in chunks of ``truncation`` frames with its state detached between chunks and, when an
    optimizer is given, one optimizer step per chunk (SING's truncated backpropagation); the "s4" generator
    (and ``truncation=0``) uses the whole note in one step. Returns ``{"loss": frame-weighted mean MSE}``
    (detached when an optimizer stepped).
    """
    c = generator.config
    if embeddings.shape[1:] != (c.dimension, c.num_frames):
        raise ValueError(f"embeddings must have shape (B, {c.dimension}, {c.num_frames}), "
                         f"got {tuple(embeddings.shape)}")
    labels = (batch["instrument"], batch["pitch"], batch["velocity"])
    chunk = c.num_frames if c.sequence_model == "s4" or truncation <= 0 else truncation
    state: LSTMState | None = None
    total = embeddings.new_zeros(())
    for start in range(0, c.num_frames, chunk):
        length = min(chunk, c.num_frames - start)
        z, state = generator(*labels, start=start, length=length, state=state)  # (B, dim, length)
        loss = F.mse_loss(z, embeddings[..., start:start + length])
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss = loss.detach()
        state = None if state is None else (state[0].detach(), state[1].detach())
        total = total + loss * length
    return {"loss": total / c.num_frames}


def train_phase(
    phase: Literal["autoencoder", "sequence", "end2end"],
    model: SING | SINGAutoencoder,
    batches: Iterable[dict[str, Tensor]],
    *,
    steps: int,
    lr: float = 3e-4,
    encoder: FrameEncoder | None = None,
    loss_fn: nn.Module | None = None,
    truncation: int = 32,
    progress: bool = False,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> list[float]:
    """Run ``steps`` batches of one SING phase with a fresh Adam(lr), cycling over ``batches``.

    Args:
        phase: "autoencoder" (``model`` a :class:`SINGAutoencoder`), "sequence" (``model`` a :class:`SING`, whose
            generator regresses ``encoder``'s embeddings, computed without gradients) or "end2end" (``model`` a
            :class:`SING`, generator and decoder).
        batches: an iterable of batches (dicts with ``wav`` (B, padded_length) and label ids (B,)), re-iterated
            as needed.
        loss_fn: the spectral loss (default ``SpectralLoss()``, SING's L1 of log power spectrograms).
        truncation: truncated-backpropagation chunk of the sequence phase (LSTM only).
        callback: called after every batch with (step, {"loss": value}).

    Returns the loss of every batch.
    """
    if phase not in ("autoencoder", "sequence", "end2end"):
        raise ValueError(f"phase must be 'autoencoder', 'sequence' or 'end2end', got {phase!r}")
    expected = SINGAutoencoder if phase == "autoencoder" else SING
    if not isinstance(model, expected):
        raise TypeError(f"phase {phase!r} trains a {expected.__name__}, got {type(model).__name__}")
    if phase == "sequence" and encoder is None:
        raise ValueError("the sequence phase needs the trained encoder (encoder=...)")
    loss_fn = SpectralLoss() if loss_fn is None else loss_fn
    params = model.generator.parameters() if phase == "sequence" else model.parameters()
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    losses: list[float] = []
    bar = tqdm(total=steps, disable=not progress, desc=f"SING {phase}")
    while len(losses) < steps:
        n_before = len(losses)
        for batch in batches:
            if phase == "sequence":
                with torch.no_grad():
                    embeddings = encoder(batch["wav"])  # (B, dim, num_frames)
                out = sequence_steps(model.generator, batch, embeddings, optimizer, truncation)
            else:
                step = autoencoder_step if phase == "autoencoder" else end2end_step
                out = step(model, batch, loss_fn)
                optimizer.zero_grad(set_to_none=True)
                out["loss"].backward()
                optimizer.step()
            losses.append(out["loss"].item())
            bar.update(1)
            if callback is not None:
                callback(len(losses), {"loss": losses[-1]})
            if len(losses) >= steps:
                break
        if len(losses) == n_before:
            raise ValueError("batches is empty")
    bar.close()
    return losses
