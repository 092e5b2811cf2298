"""Training SaShiMi waveform models in plain PyTorch, on one device or many through ``torchrun``.

``train(TrainConfig(...))`` (CLI: ``sashimi train``) runs:

* data: :class:`~sashimi.data.AudioFolder` splits of a dataset layout (:mod:`sashimi.data.datasets`),
  sharded by a :class:`~torch.utils.data.distributed.DistributedSampler` (one replica when not
  distributed); items are deterministic given the seed, the epoch and the index;
* model: :class:`~sashimi.models.lm.SaShiMiLM` from a preset (:data:`PRESETS`) plus overrides;
* loss: next-sample cross entropy over ``2**bits`` classes, padding targets ignored; reported in bits
  per sample (the paper's NLL);
* optimizer: AdamW with the SSM parameter groups (:func:`sashimi.optim.param_groups`: the SSM
  parameters get ``ssm_lr`` and no weight decay), gradient-norm clipping;
* schedule (:class:`LRSchedule`): 'plateau' (the paper's: the learning rate is multiplied by
  ``plateau_factor`` when the evaluation NLL has not improved for ``plateau_patience`` evaluations),
  'cosine' (to ``min_lr_ratio`` after a linear warmup) or 'constant'; warmup applies to all three;
* precision: bfloat16 autocast on GPUs that support it (the SSM kernels compute in float32 inside
  autocast regardless), float32 elsewhere;
* evaluation every ``eval_every`` steps and at the end: NLL in bits per sample on the validation
  split (on deterministic tiles of the training data when there is none);
* checkpoints every ``checkpoint_every`` steps and at the end: ``RUN/checkpoints/step_XXXXXXXX/``
  holds ``config.json``, ``model.safetensors`` and ``trainer_state.pt`` (optimizer, schedule, step,
  data position; read back with ``torch.load(weights_only=True)``), written to a temporary folder
  and renamed into place; ``RUN/config.json`` + ``RUN/model.safetensors`` always hold the latest
  model, so ``SaShiMiLM.from_pretrained(RUN)`` loads a run folder;
* ``RUN/log.csv`` (one row per ``log_every`` steps and per evaluation), ``RUN/train_config.json``,
  ``RUN/train_summary.json`` (final metrics and, per rank, a SHA-256 of the final weights);
* a tqdm bar with the loss (bits/sample) and the throughput (audio samples per second, all ranks).

Distributed: under ``torchrun --nproc_per_node=K -m sashimi train ...`` the process group is set up
from the environment (NCCL on GPUs, gloo on CPU), the model runs in DistributedDataParallel, each
rank takes ``batch_size`` items per step (effective batch ``K * batch_size``), and only rank 0
writes. Resuming (``resume=True``) restores weights, optimizer, schedule and data position, so a
run stopped after k steps and resumed reaches the parameters of an uninterrupted run (dropout
included: the random state is derived from (seed, rank, step) at every step).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from sashimi.data.audio_folder import IGNORE_INDEX, AudioFolder, pad_collate
from sashimi.data.datasets import DATA_PRESETS, LAYOUTS, DataPreset, split_files
from sashimi.models.lm import SaShiMiLM, SaShiMiLMConfig

__all__ = [
    "PRESETS",
    "SCHEDULES",
    "LRSchedule",
    "TrainConfig",
    "TrainPreset",
    "TrainResult",
    "checkpoint_dirs",
    "evaluate",
    "load_train_config",
    "model_config",
    "resolve_config",
    "train",
]

SCHEDULES = ("plateau", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")
STATE_FORMAT = 1
TRAIN_CONFIG_NAME = "train_config.json"
TRAINER_STATE_NAME = "trainer_state.pt"
LOG_NAME = "log.csv"
SUMMARY_NAME = "train_summary.json"
CHECKPOINTS_DIR = "checkpoints"
LOG_FIELDS = ("step", "epoch", "lr", "train_bits", "grad_norm", "samples_per_s", "eval_bits", "eval_split",
              "elapsed_s")
_MODEL_FILES = ("config.json", "model.safetensors", "README.md")


# ---- presets -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainPreset:
    """A model size plus the data and optimization defaults that go with it.

    Attributes:
        model: :class:`SaShiMiLMConfig` keyword arguments.
        data: item settings and dataset layout.
        batch_size: per-process batch size.
        lr: AdamW learning rate of the non-SSM parameters.
        description: one line.
    """

    model: dict[str, Any]
    data: DataPreset
    batch_size: int
    lr: float
    description: str


def _paper_model(variant: str) -> dict[str, Any]:
    from sashimi.convert.state_spaces import VARIANTS

    return dict(VARIANTS[variant].config)


def _presets() -> dict[str, TrainPreset]:
    out = {
        "tiny": TrainPreset(
            dict(d_model=16, n_layers=2, pool=(4, 4), expand=2, ff=2, d_state=16, bits=8, quantization="mu-law",
                 sample_rate=16000),
            DataPreset("folder", 4096, "crop", minmax=False), 8, 4e-3,
            "a small SaShiMi (about 0.1M parameters) for CPU experiments and demos: 4096-sample crops",
        )
    }
    for name, batch, desc in (
        ("sc09", 16, "the paper's SC09 SaShiMi (8 layers per tier, d_model 64): 1-s clips, 8-bit mu-law"),
        ("beethoven", 8, "the paper's Beethoven SaShiMi: 8-s clips, 8-bit linear"),
        ("youtubemix", 8, "the paper's YouTubeMix SaShiMi: crops of 131072 samples, 8-bit mu-law"),
    ):
        out[name] = TrainPreset(_paper_model(name), DATA_PRESETS[name], batch, 4e-3, desc)
    return out


class _LazyPresets(dict):
    """:data:`PRESETS` is filled on first use (the paper configs live in :mod:`sashimi.convert`)."""

    def _fill(self) -> None:
        if not dict.__len__(self):
            self.update(_presets())

    def __getitem__(self, key: str) -> TrainPreset:
        self._fill()
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        self._fill()
        return dict.__contains__(self, key)

    def __iter__(self) -> Iterator[str]:
        self._fill()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._fill()
        return dict.__len__(self)

    def keys(self):  # type: ignore[override]
        self._fill()
        return dict.keys(self)

    def items(self):  # type: ignore[override]
        self._fill()
        return dict.items(self)


#: name -> :class:`TrainPreset`: 'tiny', 'sc09', 'beethoven', 'youtubemix'.
PRESETS: dict[str, TrainPreset] = _LazyPresets()
PRESET_NAMES = ("tiny", "sc09", "beethoven", "youtubemix")


# ---- configuration ------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Everything a training run needs; ``None`` fields take the preset's value.

    Attributes:
        data: dataset folder.
        out: run folder (created; must be empty unless resuming).
        preset: one of :data:`PRESET_NAMES`.
        model: :class:`SaShiMiLMConfig` field overrides (e.g. ``{"d_model": 32, "n_layers": 4}``).
        layout: dataset layout (:data:`sashimi.data.datasets.LAYOUTS`); default: the preset's.
        seq_len: item length in samples (None: the preset's); 0 = whole clips of any length.
        mode: 'crop' or 'pad' (see :class:`AudioFolder`); default: the preset's.
        minmax: per-item min-max scaling; default: the preset's.
        resample: resample files at other rates (else they are an error).
        short: clips shorter than a crop: 'error', 'pad' or 'skip'.
        skip_bad_files: skip unreadable / empty files with a warning instead of failing.
        val_fraction: plain folders without split subfolders: fraction of files held out.
        steps: total optimizer steps (the cosine schedule's length).
        batch_size: items per step and process.
        lr, ssm_lr, weight_decay, betas: AdamW settings (SSM parameters: ``ssm_lr``, no decay).
        schedule: 'plateau', 'cosine' or 'constant'.
        warmup_steps: linear warmup length.
        min_lr_ratio: cosine floor and plateau floor, as a fraction of the initial rates.
        plateau_factor, plateau_patience: plateau decay factor and patience (in evaluations).
        grad_clip: max gradient norm (0 = no clipping).
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
    schedule: str = "plateau"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    plateau_factor: float = 0.2
    plateau_patience: int = 20
    grad_clip: float = 1.0
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

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["model"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {unknown}")
        d = dict(d)
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        return cls(**d)


#: settings that must match the checkpoint when resuming (the rest may change)
FIXED_ON_RESUME = ("preset", "model", "layout", "seq_len", "mode", "minmax", "resample", "short", "val_fraction",
                   "seed", "schedule", "lr", "ssm_lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio",
                   "plateau_factor", "plateau_patience", "grad_clip", "skip_bad_files")


def _pos_int(v: object, name: str, zero: bool = False) -> int:
    lo = 0 if zero else 1
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return int(v)


def _num(v: object, name: str, lo: float = 0.0, hi: float = math.inf, lo_open: bool = False) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
    if not ok:
        raise ValueError(f"{name} must be a number in {'(' if lo_open else '['}{lo}, {hi}], got {v!r}")
    return float(v)


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """A copy of ``cfg`` with the preset's values filled in and every field validated.

    Raises:
        ValueError: a field out of range, naming it.
    """
    if cfg.preset not in PRESET_NAMES:
        raise ValueError(f"preset must be one of {PRESET_NAMES}, got {cfg.preset!r}")
    p = PRESETS[cfg.preset]
    r = dataclasses.replace(cfg, model=dict(cfg.model), betas=tuple(cfg.betas))
    r.layout = p.data.layout if r.layout is None else r.layout
    r.seq_len = p.data.seq_len if r.seq_len is None else r.seq_len
    r.mode = p.data.mode if r.mode is None else r.mode
    r.minmax = p.data.minmax if r.minmax is None else bool(r.minmax)
    r.batch_size = p.batch_size if r.batch_size is None else r.batch_size
    r.lr = p.lr if r.lr is None else r.lr
    if not isinstance(r.data, (str, os.PathLike)) or not str(r.data):
        raise ValueError(f"data must be a folder path, got {r.data!r}")
    if not isinstance(r.out, (str, os.PathLike)) or not str(r.out):
        raise ValueError(f"out must be a folder path, got {r.out!r}")
    r.data, r.out = str(r.data), str(r.out)
    if r.layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {r.layout!r}")
    _pos_int(r.seq_len, "seq_len", zero=True)
    if r.mode not in ("crop", "pad"):
        raise ValueError(f"mode must be 'crop' or 'pad', got {r.mode!r}")
    if r.short not in ("error", "pad", "skip"):
        raise ValueError(f"short must be 'error', 'pad' or 'skip', got {r.short!r}")
    _num(r.val_fraction, "val_fraction", 0.0, 0.99)
    _pos_int(r.steps, "steps")
    _pos_int(r.batch_size, "batch_size")
    _num(r.lr, "lr", 0.0, lo_open=True)
    _num(r.ssm_lr, "ssm_lr")
    _num(r.weight_decay, "weight_decay")
    if len(r.betas) != 2:
        raise ValueError(f"betas must be two numbers in [0, 1), got {r.betas!r}")
    for b in r.betas:
        _num(b, "betas", 0.0, 0.999999)
    if r.schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {r.schedule!r}")
    _pos_int(r.warmup_steps, "warmup_steps", zero=True)
    _num(r.min_lr_ratio, "min_lr_ratio", 0.0, 1.0)
    _num(r.plateau_factor, "plateau_factor", 0.0, 1.0, lo_open=True)
    _pos_int(r.plateau_patience, "plateau_patience", zero=True)
    _num(r.grad_clip, "grad_clip")
    if r.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {r.precision!r}")
    _pos_int(r.eval_every, "eval_every", zero=True)
    if r.eval_batches is not None:
        _pos_int(r.eval_batches, "eval_batches")
    _pos_int(r.checkpoint_every, "checkpoint_every", zero=True)
    _pos_int(r.keep_checkpoints, "keep_checkpoints")
    _pos_int(r.log_every, "log_every")
    _pos_int(r.num_workers, "num_workers", zero=True)
    _pos_int(r.seed, "seed", zero=True)
    model_config(r)  # validates the model overrides
    return r


def model_config(cfg: TrainConfig) -> SaShiMiLMConfig:
    """The :class:`SaShiMiLMConfig` of a run: the preset's model plus ``cfg.model`` overrides.

    Raises:
        ValueError: an unknown or invalid model field.
    """
    if cfg.preset not in PRESET_NAMES:
        raise ValueError(f"preset must be one of {PRESET_NAMES}, got {cfg.preset!r}")
    kw = dict(PRESETS[cfg.preset].model)
    kw.update(cfg.model)
    if isinstance(kw.get("pool"), list):
        kw["pool"] = tuple(kw["pool"])
    try:
        return SaShiMiLMConfig.from_dict(kw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"invalid model settings for preset {cfg.preset!r}: {err}") from err


def load_train_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The :class:`TrainConfig` saved in a run folder."""
    path = Path(run_dir) / TRAIN_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {TRAIN_CONFIG_NAME}: not a run folder of `sashimi train`")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path} is not a valid training config: {err}") from err


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if d.is_dir() and d.name.startswith("step_")
            and (d / TRAINER_STATE_NAME).is_file() and (d / "model.safetensors").is_file()]
    return sorted(dirs, key=lambda d: d.name)


# ---- learning-rate schedule ---------------------------------------------------------------------------
class LRSchedule:
    """Learning-rate multiplier of every parameter group: warmup x (cosine | plateau | constant).

    Each group's rate is ``group['initial_lr'] * factor(step)``. Warmup: ``(step + 1) / warmup_steps``
    for the first ``warmup_steps`` steps. Cosine: from 1 down to ``min_ratio`` over the steps after the
    warmup. Plateau: :meth:`on_eval` multiplies the scale by ``factor`` when the metric has not improved
    (relative threshold 1e-4) for more than ``patience`` evaluations, never below ``min_ratio``.
    """

    def __init__(self, kind: str, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0,
                 factor: float = 0.2, patience: int = 20, threshold: float = 1e-4) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
        self.kind, self.total, self.warmup = kind, total_steps, warmup_steps
        self.min_ratio, self.factor_, self.patience, self.threshold = min_ratio, factor, patience, threshold
        self.scale, self.best, self.bad = 1.0, math.inf, 0

    def factor(self, step: int) -> float:
        """The multiplier for the update that follows ``step`` completed steps."""
        f = 1.0
        if step < self.warmup:
            f = (step + 1) / self.warmup
        if self.kind == "cosine":
            span = max(1, self.total - self.warmup)
            t = min(1.0, max(0, step - self.warmup) / span)
            f *= self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        elif self.kind == "plateau":
            f *= self.scale
        return f

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        f = self.factor(step)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        return f

    def on_eval(self, metric: float) -> None:
        if self.kind != "plateau" or not math.isfinite(metric):
            return
        if metric < self.best * (1 - self.threshold):
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale = max(self.min_ratio, self.scale * self.factor_)
                self.bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale, self.best, self.bad = float(state["scale"]), float(state["best"]), int(state["bad"])


# ---- distributed helpers ------------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        torch.distributed.all_reduce(t)
        return t.tolist()


def _setup_distributed(device: str | None) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not dist.is_initialized():
        # torch.distributed.nn.functional binds `group.WORLD` as a default argument when first imported, and DDP
        # imports it. Imported after init_process_group, it keeps the group alive past destroy_process_group, to be
        # torn down during interpreter shutdown, where gloo now and then aborts the process (exit code -6 after a
        # finished run). Imported first, it binds None and destroy_process_group really joins the group's threads.
        import torch.distributed.nn.functional

        use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        here = True
    return _Dist(dist.get_rank(), dist.get_world_size(), local, here)


def _pick_device(cfg: TrainConfig, d: _Dist) -> torch.device:
    if cfg.device is None:
        return torch.device(f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{d.local_rank}")
    return dev


class _Sampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (``skip`` items in), for exact resumption."""

    def __init__(self, dataset: AudioFolder, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def _seed_step(seed: int, rank: int, step: int) -> None:
    """Derive the global torch random state (dropout) from (seed, rank, step): resumable without saving it."""
    torch.manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1))


# ---- data -----------------------------------------------------------------------------------------------
def _datasets(cfg: TrainConfig, mcfg: SaShiMiLMConfig, progress: bool) -> tuple[AudioFolder, AudioFolder, str]:
    splits = split_files(cfg.data, cfg.layout, val_fraction=cfg.val_fraction)
    if not splits["train"]:
        raise ValueError(f"{cfg.data} ({cfg.layout} layout) has no training files")
    common = dict(
        sample_rate=mcfg.sample_rate, bits=mcfg.bits, quantization=mcfg.quantization,
        seq_len=cfg.seq_len or None, mode=cfg.mode, minmax=cfg.minmax, resample=cfg.resample,
        short=cfg.short, on_error="warn" if cfg.skip_bad_files else "raise", seed=cfg.seed, progress=progress,
    )
    train_ds = AudioFolder(cfg.data, files=splits["train"], random_crop=True, **common)
    if splits["validation"]:
        eval_ds = AudioFolder(cfg.data, files=splits["validation"], random_crop=False, **common)
        split = "validation"
    else:
        eval_ds = AudioFolder(cfg.data, files=splits["train"], random_crop=False, **common)
        split = "train"
    return train_ds, eval_ds, split


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: AudioFolder,
    batch_size: int,
    device: torch.device | str = "cpu",
    *,
    max_batches: int | None = None,
    amp_dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[float, int]:
    """Summed NLL (nats) and token count of ``model`` on ``dataset`` (this rank's share).

    Rank r takes items ``r, r + world_size, ...`` (the first ``max_batches * batch_size * world_size``
    items when capped); sum the results over ranks and divide to get nats per sample
    (``/ ln 2`` for bits). ``model`` maps ``(B, L)`` input tokens to ``(B, L, C)`` logits and has a
    ``shift_right`` (the unwrapped model's is used). Restores the model's training mode.
    """
    core = model.module if hasattr(model, "module") else model
    device = torch.device(device)
    was_training = model.training
    model.eval()
    n = len(dataset)
    if max_batches is not None:
        n = min(n, max_batches * batch_size * world_size)
    idx = list(range(rank, n, world_size))
    total, count = 0.0, 0
    amp = (torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext())
    for s in range(0, len(idx), batch_size):
        targets = pad_collate([dataset[i] for i in idx[s : s + batch_size]]).to(device)
        inputs = core.shift_right(targets.clamp_min(0))
        with amp:
            logits = core(inputs)
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="sum")
        total += float(nll)
        count += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    return total, count


# ---- checkpoints -----------------------------------------------------------------------------------------
def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _weights_digest(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def _save_checkpoint(run: Path, core: SaShiMiLM, state: dict[str, Any], keep: int) -> Path:
    root = run / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{state['step']:08d}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        core.save_pretrained(tmp)
        torch.save(state, tmp / TRAINER_STATE_NAME)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for name in _MODEL_FILES:  # the run folder itself always loads with from_pretrained
        src = final / name
        if src.is_file():
            dst = run / name
            part = dst.with_name(f".{name}.{uuid.uuid4().hex}.tmp")
            shutil.copyfile(src, part)
            os.replace(part, dst)
    for old in checkpoint_dirs(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _load_trainer_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / TRAINER_STATE_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read the training state {path} (truncated or not written by sashimi train): {err}") from err
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a sashimi training state (format {STATE_FORMAT})")
    return state


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    norm = lambda v: list(v) if isinstance(v, tuple) else v
    return [f"{k}: checkpoint {norm(a.get(k))!r}, requested {norm(b.get(k))!r}" for k in keys
            if norm(a.get(k)) != norm(b.get(k))]


def _check_resume(run: Path, cfg: TrainConfig, mcfg: SaShiMiLMConfig) -> tuple[Path, dict[str, Any]]:
    """Validate a run folder for resuming; returns (latest checkpoint, its trainer state). Writes nothing."""
    if not run.is_dir():
        raise FileNotFoundError(f"--resume: run folder {run} does not exist")
    ckpts = checkpoint_dirs(run)
    if not ckpts:
        raise ValueError(
            f"--resume: {run} has no checkpoint ({CHECKPOINTS_DIR}/step_*/{TRAINER_STATE_NAME}); "
            "it is not a run folder of `sashimi train`, or the run stopped before its first checkpoint"
        )
    ckpt = ckpts[-1]
    try:
        saved_model = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--resume: cannot read {ckpt / 'config.json'}: {err}") from err
    diff = _config_diff(saved_model, mcfg.to_dict())
    if diff:
        raise ValueError(
            f"--resume: {run} holds a checkpoint of a different model ({'; '.join(diff)}). Resume with the run's "
            "own settings (omit --preset and the model options) or train into a new --out folder; nothing was written"
        )
    if (run / TRAIN_CONFIG_NAME).is_file():
        saved = resolve_config(load_train_config(run))
        fixed = [f for f in FIXED_ON_RESUME if f not in ("model", "preset")]
        diff = _config_diff({f: getattr(saved, f) for f in fixed}, {f: getattr(cfg, f) for f in fixed})
        if diff:
            raise ValueError(
                f"--resume: settings differ from the run in {run} ({'; '.join(diff)}); these must stay the same "
                "to continue a run (start a new --out folder to change them); nothing was written"
            )
    state = _load_trainer_state(ckpt)
    return ckpt, state


def _check_new_run(run: Path) -> None:
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out {run} exists and is not a folder")
    if run.is_dir() and any(run.iterdir()):
        hint = " (a previous run: pass --resume to continue it)" if (run / TRAIN_CONFIG_NAME).is_file() else ""
        raise ValueError(f"--out {run} is not empty{hint}; choose a new folder. Nothing was overwritten")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class _CSVLog:
    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows = []
        if resume_step is not None and path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in LOG_FIELDS})
        os.replace(tmp, path)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        step: steps completed.
        train_bits: mean training loss (bits/sample) over the last logging interval.
        eval_bits: the last evaluation NLL (bits/sample), or NaN.
        eval_split: 'validation', or 'train' when the data has no validation split.
        checkpoint: the last checkpoint folder (None when this rank wrote none).
        weights_sha256: SHA-256 of this rank's final weights.
    """

    run_dir: Path
    step: int
    train_bits: float
    eval_bits: float
    eval_split: str
    checkpoint: Path | None
    weights_sha256: str


# ---- the loop ----------------------------------------------------------------------------------------------
def train(config: TrainConfig, *, resume: bool = False, stop_at: int | None = None) -> TrainResult:
    """Train (or continue training) a SaShiMiLM; see the module docstring.

    Args:
        config: the run's settings (``None`` fields take the preset's values).
        resume: continue the run in ``config.out`` from its latest checkpoint. The model and the
            settings in :data:`FIXED_ON_RESUME` must match the run's; ``steps`` may grow.
        stop_at: stop (with a checkpoint) once this many steps are done, before ``config.steps``;
            a later ``resume=True`` continues exactly as if never stopped.

    Returns:
        :class:`TrainResult`.

    Raises:
        ValueError / FileNotFoundError: bad settings, data or run folder; raised before anything is written.
    """
    cfg = resolve_config(config)
    if stop_at is not None:
        _pos_int(stop_at, "stop_at")
    dist = _setup_distributed(cfg.device)
    try:
        return _train(cfg, dist, resume, stop_at)
    finally:
        if dist.initialized_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, dist: _Dist, resume: bool, stop_at: int | None) -> TrainResult:
    device = _pick_device(cfg, dist)
    mcfg = model_config(cfg)
    run = Path(cfg.out)
    show = cfg.progress and dist.main

    # ---- validate everything before writing anything
    ckpt, state = (None, None)
    if resume:
        ckpt, state = _check_resume(run, cfg, mcfg)
    else:
        _check_new_run(run)
    train_ds, eval_ds, eval_split = _datasets(cfg, mcfg, show)
    if state is not None and state["step"] >= cfg.steps:
        raise ValueError(f"--resume: the run in {run} already completed {state['step']} steps; pass a larger --steps")

    amp_dtype = None
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported()):
        amp_dtype = torch.bfloat16

    # ---- model, optimizer, schedule
    torch.manual_seed(cfg.seed)
    if ckpt is not None:
        try:
            core = SaShiMiLM.from_pretrained(str(ckpt))
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"--resume: cannot load the checkpoint in {ckpt}: {err}") from err
        core = core.to(torch.float32)
    else:
        core = SaShiMiLM(mcfg)
    core.to(device).train()
    from sashimi.optim import param_groups

    groups = param_groups(core, lr=cfg.lr, weight_decay=cfg.weight_decay, ssm_lr=cfg.ssm_lr)
    for g in groups:
        g["initial_lr"] = g["lr"]
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **fused)
    schedule = LRSchedule(cfg.schedule, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio, cfg.plateau_factor,
                          cfg.plateau_patience)
    step, epoch, batch_in_epoch, elapsed, best = 0, 0, 0, 0.0, math.inf
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise ValueError(f"--resume: the optimizer state in {ckpt} does not fit this model: {err}") from err
        schedule.load_state_dict(state["schedule"])
        step, epoch, elapsed = int(state["step"]), int(state["epoch"]), float(state["elapsed_s"])
        batch_in_epoch, best = int(state["batch_in_epoch"]), float(state.get("best_eval", math.inf))
        if int(state["batch_size"]) != cfg.batch_size or int(state["world_size"]) != dist.world:
            if dist.main:
                warnings.warn(
                    f"resuming with batch_size={cfg.batch_size} x {dist.world} process(es) instead of "
                    f"{state['batch_size']} x {state['world_size']}: the data order restarts at the next epoch",
                    stacklevel=2,
                )
            epoch, batch_in_epoch = epoch + (batch_in_epoch > 0), 0

    model: nn.Module = core
    if dist.world > 1:
        # the SSM parameters' gradients come out of complex views with other strides than the parameters;
        # DDP copies them into its buckets either way (harmless for these small tensors)
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        model = nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = _Sampler(train_ds, dist.world, dist.rank, cfg.seed)
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        collate_fn=pad_collate, pin_memory=device.type == "cuda", drop_last=False)
    batches_per_epoch = math.ceil(sampler.num_samples / cfg.batch_size)

    # ---- everyone has validated: rank 0 may write now
    dist.barrier()
    log = None
    if dist.main:
        run.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(run / TRAIN_CONFIG_NAME, json.dumps(cfg.to_dict(), indent=2) + "\n")
        log = _CSVLog(run / LOG_NAME, step if resume else None)
    if show:
        from tqdm.auto import tqdm

        n_params = core.num_parameters()
        tqdm.write(
            f"sashimi train: preset {cfg.preset}, {n_params:,} parameters, {len(train_ds.clips)} training clips "
            f"({len(train_ds)} items of {cfg.seq_len or 'whole-clip'} samples), eval on {eval_split} "
            f"({len(eval_ds.clips)} clips), {dist.world} process(es) on {device}, "
            f"{'bf16 autocast' if amp_dtype else 'fp32'}" + (f", resuming at step {step}" if resume else "")
        )
        bar = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", dynamic_ncols=True)
    else:
        bar = None

    def save(step_now: int) -> Path | None:
        out = None
        if dist.main:
            trainer_state = {
                "format": STATE_FORMAT, "step": step_now, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "batch_size": cfg.batch_size, "world_size": dist.world, "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "elapsed_s": elapsed + (time.perf_counter() - t_start),
                "best_eval": best, "train_config": json.dumps(cfg.to_dict()),
            }
            out = _save_checkpoint(run, core, trainer_state, cfg.keep_checkpoints)
        dist.barrier()
        return out

    def run_eval() -> float:
        total, count = evaluate(model, eval_ds, cfg.batch_size, device, max_batches=cfg.eval_batches,
                                amp_dtype=amp_dtype, rank=dist.rank, world_size=dist.world)
        total, count = dist.sum([total, float(count)], device)
        return total / max(count, 1) / math.log(2)

    target = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    t_start = time.perf_counter()
    last_ckpt: Path | None = None
    saved_at = -1
    eval_bits, train_bits = math.nan, math.nan
    acc_loss, acc_tokens, acc_norm, acc_steps, t_log = 0.0, 0, 0.0, 0, time.perf_counter()
    schedule.apply(optimizer, step)
    params = [p for p in core.parameters() if p.requires_grad]
    try:
        while step < target:
            train_ds.set_epoch(epoch)
            sampler.set_epoch(epoch)
            sampler.skip = batch_in_epoch * cfg.batch_size
            for targets in loader:
                _seed_step(cfg.seed, dist.rank, step)
                targets = targets.to(device, non_blocking=True)
                valid = targets != IGNORE_INDEX
                n_valid = int(valid.sum())
                inputs = core.shift_right(targets.clamp_min(0))
                with torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
                    logits = model(inputs)
                loss_sum = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                           reduction="sum")
                loss = loss_sum / max(n_valid, 1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
                else:
                    norm = math.nan
                optimizer.step()
                step += 1
                batch_in_epoch += 1
                if batch_in_epoch >= batches_per_epoch:
                    epoch, batch_in_epoch = epoch + 1, 0
                schedule.apply(optimizer, step)
                acc_loss += float(loss_sum.detach())
                acc_tokens += n_valid
                acc_norm += norm
                acc_steps += 1

                # no extra evaluation at a stop_at step: it would feed the plateau schedule and the
                # resumed run would differ from an uninterrupted one
                is_eval = bool(cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps
                if step % cfg.log_every == 0 or is_eval:
                    loss_t, tok_t = dist.sum([acc_loss, float(acc_tokens)], device)
                    now = time.perf_counter()
                    train_bits = loss_t / max(tok_t, 1) / math.log(2)
                    rate = tok_t / max(now - t_log, 1e-9)
                    row = {"step": step, "epoch": epoch, "lr": f"{optimizer.param_groups[-1]['lr']:.6g}",
                           "train_bits": f"{train_bits:.5f}", "grad_norm": f"{acc_norm / max(acc_steps, 1):.4g}",
                           "samples_per_s": f"{rate:.1f}",
                           "elapsed_s": f"{elapsed + now - t_start:.1f}"}
                    if is_eval:
                        eval_bits = run_eval()
                        best = min(best, eval_bits)
                        schedule.on_eval(eval_bits)
                        schedule.apply(optimizer, step)
                        row.update(eval_bits=f"{eval_bits:.5f}", eval_split=eval_split)
                        if bar is not None:
                            bar.write(f"step {step}: eval NLL {eval_bits:.4f} bits/sample ({eval_split})")
                    if log is not None:
                        log.write(row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{train_bits:.3f} bits", samples_s=f"{rate:,.0f}")
                    acc_loss, acc_tokens, acc_norm, acc_steps, t_log = 0.0, 0, 0.0, 0, time.perf_counter()
                if bar is not None:
                    bar.update(1)
                if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == target:
                    last_ckpt = save(step) or last_ckpt
                    saved_at = step
                if step >= target:
                    break
            else:
                continue
            break
    except KeyboardInterrupt:
        if dist.world == 1 and step > saved_at and step > 0:
            last_ckpt = save(step)
            if bar is not None:
                bar.write(f"interrupted: checkpoint of step {step} saved in {last_ckpt}; continue with --resume")
        raise
    finally:
        if bar is not None:
            bar.close()

    # ---- all ranks must hold the same weights
    digest = _weights_digest(core)
    digests = [digest]
    if dist.world > 1:
        digests = [None] * dist.world
        torch.distributed.all_gather_object(digests, digest)
        if len(set(digests)) != 1:
            raise RuntimeError(f"distributed ranks ended with different weights: {digests}")
    if dist.main:
        summary = {
            "step": step, "steps": cfg.steps, "finished": step >= cfg.steps, "train_bits": _finite(train_bits),
            "eval_bits": _finite(eval_bits), "eval_split": eval_split, "best_eval_bits": _finite(best),
            "world_size": dist.world,
            "rank_weights_sha256": digests, "checkpoint": str(last_ckpt) if last_ckpt else None,
            "elapsed_s": elapsed + time.perf_counter() - t_start,
        }
        _atomic_write_text(run / SUMMARY_NAME, json.dumps(summary, indent=2, default=str) + "\n")
    dist.barrier()
    return TrainResult(run, step, train_bits, eval_bits, eval_split, last_ckpt, digest)


# ---- command line -------------------------------------------------------------------------------------------
#: CLI option -> TrainConfig field (every option defaults to None = "not given")
_CLI_FIELDS = {
    "data": "data", "preset": "preset", "layout": "layout", "seq_len": "seq_len", "mode": "mode",
    "minmax": "minmax", "resample": "resample", "short": "short", "skip_bad_files": "skip_bad_files",
    "val_fraction": "val_fraction", "steps": "steps", "batch_size": "batch_size", "lr": "lr", "ssm_lr": "ssm_lr",
    "weight_decay": "weight_decay", "schedule": "schedule", "warmup_steps": "warmup_steps",
    "min_lr_ratio": "min_lr_ratio", "plateau_factor": "plateau_factor", "plateau_patience": "plateau_patience",
    "grad_clip": "grad_clip", "precision": "precision", "eval_every": "eval_every", "eval_batches": "eval_batches",
    "checkpoint_every": "checkpoint_every", "keep_checkpoints": "keep_checkpoints", "log_every": "log_every",
    "num_workers": "num_workers", "seed": "seed", "device": "device",
}
#: CLI option -> SaShiMiLMConfig field
_CLI_MODEL_FIELDS = ("d_model", "n_layers", "d_state", "pool", "expand", "ff", "dropout", "sample_rate", "bits",
                     "quantization")


def add_train_arguments(parser) -> None:
    """Add the options of ``sashimi train`` to an ``argparse`` parser."""
    import argparse

    g = parser.add_argument_group("run")
    g.add_argument("--data", help="dataset folder (on --resume: default the run's)")
    g.add_argument("--preset", choices=PRESET_NAMES, help="model size with its data and optimizer defaults")
    g.add_argument("--out", required=True, help="run folder: checkpoints, log.csv; loads with from_pretrained")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    g.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop with a checkpoint once STEP steps are done (continue later with --resume)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    d = parser.add_argument_group("data")
    d.add_argument("--layout", choices=LAYOUTS, help="dataset layout and splits (default: the preset's)")
    d.add_argument("--seq-len", type=int, help="item length in samples (0 = whole clips)")
    d.add_argument("--mode", choices=("crop", "pad"), help="fixed-length crops, or whole clips padded to --seq-len")
    d.add_argument("--minmax", action=argparse.BooleanOptionalAction, default=None,
                   help="min-max scale each item before quantizing (the paper's pipeline)")
    d.add_argument("--no-resample", dest="resample", action="store_const", const=False, default=None,
                   help="refuse files at another sample rate instead of resampling them")
    d.add_argument("--short", choices=("error", "pad", "skip"), help="clips shorter than a crop (default: error)")
    d.add_argument("--skip-bad-files", action="store_const", const=True, default=None,
                   help="skip unreadable or empty files with a warning instead of stopping")
    d.add_argument("--val-fraction", type=float, help="plain folders: fraction of files held out for validation")
    m = parser.add_argument_group("model (overrides of the preset)")
    m.add_argument("--d-model", type=int)
    m.add_argument("--n-layers", type=int)
    m.add_argument("--d-state", type=int)
    m.add_argument("--pool", type=int, nargs="*", help="pooling factors, e.g. --pool 4 4")
    m.add_argument("--expand", type=int)
    m.add_argument("--ff", type=int)
    m.add_argument("--dropout", type=float)
    m.add_argument("--sample-rate", type=int, help="the model's audio rate in Hz")
    m.add_argument("--bits", type=int)
    m.add_argument("--quantization", choices=("mu-law", "linear"))
    o = parser.add_argument_group("optimization")
    o.add_argument("--steps", type=int, help="total optimizer steps (default 1000)")
    o.add_argument("--batch-size", type=int, help="items per step and process")
    o.add_argument("--lr", type=float)
    o.add_argument("--ssm-lr", type=float, help="learning rate of the SSM parameters (default 1e-3)")
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule (default plateau)")
    o.add_argument("--warmup-steps", type=int)
    o.add_argument("--min-lr-ratio", type=float)
    o.add_argument("--plateau-factor", type=float)
    o.add_argument("--plateau-patience", type=int, help="evaluations without improvement before a decay")
    o.add_argument("--grad-clip", type=float, help="max gradient norm, 0 = off (default 1.0)")
    o.add_argument("--precision", choices=PRECISIONS, help="auto: bf16 autocast on capable GPUs")
    o.add_argument("--eval-every", type=int)
    o.add_argument("--eval-batches", type=int)
    o.add_argument("--checkpoint-every", type=int)
    o.add_argument("--keep-checkpoints", type=int)
    o.add_argument("--log-every", type=int)
    o.add_argument("--num-workers", type=int)
    o.add_argument("--seed", type=int)
    o.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the local GPU if any)")


def config_from_args(args) -> tuple[TrainConfig, bool]:
    """Build the :class:`TrainConfig` of a ``sashimi train`` command line; returns (config, resume).

    With ``--resume`` the run's saved settings are the base and the options given override them.
    """
    opts = vars(args)
    given = {f: opts[o] for o, f in _CLI_FIELDS.items() if opts.get(o) is not None}
    model = {k: opts[k] for k in _CLI_MODEL_FIELDS if opts.get(k) is not None}
    if "pool" in model:
        model["pool"] = tuple(model["pool"])
    resume = bool(opts.get("resume"))
    if resume:
        base = load_train_config(opts["out"]).to_dict()
        base["model"] = {**base.get("model", {}), **model}
        base.update(given)
        base["out"] = opts["out"]
    else:
        if "data" not in given:
            raise ValueError("--data is required (the folder of audio to train on)")
        if "preset" not in given:
            raise ValueError(f"--preset is required: one of {', '.join(PRESET_NAMES)}")
        base = {**given, "model": model, "out": opts["out"]}
    if opts.get("quiet"):
        base["progress"] = False
    return TrainConfig.from_dict(base), resume


def run_cli(args) -> int:
    """``sashimi train``: parse into a config, train, print where the run is."""
    cfg, resume = config_from_args(args)
    result = train(cfg, resume=resume, stop_at=args.stop_at)
    if int(os.environ.get("RANK", "0")) == 0:
        what = "finished" if result.step >= resolve_config(cfg).steps else "stopped"
        bits = f"{result.eval_bits:.4f}" if math.isfinite(result.eval_bits) else "n/a"
        print(f"{what} at step {result.step}: eval NLL {bits} bits/sample ({result.eval_split}); run folder "
              f"{result.run_dir} (load it with SaShiMiLM.from_pretrained({str(result.run_dir)!r}))")
    return 0
