"""The settings of a training run (:class:`TrainConfig`), their validation, and the task's presets."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sashimi.data.datasets import LAYOUTS
from sashimi.training.schedule import SCHEDULES
from sashimi.training.tasks.base import Task, TrainPreset, get_task

__all__ = [
    "CHANGEABLE_ON_RESUME",
    "FIXED_ON_RESUME",
    "PRECISIONS",
    "SCHEDULES",
    "TRAIN_CONFIG_NAME",
    "ConfigError",
    "TrainConfig",
    "load_train_config",
    "model_config",
    "preset_of",
    "resolve_config",
]

PRECISIONS = ("auto", "bf16", "fp32")
TRAIN_CONFIG_NAME = "train_config.json"


class ConfigError(ValueError):
    """A bad setting; ``field`` names the :class:`TrainConfig` field (the CLI names the matching flag)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` fields take the preset's value.

    Attributes:
        data: dataset folder.
        out: run folder (created; must be empty unless resuming).
        preset: one of the task's presets (``get_task(task).preset_names``; lm: tiny, sc09, beethoven, youtubemix).
        model: model config field overrides (e.g. ``{"d_model": 32, "n_layers": 4}``).
        layout: dataset layout (:data:`sashimi.data.datasets.LAYOUTS`); default: the preset's.
        seq_len: item length in samples (None: the preset's); 0 = whole clips of any length.
        mode: 'crop' or 'pad' (see :class:`~sashimi.data.AudioFolder`); default: the preset's.
        minmax: per-item min-max scaling; default: the preset's.
        resample: resample files at other rates (else they are an error).
        short: clips shorter than a crop: 'error', 'pad' or 'skip'.
        skip_bad_files: skip unreadable / empty files with a warning instead of failing.
        val_fraction: plain folders without split subfolders: fraction of files held out.
        steps: total training steps, one batch each (the cosine schedule's length); a step is one optimizer
            update, except for tasks that make several per batch (``Task.train_updates``: SING's sequence phase).
        batch_size: items per step and process.
        lr, ssm_lr, weight_decay, betas: AdamW settings (SSM parameters: ``ssm_lr``, no decay).
        schedule: 'plateau', 'cosine' or 'constant'; default: the preset's (most: 'plateau').
        warmup_steps: linear warmup length.
        min_lr_ratio: cosine floor and plateau floor, as a fraction of the initial rates.
        plateau_factor, plateau_patience: plateau decay factor and patience (in evaluations).
        grad_clip: max gradient norm (0 = no clipping); default: the preset's (most: 1.0).
        precision: 'auto' (bf16 autocast on capable GPUs, else float32), 'bf16' or 'fp32'.
        eval_every: evaluate every N steps (0 = only at the end).
        eval_batches: cap on evaluation batches per process (None = the whole split).
        checkpoint_every: checkpoint every N steps (0 = only at the end).
        keep_checkpoints: how many step folders to keep (the newest).
        log_every: CSV / progress-bar interval in steps.
        num_workers: DataLoader workers per process.
        seed: seeds the model init, the data order and crops, and dropout.
        device: e.g. 'cpu', 'cuda' (default: the local GPU if any).
        progress: show a tqdm bar (rank 0).
        task: the model family's task (:func:`~sashimi.training.tasks.task_names`: 'lm', 'wavenet').
        phase: the training phase of a task trained in stages (``Task.phases``, e.g. SING's 'autoencoder',
            'sequence', 'end2end'); default: the task's first; must be None for single-phase tasks.
        init_from: a model folder (an earlier phase's run) that initializes a new run's model (tasks with
            ``Task.takes_init_from``); ignored when resuming (the checkpoint holds the weights).
    """

    data: str
    out: str
    preset: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)
    layout: str | None = None
    seq_len: int | None = None
    mode: str | None = None
    minmax: bool | None = None
    resample: bool = True
    short: str = "error"
    skip_bad_files: bool = False
    val_fraction: float = 0.0
    steps: int = 1000
    batch_size: int | None = None
    lr: float | None = None
    ssm_lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str | None = None
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    plateau_factor: float = 0.2
    plateau_patience: int = 20
    grad_clip: float | None = None
    precision: str = "auto"
    eval_every: int = 500
    eval_batches: int | None = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    num_workers: int = 0
    seed: int = 0
    device: str | None = None
    progress: bool = True
    task: str = "lm"
    phase: str | None = None
    init_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; unknown fields are an error (a missing ``task`` is 'lm': runs
        written before tasks existed)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {unknown}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


#: settings that must match the checkpoint when resuming (the rest may change)
FIXED_ON_RESUME = ("task", "preset", "model", "layout", "seq_len", "mode", "minmax", "resample", "short",
                   "val_fraction", "seed", "schedule", "weight_decay", "betas", "warmup_steps", "min_lr_ratio",
                   "plateau_factor", "plateau_patience", "skip_bad_files", "phase")
#: settings a resumed run may change, with a warning: the way out of a diverged run (the resumed run then
#: differs from an uninterrupted one)
CHANGEABLE_ON_RESUME = ("lr", "ssm_lr", "grad_clip")


def _pos_int(v: object, name: str, zero: bool = False) -> int:
    lo = 0 if zero else 1
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ConfigError(name, f"{name} must be an int >= {lo}, got {v!r}")
    return int(v)


def _num(v: object, name: str, lo: float = 0.0, hi: float = math.inf, lo_open: bool = False) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        raise ConfigError(name, f"{name} must be a number in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")
    return float(v)


def _check_device(device: object) -> None:
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError("device", f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch build has no CUDA support" if torch.version.cuda is None else "no GPU is visible"
            raise ConfigError("device", f"device {device!r}: {why}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError("device", f"device {device!r}: only {torch.cuda.device_count()} GPU(s) visible")


def preset_of(cfg: TrainConfig) -> tuple[Task, TrainPreset]:
    """The task of ``cfg`` and its preset.

    Raises:
        ConfigError: an unknown task or preset.
    """
    try:
        task = get_task(cfg.task)
    except ValueError as err:
        raise ConfigError("task", str(err)) from None
    if cfg.preset not in task.preset_names:
        raise ConfigError("preset", f"preset must be one of {task.preset_names} (task {task.name!r}), "
                          f"got {cfg.preset!r}")
    return task, task.presets()[cfg.preset]


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """A copy of ``cfg`` with the preset's values filled in and every field validated.

    Raises:
        ConfigError (a ValueError): a field out of range, naming it.
    """
    task, p = preset_of(cfg)
    r = dataclasses.replace(cfg, model=dict(cfg.model), betas=tuple(cfg.betas))
    r.layout = p.data.layout if r.layout is None else r.layout
    r.seq_len = p.data.seq_len if r.seq_len is None else r.seq_len
    r.mode = p.data.mode if r.mode is None else r.mode
    r.minmax = p.data.minmax if r.minmax is None else bool(r.minmax)
    r.batch_size = p.batch_size if r.batch_size is None else r.batch_size
    r.lr = p.lr if r.lr is None else r.lr
    r.schedule = p.schedule if r.schedule is None else r.schedule
    r.grad_clip = p.grad_clip if r.grad_clip is None else r.grad_clip
    if task.phases:
        r.phase = task.phases[0] if r.phase is None else r.phase
        if r.phase not in task.phases:
            raise ConfigError("phase", f"phase must be one of {task.phases} (task {task.name!r}), got {r.phase!r}")
    elif r.phase is not None:
        raise ConfigError("phase", f"task {task.name!r} trains in one phase: phase must be None, got {r.phase!r}")
    if r.init_from is not None:
        if not task.takes_init_from:
            raise ConfigError("init_from", f"task {task.name!r} does not take init_from (got {r.init_from!r})")
        if not isinstance(r.init_from, (str, os.PathLike)) or not str(r.init_from):
            raise ConfigError("init_from", f"init_from must be a model folder path, got {r.init_from!r}")
        r.init_from = str(r.init_from)
    if not isinstance(r.data, (str, os.PathLike)) or not str(r.data):
        raise ConfigError("data", f"data must be a folder path, got {r.data!r}")
    if not isinstance(r.out, (str, os.PathLike)) or not str(r.out):
        raise ConfigError("out", f"out must be a folder path, got {r.out!r}")
    r.data, r.out = str(r.data), str(r.out)
    if r.layout not in LAYOUTS:
        raise ConfigError("layout", f"layout must be one of {LAYOUTS}, got {r.layout!r}")
    _pos_int(r.seq_len, "seq_len", zero=True)
    if r.mode not in ("crop", "pad"):
        raise ConfigError("mode", f"mode must be 'crop' or 'pad', got {r.mode!r}")
    if r.short not in ("error", "pad", "skip"):
        raise ConfigError("short", f"short must be 'error', 'pad' or 'skip', got {r.short!r}")
    _num(r.val_fraction, "val_fraction", 0.0, 0.99)
    _pos_int(r.steps, "steps")
    _pos_int(r.batch_size, "batch_size")
    _num(r.lr, "lr", 0.0, lo_open=True)
    _num(r.ssm_lr, "ssm_lr")
    _num(r.weight_decay, "weight_decay")
    if len(r.betas) != 2:
        raise ConfigError("betas", f"betas must be two numbers in [0, 1), got {r.betas!r}")
    for b in r.betas:
        _num(b, "betas", 0.0, 0.999999)
    if r.schedule not in SCHEDULES:
        raise ConfigError("schedule", f"schedule must be one of {SCHEDULES}, got {r.schedule!r}")
    _pos_int(r.warmup_steps, "warmup_steps", zero=True)
    _num(r.min_lr_ratio, "min_lr_ratio", 0.0, 1.0)
    _num(r.plateau_factor, "plateau_factor", 0.0, 1.0, lo_open=True)
    _pos_int(r.plateau_patience, "plateau_patience", zero=True)
    _num(r.grad_clip, "grad_clip")
    if r.precision not in PRECISIONS:
        raise ConfigError("precision", f"precision must be one of {PRECISIONS}, got {r.precision!r}")
    _pos_int(r.eval_every, "eval_every", zero=True)
    if r.eval_batches is not None:
        _pos_int(r.eval_batches, "eval_batches")
    _pos_int(r.checkpoint_every, "checkpoint_every", zero=True)
    _pos_int(r.keep_checkpoints, "keep_checkpoints")
    _pos_int(r.log_every, "log_every")
    _pos_int(r.num_workers, "num_workers", zero=True)
    _pos_int(r.seed, "seed", zero=True)
    _check_device(r.device)
    model_config(r)  # validates the model overrides
    return r


def model_config(cfg: TrainConfig) -> Any:
    """The model config of a run (e.g. a ``SaShiMiLMConfig``): the preset's model plus ``cfg.model`` overrides.

    Raises:
        ValueError: an unknown or invalid model field.
    """
    task, preset = preset_of(cfg)
    try:
        return task.model_config(preset, cfg.model)
    except (TypeError, ValueError) as err:
        raise ConfigError("model", f"invalid model settings for preset {cfg.preset!r}: {err}") from err


def load_train_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run folder."""
    path = Path(run_dir) / TRAIN_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {TRAIN_CONFIG_NAME}: not a run folder of `sashimi train`")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
        raise ValueError(f"{path} is not a valid training config: {err}") from err
