"""Task ``sing``: SING's three training phases (:class:`~sashimi.models.sing.SING`) on NSynth notes.

Each phase is a run of its own, started from the previous run's folder (``--init-from``), with a fresh optimizer:

1. ``--phase autoencoder``: :class:`~sashimi.models.sing.FrameEncoder` -> the SING decoder under SING's spectral
   loss (L1 of ``log(1 + |STFT|^2)``, :class:`~sashimi.losses.SpectralLoss`) against the padded note less
   ``strip`` samples per side; the sequence generator is frozen (untouched).
2. ``--phase sequence``: the sequence generator regresses the frozen encoder's frame embeddings (MSE); with the
   LSTM generator, truncated backpropagation over :data:`TRUNCATION` frames, one optimizer update per chunk and
   the LSTM state detached between chunks (SING's recipe, through :meth:`SINGTask.train_updates`: a trainer step
   is one batch, ``ceil(num_frames / 32)`` updates); the "s4" generator takes whole notes (one update per batch).
   The encoder and the decoder are frozen.
3. ``--phase end2end``: generator and decoder under the spectral loss; the encoder is dropped.

Items: :class:`~sashimi.data.nsynth.NSynth` notes (``root/examples.json`` + ``root/audio/*.wav``) with SING's
split (:func:`~sashimi.data.nsynth.nsynth_split`: train, and valid for evaluation; the test split is left out).

Model folders: every run folder is a ``sing`` model folder (``sashimi.load_model(RUN)``); the autoencoder and
sequence runs also hold the encoder, ``encoder.safetensors``. Logged metric: ``loss`` (spectral L1 in the
autoencoder and end-to-end phases, embedding MSE in the sequence phase), also the evaluation metric.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn
from torch.utils.data import Dataset

from sashimi.data.datasets import DataPreset
from sashimi.data.nsynth import NSynth
from sashimi.hub.format import atomic_write_bytes, read_weights
from sashimi.losses.spectral import SpectralLoss
from sashimi.models.sing import SING, SING_PRESETS, FrameEncoder, SINGConfig
from sashimi.training.tasks.base import DataSplits, ModelOption, Task, TrainPreset, register_task, unwrap

__all__ = [
    "ENCODER_WEIGHTS",
    "PHASES",
    "SING_PRESET_NAMES",
    "TRUNCATION",
    "SINGTask",
    "SINGTraining",
    "collate_notes",
    "sing_presets",
]

PHASES = ("autoencoder", "sequence", "end2end")
SING_PRESET_NAMES = ("nsynth-sing", "tiny-sing")
#: frames per truncated-backpropagation chunk of the sequence phase (SING's ``--seq-truncated 32``)
TRUNCATION = 32
#: the FrameEncoder's weights in the model folders of the autoencoder and sequence phases
ENCODER_WEIGHTS = "encoder.safetensors"
#: the phase whose run folder each phase starts from (``--init-from``)
_PREVIOUS = {"sequence": "autoencoder", "end2end": "sequence"}
_LABELS = (("instrument", "num_instruments"), ("pitch", "num_pitches"), ("velocity", "num_velocities"))


def sing_presets() -> dict[str, TrainPreset]:
    """The presets of ``--task sing``: 'nsynth-sing' (the paper's model and recipe: Adam 3e-4, batch 256, no
    schedule, no clipping) and 'tiny-sing' (SING's debug sizes, for CPU runs)."""
    data = DataPreset("folder", 0, "crop", minmax=False)  # unused: NSynth has its own layout and split
    recipe = {"lr": 3e-4, "schedule": "constant", "grad_clip": 0.0}
    return {
        "nsynth-sing": TrainPreset(dict(SING_PRESETS["nsynth-sing"]), data, 256, description=(
            "the paper's SING (LSTM 1024 x 3, decoder 4096 channels, SING's velocity ids) on NSynth"), **recipe),
        "tiny-sing": TrainPreset(dict(SING_PRESETS["tiny-sing"]), data, 16, description=(
            "SING's debug sizes (channels 128, dimension 16, LSTM 128 x 1) for CPU runs"), **recipe),
    }


def collate_notes(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """NSynth items -> ``{"wav": (B, padded_length), "instrument", "pitch", "velocity": (B,) int64}``."""
    return {k: torch.stack([item[k] for item in items]) for k in ("wav", "instrument", "pitch", "velocity")}


class _Notes(Dataset):
    """A split of NSynth notes for the trainer (items do not depend on the epoch)."""

    def __init__(self, notes: Dataset) -> None:
        self.notes = notes

    def __len__(self) -> int:
        return len(self.notes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.notes[index]

    def set_epoch(self, epoch: int) -> None:
        """Nothing: the items are whole notes, the same in every epoch."""


class SINGTraining(nn.Module):
    """What a SING run trains: the :class:`SING` model (generator + decoder) and, in the autoencoder and sequence
    phases, the :class:`FrameEncoder`. The parameters the phase does not train are frozen (``requires_grad``
    off, so the optimizer and DDP leave them out).

    Args:
        sing: the model (its config sizes the encoder).
        encoder: the encoder (None in the end-to-end phase).
        phase: one of :data:`PHASES`.
    """

    def __init__(self, sing: SING, encoder: FrameEncoder | None, phase: str) -> None:
        super().__init__()
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if (encoder is None) != (phase == "end2end"):
            raise ValueError(f"phase {phase!r} {'drops' if phase == 'end2end' else 'needs'} the encoder")
        self.sing, self.encoder, self.phase = sing, encoder, phase
        if phase == "autoencoder":
            sing.generator.requires_grad_(False)
        elif phase == "sequence":
            sing.decoder.requires_grad_(False)
            encoder.requires_grad_(False)

    @property
    def config(self) -> SINGConfig:
        return self.sing.config

    def forward(
        self, batch: dict[str, Tensor], *, start: int = 0, length: int | None = None,
        state: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """The phase's prediction for a batch of :func:`collate_notes`, and the LSTM state after it.

        autoencoder: decoder(encoder(wav)) (B, decoder_length); sequence: the generator's frames ``start ..
        start + length`` (B, dimension, length) from ``state``; end2end: SING's uncropped waveform
        (B, decoder_length).
        """
        if self.phase == "autoencoder":
            return self.sing.decoder(self.encoder(batch["wav"])), None  # (B, decoder_length)
        labels = (batch["instrument"], batch["pitch"], batch["velocity"])  # (B,) each
        if self.phase == "sequence":
            return self.sing.generator(*labels, start=start, length=length, state=state)  # (B, dim, length)
        return self.sing(*labels, crop=False), None  # (B, decoder_length)

    @torch.no_grad()
    def embeddings(self, wav: Tensor) -> Tensor:
        """The frozen encoder's frames of padded notes (B, padded_length) -> (B, dimension, num_frames), float32."""
        return self.encoder(wav).float()


def _target(batch: dict[str, Tensor], config: SINGConfig) -> Tensor:
    """The padded notes less ``strip`` per side: (B, decoder_length), float32."""
    wav = batch["wav"]  # (B, padded_length)
    if wav.ndim != 2 or wav.shape[-1] != config.padded_length:
        raise ValueError(f"batch['wav'] must have shape (B, {config.padded_length}), got {tuple(wav.shape)}")
    return wav[:, config.strip:wav.shape[-1] - config.strip].float()


def _encoder(config: SINGConfig) -> FrameEncoder:
    return FrameEncoder(config.dimension, config.channels, config.kernel_size, config.stride, config.rewrite_layers)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


@register_task
class SINGTask(Task):
    """SING's three training phases (``sashimi train --task sing --phase autoencoder|sequence|end2end``)."""

    name: ClassVar[str] = "sing"
    model_type: ClassVar[str] = SINGConfig.model_type
    preset_names: ClassVar[tuple[str, ...]] = SING_PRESET_NAMES
    metric: ClassVar[str] = "loss"
    train_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    eval_metrics: ClassVar[tuple[str, ...]] = ("loss",)
    phases: ClassVar[tuple[str, ...]] = PHASES
    takes_init_from: ClassVar[bool] = True
    model_options: ClassVar[tuple[ModelOption, ...]] = (
        ModelOption("sequence_model", {"choices": ("lstm", "s4"), "help": "SING: the sequence generator"}),
        ModelOption("num_instruments", {"type": int, "help": "SING: instrument table size (1 + the largest id)"}),
        ModelOption("num_pitches", {"type": int}),
        ModelOption("num_velocities", {"type": int}),
        ModelOption("velocity_mapping", {"choices": ("dense", "sing"), "help": "SING: MIDI velocity -> id table"}),
        ModelOption("time_dim", {"type": int, "help": "SING: time embedding size (0: none, SING's ablation)"}),
        ModelOption("dimension", {"type": int, "help": "SING: frame embedding size"}),
        ModelOption("channels", {"type": int, "help": "SING: decoder / encoder width"}),
        ModelOption("rewrite_layers", {"type": int}),
        ModelOption("lstm_hidden", {"type": int}),
        ModelOption("lstm_layers", {"type": int}),
        ModelOption("note_length", {"type": int, "help": "SING: samples per note (NSynth: 64000)"}),
        ModelOption("kernel_size", {"type": int}),
        ModelOption("stride", {"type": int, "help": "SING: frame hop in samples"}),
        ModelOption("s4_d_model", {"type": int}),
        ModelOption("s4_n_layers", {"type": int}),
        ModelOption("s4_d_state", {"type": int}),
        ModelOption("s4_pool", {"type": int, "nargs": "*"}),
        ModelOption("sample_rate", {"type": int, "help": "the model's audio rate in Hz"}),
    )

    def __init__(self) -> None:
        self.phase = PHASES[0]
        self.init_from: Path | None = None
        self.loss_fn = SpectralLoss()  # SING's paper loss: L1 of log(1 + |STFT|^2), n_fft 1024, hop 256

    def configure(self, cfg: Any, model_config: Any) -> None:
        """Take the run's phase and ``init_from`` (required by the sequence and end-to-end phases)."""
        self.phase = cfg.phase or PHASES[0]
        self.init_from = None if cfg.init_from is None else Path(cfg.init_from)
        if self.phase in _PREVIOUS and self.init_from is None:
            raise ValueError(f"--phase {self.phase} starts from the run folder of --phase {_PREVIOUS[self.phase]}: "
                             "pass --init-from RUN")

    def presets(self) -> Mapping[str, TrainPreset]:
        return sing_presets()

    def model_config(self, preset: TrainPreset, overrides: Mapping[str, Any]) -> SINGConfig:
        kw = {**preset.model, **overrides}
        if isinstance(kw.get("s4_pool"), list):
            kw["s4_pool"] = tuple(kw["s4_pool"])
        return SINGConfig.from_dict(kw)

    # ---- models -----------------------------------------------------------------------------------------------
    def _read(self, folder: Path, config: SINGConfig | None) -> SINGTraining:
        """The training module of the current phase from a model folder (its encoder when the phase needs it)."""
        sing = SING.from_pretrained(str(folder))
        if config is not None and sing.config != config:
            a, b = sing.config.to_dict(), config.to_dict()
            diff = "; ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} here" for k in sorted(set(a) | set(b))
                             if a.get(k) != b.get(k))
            raise ValueError(f"--init-from {folder} holds another SING model ({diff}); start from it with the same "
                             "--preset and model options (a run folder passes them on when they are not given)")
        encoder = None
        if self.phase != "end2end":
            path = folder / ENCODER_WEIGHTS
            if not path.is_file():
                raise FileNotFoundError(f"{folder} has no {ENCODER_WEIGHTS}: --phase {self.phase} needs the encoder "
                                        "of a --phase autoencoder run")
            encoder = _encoder(sing.config)
            try:
                encoder.load_state_dict(read_weights(path))
            except RuntimeError as err:
                raise ValueError(f"{path} does not fit the encoder of {folder / 'config.json'}: {err}") from err
        return SINGTraining(sing, encoder, self.phase)

    def build_model(self, model_config: SINGConfig) -> nn.Module:
        """A fresh SING + encoder (autoencoder phase), else the model of ``init_from``."""
        if self.init_from is None:
            return SINGTraining(SING(model_config), _encoder(model_config), self.phase)
        if not (self.init_from / "config.json").is_file():
            raise FileNotFoundError(f"--init-from {self.init_from} is not a model folder (no config.json)")
        return self._read(self.init_from, model_config)

    def save_model(self, model: nn.Module, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        if model.encoder is not None:
            tensors = {k: v.detach().cpu().contiguous() for k, v in model.encoder.state_dict().items()}
            atomic_write_bytes(folder / ENCODER_WEIGHTS, safetensors_bytes(tensors, metadata={"format": "pt"}))
        model.sing.save_pretrained(folder)

    def load_model(self, folder: Path) -> nn.Module:
        return self._read(Path(folder), None)

    # ---- data -------------------------------------------------------------------------------------------------
    def datasets(self, cfg: Any, model_config: SINGConfig, progress: bool) -> DataSplits:
        c = model_config
        notes = NSynth(cfg.data, pad=c.pad, velocity_mapping=c.velocity_mapping, sample_rate=c.sample_rate,
                       num_samples=c.note_length)
        for label, field in _LABELS:
            if notes.cardinalities[label] > getattr(c, field):
                raise ValueError(f"{cfg.data} has {label} ids up to {notes.cardinalities[label] - 1}, but the model's "
                                 f"{field} is {getattr(c, field)}: pass {_flag(field)} {notes.cardinalities[label]}")
        train, valid, _ = notes.split()  # SING's split; the test notes stay out of training
        if len(train) == 0:
            raise ValueError(f"{cfg.data}: SING's split leaves no training notes (all {len(notes)} went to "
                             "valid / test); the data needs more (instrument, pitch) pairs")
        split, evaluation = ("validation", valid) if len(valid) else ("train", train)
        summary = (f"{len(train)} training notes ({len(notes)} in {cfg.data}), eval on {split} ({len(evaluation)} "
                   f"notes), phase {self.phase}")
        return DataSplits(_Notes(train), _Notes(evaluation), split, collate_notes, summary)

    # ---- steps ------------------------------------------------------------------------------------------------
    def _loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """The phase's loss on whole notes (the sequence phase without truncation)."""
        core = unwrap(model)
        if self.phase == "sequence":
            target = core.embeddings(batch["wav"])  # (B, dim, T)
            return F.mse_loss(model(batch)[0].float(), target)
        return self.loss_fn(model(batch)[0].float(), _target(batch, core.config))

    def train_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch: :func:`collate_notes` -> loss over whole notes (spectral, or MSE in the sequence phase), count."""
        return {"loss": self._loss(model, batch), "count": torch.tensor(batch["wav"].shape[0])}

    def train_updates(self, model: nn.Module, batch: dict[str, Tensor]) -> Iterator[dict[str, Tensor]]:
        """The sequence phase with the LSTM: one update per chunk of :data:`TRUNCATION` frames (loss: the chunk's
        MSE, count: its frames x batch), the LSTM state carried over detached; else the one :meth:`train_step`."""
        core = unwrap(model)
        c = core.config
        if self.phase != "sequence" or c.sequence_model != "lstm":
            yield self.train_step(model, batch)
            return
        target = core.embeddings(batch["wav"])  # (B, dim, T)
        state = None
        for start in range(0, c.num_frames, TRUNCATION):
            length = min(TRUNCATION, c.num_frames - start)
            z, state = model(batch, start=start, length=length, state=state)  # (B, dim, length)
            loss = F.mse_loss(z.float(), target[..., start:start + length])
            yield {"loss": loss, "count": torch.tensor(target.shape[0] * length)}
            state = (state[0].detach(), state[1].detach())

    def eval_step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, float]:
        """batch -> the phase's loss over whole notes and the number of notes."""
        return {"loss": float(self._loss(model, batch)), "count": float(batch["wav"].shape[0])}
