"""Task ``diffwave``: the diffusion models (:class:`~sashimi.models.diffwave.DiffWaveSaShiMi` and the
DiffWave-WaveNet baseline :class:`~sashimi.models.baselines.DiffWaveWaveNet`), unconditional or mel vocoder.

A training step is the denoising loss (:func:`~sashimi.losses.denoising.denoising_loss`): ``t`` uniform in
``[0, T)``, Gaussian noise, eps-prediction MSE (the official DiffWave + SaShiMi loss) or L1 (lmnt's; model
option ``loss``). Evaluation is the same loss with ``t`` and the noise drawn from a fixed seed
(:data:`EVAL_SEED`), so it is deterministic. Both are logged as ``eps_loss`` (``train_eps_loss``, ``eval_eps_loss``).

Items are float waveforms ``(L,)`` in [-1, 1]:

* unconditional (SC09 as the paper): whole clips zero-padded or truncated to ``seq_len`` (16000; ``--mode pad``);
* vocoder: random ``seq_len``-sample segments (``--mode crop``; shorter clips zero-padded), and the model's
  log-mel (:func:`~sashimi.audio.features.log_mel_spectrogram`: n_fft 1024, hop = the model's hop, Slaney
  bands up to ``min(8000, sr / 2)``) computed on the fly from each segment in the step, on the model's device.

Presets: ``sc09-diffwave`` (23.5M), ``sc09-diffwave-small`` (7.7M), ``ljspeech-vocoder`` (the released vocoder's
size, 3.2M), ``tiny-diffwave`` and ``tiny-vocoder`` (CPU demos and tests); the DiffWave-WaveNet baseline at the
same sizes and data: ``sc09-diffwave-wavenet`` (24.1M), ``sc09-diffwave-wavenet-small`` (6.8M),
``ljspeech-vocoder-wavenet`` and ``tiny-diffwave-wavenet``.

Optimizer: the paper trains with one Adam at 2e-4, without weight decay, SSM learning-rate group, clipping or
schedule. The trainer's optimizer is AdamW with an SSM group; this task removes the SSM parameters' group hints
(every parameter then gets ``--lr``, 2e-4 in the paper presets) and with the trainer's default
``--weight-decay 0`` AdamW is exactly Adam. ``--schedule constant --grad-clip 0`` gives the rest of the paper's
recipe (the trainer's defaults are a plateau schedule and clipping at 1).

EMA: model option ``ema_decay`` (0 = off, the paper's setting; e.g. 0.999): an exponential moving average of the
weights, updated after every optimizer step. When it is on, every model folder the run writes (the run folder
and its checkpoints) holds the **EMA weights**; the raw weights and the average travel in the checkpoint's task
state, so a resumed run continues exactly.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from sashimi.audio.features import log_mel_spectrogram
from sashimi.data.audio_folder import AudioFolder
from sashimi.data.datasets import DataPreset, split_files
from sashimi.losses.denoising import denoising_loss
from sashimi.models.base import ModelConfig, model_class
from sashimi.models.baselines.diffwave_wavenet import DiffWaveWaveNetConfig
from sashimi.models.diffwave import PRESETS as SASHIMI_PRESETS
from sashimi.models.diffwave import DiffWaveSaShiMiConfig
from sashimi.training.tasks.base import DataSplits, ModelOption, Task, TrainPreset, register_task, unwrap
from sashimi.training.tasks.tokens import NamedItems

__all__ = [
    "DIFFWAVE_PRESET_NAMES",
    "EVAL_SEED",
    "DiffWaveRunConfig",
    "DiffWaveTask",
    "WaveformItems",
    "diffwave_presets",
    "is_vocoder",
    "load_diffusion_model",
    "vocoder_mel",
]

#: the seed of the evaluation steps and noises (the same draws for the same batch in every evaluation)
EVAL_SEED = 4321
DIFFWAVE_PRESET_NAMES = (
    "tiny-diffwave", "tiny-vocoder", "sc09-diffwave", "sc09-diffwave-small", "ljspeech-vocoder",
    "tiny-diffwave-wavenet", "sc09-diffwave-wavenet", "sc09-diffwave-wavenet-small", "ljspeech-vocoder-wavenet",
)
_FAMILIES: dict[str, type[ModelConfig]] = {
    DiffWaveSaShiMiConfig.model_type: DiffWaveSaShiMiConfig,
    DiffWaveWaveNetConfig.model_type: DiffWaveWaveNetConfig,
}
LOSSES = ("mse", "l1")
#: the model options that are training settings of this task, not model config fields
_RUN_FIELDS = ("loss", "ema_decay")


def diffwave_presets() -> dict[str, TrainPreset]:
    """The presets of ``--task diffwave`` (see the module docstring); the paper's use Adam 2e-4."""
    sashimi, wavenet = DiffWaveSaShiMiConfig.model_type, DiffWaveWaveNetConfig.model_type
    sc09 = DataPreset("sc09", 16000, "pad", minmax=False)
    lj = DataPreset("folder", 16000, "crop", minmax=False)
    tiny_data = DataPreset("folder", 4096, "crop", minmax=False)
    tiny_diffusion = {"num_train_steps": 50, "beta_start": 1e-4, "beta_end": 0.05, "sample_rate": 16000,
                      "segment_length": 4096}
    tiny_sashimi = {"model_type": sashimi, "d_model": 16, "n_layers": 2, "pool": (4, 4), "expand": 2, "ff": 2,
                    "d_state": 16, "step_embed_dim_mid": 64, "step_embed_dim_out": 64, "n_mels": 0, **tiny_diffusion}
    wn = {name: {"model_type": wavenet, **DiffWaveWaveNetConfig.preset(name).to_dict()}
          for name in ("sc09", "sc09-small", "ljspeech")}
    return {
        "tiny-diffwave": TrainPreset(
            tiny_sashimi, tiny_data, 8, 2e-3,
            "a small unconditional DiffWaveSaShiMi (d_model 16, T=50) for CPU demos: 4096-sample crops",
        ),
        "tiny-vocoder": TrainPreset(
            {**tiny_sashimi, "n_mels": 80, "mel_upsample": (16, 16)}, tiny_data, 8, 2e-3,
            "a small DiffWaveSaShiMi mel vocoder (d_model 16, 80 bands, hop 256, T=50) for CPU demos",
        ),
        "sc09-diffwave": TrainPreset(
            {"model_type": sashimi, **SASHIMI_PRESETS["sc09"]}, sc09, 4, 2e-4,
            "the paper's unconditional DiffWave + SaShiMi on SC09 (23.5M parameters, T=200; batch 4 per GPU)",
        ),
        "sc09-diffwave-small": TrainPreset(
            {"model_type": sashimi, **SASHIMI_PRESETS["sc09-small"]}, sc09, 4, 2e-4,
            "the paper's small DiffWave + SaShiMi on SC09 (7.7M parameters, T=200)",
        ),
        "ljspeech-vocoder": TrainPreset(
            {"model_type": sashimi, **SASHIMI_PRESETS["vocoder"]}, lj, 4, 2e-4,
            "the released LJSpeech mel vocoder's size (d_model 32, 3.2M parameters, T=50, 22,050 Hz)",
        ),
        "tiny-diffwave-wavenet": TrainPreset(
            {"model_type": wavenet, "residual_channels": 16, "skip_channels": 16, "n_layers": 8,
             "dilation_cycle": 8, "step_embed_dims": (32, 64, 64), **tiny_diffusion}, tiny_data, 8, 2e-3,
            "a small unconditional DiffWave-WaveNet (8 layers x 16 channels, T=50) for CPU demos",
        ),
        "sc09-diffwave-wavenet": TrainPreset(
            wn["sc09"], sc09, 4, 2e-4, "the paper's DiffWave-WaveNet baseline on SC09 (24.1M parameters, T=200)",
        ),
        "sc09-diffwave-wavenet-small": TrainPreset(
            wn["sc09-small"], sc09, 4, 2e-4, "the paper's small DiffWave-WaveNet on SC09 (6.8M parameters, T=200)",
        ),
        "ljspeech-vocoder-wavenet": TrainPreset(
            wn["ljspeech"], lj, 4, 2e-4, "the official README's DiffWave-WaveNet vocoder (36 x 64, 3.1M, T=50)",
        ),
    }


@dataclass(frozen=True)
class DiffWaveRunConfig:
    """The model config of a ``diffwave`` run plus its training settings.

    Attributes:
        model: the model's config (:class:`DiffWaveSaShiMiConfig` or :class:`DiffWaveWaveNetConfig`).
        loss: 'mse' (official) or 'l1' (lmnt).
        ema_decay: decay of the EMA of the weights; 0 = no EMA.
    """

    model: ModelConfig
    loss: str = "mse"
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        d = self.ema_decay
        if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0.0 <= d < 1.0:
            raise ValueError(f"ema_decay must be a number in [0, 1) (0 = no EMA), got {d!r}")

    def to_dict(self) -> dict[str, Any]:
        """The model folder's ``config.json`` fields (what a resumed run's checkpoint must match); the training
        settings are recorded with the run's model options in ``train_config.json``."""
        return self.model.to_dict()

    @property
    def vocoder(self) -> bool:
        """Whether the model is conditioned on a mel spectrogram."""
        return is_vocoder(self.model)


def is_vocoder(config: ModelConfig) -> bool:
    """Whether a DiffWaveSaShiMi / DiffWaveWaveNet config is a mel vocoder."""
    if isinstance(config, DiffWaveWaveNetConfig):
        return not config.unconditional
    return bool(config.conditional)


def vocoder_mel(audio: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """The conditioning log-mel of a vocoder config for audio (B, L) -> (B, n_mels, 1 + L // hop)."""
    sr = config.sample_rate
    return log_mel_spectrogram(audio, sample_rate=sr, hop_length=config.hop_length, n_mels=config.n_mels,
                               fmax=min(8000.0, sr / 2))


def load_diffusion_model(folder: str | Path) -> nn.Module:
    """A DiffWaveSaShiMi or DiffWaveWaveNet from a model folder (strict, safetensors), in eval mode.

    Raises:
        FileNotFoundError: no ``config.json``. ValueError: a folder of another model type, or a bad file.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json")
    try:
        mtype = json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{path} is not a valid JSON config: {err}") from err
    if mtype not in _FAMILIES:
        raise ValueError(f"{path} is not a diffusion model (model_type {mtype!r}, expected one of {tuple(_FAMILIES)})")
    return model_class(mtype).from_pretrained(str(folder))


def _strip_ssm_hints(model: nn.Module) -> nn.Module:
    """Remove the SSM optimizer-group hints, so every parameter takes ``--lr`` (the paper's single Adam)."""
    for p in model.parameters():
        if hasattr(p, "_optim"):
            del p._optim
    return model


class WaveformItems(NamedItems):
    """Float waveform items (L,) from an :class:`AudioFolder`: whole clips zero-padded / truncated to L
    (``mode='pad'``) or L-sample crops, zero-padded when a clip is shorter (``mode='crop'``).

    Args:
        folder: the clips; with ``mode='pad'`` built with ``seq_len=None`` (whole clips).
        length: L.
        mode: 'pad' or 'crop'.
        minmax: min-max scale each item to [-1, 1].
    """

    def __init__(self, folder: AudioFolder, length: int, mode: str, minmax: bool = False) -> None:
        super().__init__(folder)  # set_epoch, clips and len pass through
        self.length, self.mode, self.minmax = length, mode, minmax

    def __getitem__(self, index: int) -> torch.Tensor:
        """(L,) float32 waveform of item ``index``."""
        try:
            x = self.folder.segment(index)[: self.length]  # (<= L,)
        except ValueError as err:
            path = str(self.folder.clips[self.folder.locate(index)[0]].path)
            raise ValueError(f"bad audio in {path} (item {index}): {err}; fix or remove the file") from err
        if not bool(torch.isfinite(x).all()):
            path = self.folder.clips[self.folder.locate(index)[0]].path
            raise ValueError(f"bad audio in {path} (item {index}): NaN or Inf samples; fix or remove the file")
        if self.minmax and x.numel():
            lo, hi = x.min(), x.max()
            x = 2 * (x - lo) / (hi - lo) - 1 if hi > lo else torch.zeros_like(x)
        return torch.nn.functional.pad(x, (0, self.length - x.numel()))  # (L,)


def _collate(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items)  # (B, L)


@register_task
class DiffWaveTask(Task):
    """Denoising-diffusion training of DiffWaveSaShiMi and DiffWave-WaveNet (``sashimi train --task diffwave``)."""

    name: ClassVar[str] = "diffwave"
    model_type: ClassVar[str] = DiffWaveSaShiMiConfig.model_type
    preset_names: ClassVar[tuple[str, ...]] = DIFFWAVE_PRESET_NAMES
    metric: ClassVar[str] = "eps_loss"
    train_metrics: ClassVar[tuple[str, ...]] = ("eps_loss",)
    eval_metrics: ClassVar[tuple[str, ...]] = ("eps_loss",)
    model_options: ClassVar[tuple[ModelOption, ...]] = (
        ModelOption("d_model", {"type": int}),
        ModelOption("n_layers", {"type": int, "help": "layers per tier"}),
        ModelOption("d_state", {"type": int}),
        ModelOption("pool", {"type": int, "nargs": "*", "help": "pooling factors, e.g. --pool 4 4"}),
        ModelOption("expand", {"type": int, "help": "width factor per tier"}),
        ModelOption("ff", {"type": int, "help": "feed-forward expansion"}),
        ModelOption("residual_channels", {"type": int}),
        ModelOption("skip_channels", {"type": int}),
        ModelOption("dilation_cycle", {"type": int}),
        ModelOption("num_train_steps", {"type": int, "help": "diffusion: T, the number of noise levels"}),
        ModelOption("beta_end", {"type": float, "help": "diffusion: the last beta of the linear schedule"}),
        ModelOption("segment_length", {"type": int, "help": "diffusion: the model's training length"}),
        ModelOption("sample_rate", {"type": int, "help": "the model's audio rate in Hz"}),
        ModelOption("loss", {"choices": LOSSES, "help": "diffusion: eps-prediction mse (official) or l1 (lmnt)"}),
        ModelOption("ema_decay", {"type": float, "help": "diffusion: EMA of the weights (0 = off); the saved "
                                  "model folders then hold the EMA weights"}),
    )

    def __init__(self) -> None:
        self.loss = "mse"
        self.ema_decay = 0.0
        self._model: nn.Module | None = None
        self._ema: dict[str, torch.Tensor] | None = None

    def presets(self) -> Mapping[str, TrainPreset]:
        return diffwave_presets()

    def model_config(self, preset: TrainPreset, overrides: Mapping[str, Any]) -> DiffWaveRunConfig:
        kw = {**preset.model, **overrides}
        run = {k: kw.pop(k) for k in _RUN_FIELDS if k in kw}
        for key in ("pool", "mel_upsample", "step_embed_dims"):
            if isinstance(kw.get(key), list):
                kw[key] = tuple(kw[key])
        family = kw.get("model_type")
        if family not in _FAMILIES:
            raise ValueError(f"model_type must be one of {tuple(_FAMILIES)}, got {family!r}")
        return DiffWaveRunConfig(_FAMILIES[family].from_dict(kw), **run)

    def _settle(self, run: DiffWaveRunConfig) -> None:
        self.loss, self.ema_decay = run.loss, float(run.ema_decay)

    def build_model(self, model_config: DiffWaveRunConfig) -> nn.Module:
        self._settle(model_config)
        self._model = _strip_ssm_hints(model_class(model_config.model.model_type)(model_config.model))
        return self._model

    def save_model(self, model: nn.Module, folder: Path) -> None:
        if self._ema is None:
            model.save_pretrained(folder)
            return
        averaged = copy.deepcopy(model)
        averaged.load_state_dict({**averaged.state_dict(), **self._ema})
        averaged.save_pretrained(folder)

    def load_model(self, folder: Path) -> nn.Module:
        self._model = _strip_ssm_hints(load_diffusion_model(folder))
        return self._model

    def datasets(self, cfg: Any, model_config: DiffWaveRunConfig, progress: bool) -> DataSplits:
        self._settle(model_config)
        mcfg = model_config.model
        L = cfg.seq_len
        if not L:
            raise ValueError("task 'diffwave' needs fixed-length items: --seq-len must be > 0")
        pool = math.prod(mcfg.pool) if isinstance(mcfg, DiffWaveSaShiMiConfig) else 1
        if L % pool:
            raise ValueError(f"--seq-len {L} must be divisible by the model's pooling product {pool}")
        if model_config.vocoder and L < mcfg.hop_length:
            raise ValueError(f"--seq-len {L} is shorter than one mel frame (hop {mcfg.hop_length})")
        splits = split_files(cfg.data, cfg.layout, val_fraction=cfg.val_fraction)
        if not splits["train"]:
            raise ValueError(f"{cfg.data} ({cfg.layout} layout) has no training files")
        common = {"sample_rate": mcfg.sample_rate, "resample": cfg.resample, "seed": cfg.seed, "progress": progress,
                  "on_error": "warn" if cfg.skip_bad_files else "raise"}
        if cfg.mode == "pad":
            common |= {"seq_len": None, "mode": "pad"}
        else:
            common |= {"seq_len": L, "mode": "crop", "short": "pad" if cfg.short == "error" else cfg.short}
        train_ds = AudioFolder(cfg.data, files=splits["train"], random_crop=True, **common)
        split = "validation" if splits["validation"] else "train"
        eval_ds = AudioFolder(cfg.data, files=splits[split], random_crop=False, **common)
        kind = "whole clips padded / truncated to" if cfg.mode == "pad" else "crops of"
        mel = f", log-mel ({mcfg.n_mels} bands, hop {mcfg.hop_length}) on the fly" if model_config.vocoder else ""
        summary = (f"{len(train_ds.clips)} training clips ({len(train_ds)} items: {kind} {L} samples{mel}), "
                   f"eval on {split} ({len(eval_ds.clips)} clips), {model_config.loss} loss"
                   + (f", EMA {model_config.ema_decay}" if model_config.ema_decay else ""))
        return DataSplits(WaveformItems(train_ds, L, cfg.mode, cfg.minmax),
                          WaveformItems(eval_ds, L, cfg.mode, cfg.minmax), split, _collate, summary)

    def _loss(self, model: nn.Module, batch: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        core = unwrap(model)
        x0 = batch  # (B, L)
        mel = vocoder_mel(x0, core.config) if is_vocoder(core.config) else None  # (B, n_mels, frames)
        return denoising_loss(model, x0, core.scheduler(), mel, self.loss, generator)

    def train_step(self, model: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """batch: (B, L) clean audio -> the denoising loss (mean over samples; also as ``eps_loss``, logged) and the
        item count."""
        loss = self._loss(model, batch, None)
        return {"loss": loss, "eps_loss": loss.detach(), "count": torch.tensor(batch.shape[0])}

    def eval_step(self, model: nn.Module, batch: torch.Tensor) -> dict[str, float]:
        """batch: (B, L) clean audio -> the denoising loss with steps and noise drawn from :data:`EVAL_SEED`."""
        g = torch.Generator(device=batch.device).manual_seed(EVAL_SEED)
        return {"eps_loss": float(self._loss(model, batch, g)), "count": float(batch.shape[0])}

    # ---- EMA of the weights ------------------------------------------------------------------------
    def after_step(self, model: nn.Module) -> None:
        self._model = model
        if not self.ema_decay:
            return
        with torch.no_grad():
            if self._ema is None:
                self._ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
                return
            for k, v in model.state_dict().items():
                if v.is_floating_point():
                    self._ema[k].lerp_(v, 1.0 - self.ema_decay)
                else:
                    self._ema[k].copy_(v)

    def state_dict(self) -> dict[str, Any]:
        """With an EMA: the average and the raw weights (the model folders hold the average)."""
        if self._ema is None or self._model is None:
            return {}
        raw = {k: v.detach().clone() for k, v in self._model.state_dict().items()}
        return {"ema": {k: v.clone() for k, v in self._ema.items()}, "weights": raw}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        if self._model is None:
            raise RuntimeError("DiffWaveTask.load_state_dict needs the model: call load_model first")
        self._model.load_state_dict(state["weights"])
        self._ema = {k: v.clone() for k, v in state["ema"].items()}

    def describe_load(self, folder: str) -> str:
        return f"sashimi.load_model({folder!r})"
