"""The generic training loop: any :class:`~sashimi.training.tasks.Task`, one device or many through ``torchrun``.

``train(TrainConfig(...))`` (CLI: ``sashimi train``) runs:

* the task (``config.task``: 'lm', 'wavenet', ...) builds the model from its preset plus overrides, makes
  the datasets, and computes the named losses of a step and the named metrics of an evaluation batch;
* data: the task's datasets, sharded by a :class:`~torch.utils.data.distributed.DistributedSampler` (one
  replica when not distributed); items are deterministic given the seed, the epoch and the index;
* optimizer: AdamW with the SSM parameter groups (:func:`sashimi.optim.param_groups`: the SSM parameters get
  ``ssm_lr`` and no weight decay), gradient-norm clipping; one update per step, or one per update that the
  task's :meth:`~sashimi.training.tasks.Task.train_updates` yields for the step's batch (truncated BPTT);
* schedule (:class:`~sashimi.training.schedule.LRSchedule`): 'plateau' (the paper's: the rate is multiplied
  by ``plateau_factor`` when the task's evaluation metric has not improved for ``plateau_patience``
  evaluations), 'cosine' or 'constant'; warmup applies to all three;
* precision: bfloat16 autocast on GPUs that support it (the SSM kernels compute in float32 inside autocast
  regardless), float32 elsewhere;
* evaluation every ``eval_every`` steps and at the end (on deterministic tiles of the training data when
  there is no validation split);
* checkpoints every ``checkpoint_every`` steps and at the end (:mod:`sashimi.training.checkpoints`): the run
  folder is a model folder, ``trainer_state.pt`` holds optimizer, schedule, step and data position;
* ``RUN/log.csv``, ``RUN/train_config.json`` (the task included), ``RUN/train_summary.json`` (final metrics
  and, per rank, a SHA-256 of the final weights); a tqdm bar with the loss and the throughput.

Safety (see ``docs/guarantees.md``): one writer per run folder (a lock; a second trainer is refused); stale
temporaries of the run are removed on start; a new run that fails before its first checkpoint removes what
it wrote (so the same command can run again); a diverging loss stops the run with the step, loss, learning
rate and last good checkpoint (never a checkpoint of non-finite weights); a failed write (a full disk) is
one error line and leaves no temporary; Ctrl-C and SIGTERM save a checkpoint of the current step.

Distributed: under ``torchrun --nproc_per_node=K -m sashimi train ...`` the process group is set up from the
environment (NCCL on GPUs, gloo on CPU), the model runs in DistributedDataParallel, each rank takes
``batch_size`` items per step, and only rank 0 writes. Resuming restores weights, optimizer, schedule and
data position, so a run stopped after k steps and resumed reaches the parameters of an uninterrupted run
(dropout included: the random state is derived from (seed, rank, step) at every step).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed

# torch.distributed.nn.functional binds `group.WORLD` as a default argument when first imported, and DDP imports
# it. Imported after init_process_group, it keeps the group alive past destroy_process_group, to be torn down
# during interpreter shutdown, where gloo now and then aborts the process (exit code -6 after a finished run).
# Imported first (here, before any group exists), it binds None and destroy_process_group really joins the
# group's threads.
import torch.distributed.nn.functional
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from sashimi.optim import param_groups
from sashimi.training.checkpoints import (
    LOCK_NAME,
    STATE_FORMAT,
    RunBusyError,
    RunLock,
    atomic_write_text,
    checkpoint_dirs,
    clean_stale_temporaries,
    load_trainer_state,
    publish_model_files,
    save_checkpoint,
    weights_digest,
)
from sashimi.training.config import (
    CHANGEABLE_ON_RESUME,
    FIXED_ON_RESUME,
    TRAIN_CONFIG_NAME,
    TrainConfig,
    _pos_int,
    load_train_config,
    model_config,
    preset_of,
    resolve_config,
)
from sashimi.training.schedule import LRSchedule
from sashimi.training.tasks.base import DataSplits, Task

__all__ = [
    "LOG_NAME",
    "SUMMARY_NAME",
    "Interrupted",
    "RunWriteError",
    "TrainResult",
    "TrainingDiverged",
    "TrainingError",
    "log_fields",
    "train",
]

LOG_NAME = "log.csv"
SUMMARY_NAME = "train_summary.json"
#: errors of a model's input checks that mean non-finite values
_NON_FINITE = re.compile(r"\bnan\b|\binf\b|non-finite|not finite|finite values", re.IGNORECASE)
#: config.json keys that describe the file, not the model (ignored when comparing a checkpoint's model)
_FORMAT_KEYS = ("model_type", "config_version")


class TrainingError(RuntimeError):
    """A run stopped by a failure the user must act on (the message says what happened and what is kept)."""


class TrainingDiverged(TrainingError):
    """The loss (or the weights) became non-finite."""


class RunWriteError(TrainingError):
    """Writing the run folder failed (e.g. a full disk); no temporary is left behind."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or another signal) turned into an interrupt: handled like Ctrl-C. ``signum``: the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def log_fields(task: Task) -> tuple[str, ...]:
    """The columns of ``log.csv`` for a task (token tasks: step, epoch, lr, train_bits, grad_norm,
    samples_per_s, eval_bits, eval_split, elapsed_s)."""
    return ("step", "epoch", "lr", *(f"train_{k}" for k in task.train_metrics), "grad_norm", "samples_per_s",
            *(f"eval_{k}" for k in task.eval_metrics), "eval_split", "elapsed_s")


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        step: steps completed.
        train_bits: token tasks: mean training loss (bits/sample) over the last logging interval, else NaN.
        eval_bits: token tasks: the last evaluation NLL (bits/sample), else NaN.
        eval_split: 'validation', or 'train' when the data has no validation split.
        checkpoint: the last checkpoint folder (None when this rank wrote none).
        weights_sha256: SHA-256 of this rank's final weights.
        task: the task's name.
        train_metrics: the task's training metrics over the last logging interval.
        eval_metrics: the last evaluation's metrics (empty when there was none).
    """

    run_dir: Path
    step: int
    train_bits: float
    eval_bits: float
    eval_split: str
    checkpoint: Path | None
    weights_sha256: str
    task: str = "lm"
    train_metrics: dict[str, float] = field(default_factory=dict)
    eval_metrics: dict[str, float] = field(default_factory=dict)


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
    local = int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not torch.distributed.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        if use_cuda:
            torch.cuda.set_device(local)
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
        here = True
    return _Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(), local, here)


def _pick_device(cfg: TrainConfig, d: _Dist) -> torch.device:
    if cfg.device is None:
        return torch.device(f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu")
    dev = torch.device(cfg.device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{d.local_rank}")
    return dev


class _Sampler(DistributedSampler):
    """DistributedSampler that can start an epoch part-way (``skip`` items in), for exact resumption."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


def _seed_step(seed: int, rank: int, step: int) -> None:
    """Derive the global torch random state (dropout) from (seed, rank, step): resumable without saving it."""
    torch.manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1))


def _to_device(batch: Any, device: torch.device) -> Any:
    """A batch (tensor, or tuple / list / dict of them) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


@torch.no_grad()
def _evaluate(task: Task, core: nn.Module, data: DataSplits, batch_size: int, device: torch.device,
              max_batches: int | None, amp_dtype: torch.dtype | None, rank: int, world: int) -> list[float]:
    """This rank's count-weighted sums of the task's eval metrics, then the count (a list for all-reduce)."""
    was_training = core.training
    core.eval()
    n = len(data.eval)
    if max_batches is not None:
        n = min(n, max_batches * batch_size * world)
    idx = list(range(rank, n, world))
    sums = [0.0] * (len(task.eval_metrics) + 1)
    for s in range(0, len(idx), batch_size):
        batch = _to_device(data.collate([data.eval[i] for i in idx[s : s + batch_size]]), device)
        with torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype else nullcontext():
            metrics = task.eval_step(core, batch)
        count = float(metrics.get("count", 1.0))
        for j, k in enumerate(task.eval_metrics):
            sums[j] += float(metrics[k]) * count
        sums[-1] += count
    core.train(was_training)
    return sums


# ---- run folder checks (read only) --------------------------------------------------------------------
@dataclass
class _ResumePoint:
    ckpt: Path
    state: dict[str, Any]
    model: nn.Module
    saved: TrainConfig | None
    listing: list[str]


def _config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b))
    norm = lambda v: list(v) if isinstance(v, tuple) else v
    return [f"{k}: checkpoint {norm(a.get(k))!r}, requested {norm(b.get(k))!r}" for k in keys
            if norm(a.get(k)) != norm(b.get(k))]


def _check_resume(run: Path, cfg: TrainConfig, task: Task, mcfg: Any) -> _ResumePoint:
    """Validate a run folder for resuming: the newest intact checkpoint (a broken newer one is skipped with a
    warning naming it and why), its trainer state and model. Writes nothing."""
    if not run.is_dir():
        raise FileNotFoundError(f"--resume: run folder {run} does not exist")
    saved = load_train_config(run) if (run / TRAIN_CONFIG_NAME).is_file() else None
    if saved is not None and saved.task != cfg.task:
        raise ValueError(f"--resume: {run} is a run of --task {saved.task}, not {cfg.task}; nothing was written")
    ckpts = checkpoint_dirs(run)
    if not ckpts:
        raise ValueError(
            f"--resume: {run} has no checkpoint (checkpoints/step_*/trainer_state.pt); it is not a run folder of "
            "`sashimi train`, or the run stopped before its first checkpoint"
        )
    skipped: list[str] = []
    first_error: Exception | None = None
    point = None
    for ckpt in reversed(ckpts):
        try:
            saved_model = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
            if not isinstance(saved_model, dict):
                raise TypeError(f"{ckpt / 'config.json'} is not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as err:
            first_error = first_error or ValueError(f"--resume: cannot read {ckpt / 'config.json'}: {err}")
            skipped.append(f"{ckpt.name} (cannot read config.json: {err})")
            continue
        saved_model = {k: v for k, v in saved_model.items() if k not in _FORMAT_KEYS}
        wanted = {k: v for k, v in mcfg.to_dict().items() if k not in _FORMAT_KEYS}
        diff = _config_diff(saved_model, wanted)
        if diff:
            raise ValueError(
                f"--resume: {run} holds a checkpoint of a different model ({'; '.join(diff)}). Resume with the "
                "run's own settings (omit --preset and the model options) or train into a new --out folder; "
                "nothing was written"
            )
        try:
            state = load_trainer_state(ckpt)
        except ValueError as err:
            first_error = first_error or err
            skipped.append(f"{ckpt.name} ({err})")
            continue
        try:
            model = task.load_model(ckpt)
        except Exception as err:  # noqa: BLE001 - any failure to read the weights makes the checkpoint unusable
            first_error = first_error or ValueError(f"--resume: cannot load the checkpoint in {ckpt}: {err}")
            skipped.append(f"{ckpt.name} (cannot load its model: {err})")
            continue
        point = _ResumePoint(ckpt, state, model, None, [d.name for d in ckpts])
        break
    if point is None:
        raise first_error  # type: ignore[misc]
    for s in skipped:
        warnings.warn(f"--resume: skipped the damaged checkpoint {s}; resuming from {point.ckpt.name}",
                      stacklevel=3)
    if saved is not None:
        saved = resolve_config(saved)
        fixed = [f for f in FIXED_ON_RESUME if f not in ("model", "preset", "task")]
        diff = _config_diff({f: getattr(saved, f) for f in fixed}, {f: getattr(cfg, f) for f in fixed})
        if diff:
            raise ValueError(
                f"--resume: settings differ from the run in {run} ({'; '.join(diff)}); these must stay the same "
                "to continue a run (start a new --out folder to change them); nothing was written"
            )
        point.saved = saved
    return point


def _check_new_run(run: Path) -> None:
    if run.exists() and not run.is_dir():
        raise ValueError(f"--out {run} exists and is not a folder")
    if run.is_dir() and any(p.name != LOCK_NAME for p in run.iterdir()):
        hint = " (a previous run: pass --resume to continue it)" if (run / TRAIN_CONFIG_NAME).is_file() else ""
        raise ValueError(f"--out {run} is not empty{hint}; choose a new folder. Nothing was overwritten")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class _CSVLog:
    def __init__(self, path: Path, fields: tuple[str, ...], resume_step: int | None) -> None:
        self.path, self.fields = path, fields
        rows = []
        if resume_step is not None and path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with tmp.open("w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                for r in rows:
                    w.writerow({k: r.get(k, "") for k in fields})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow({k: row.get(k, "") for k in self.fields})


def _discard_new_run(run: Path) -> None:
    """Remove everything a new run wrote (the lock file stays until released)."""
    for p in run.iterdir():
        if p.name == LOCK_NAME:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _say(bar: Any, text: str) -> None:
    """A line for the user: through the bar when there is one, else on stderr (also under --quiet)."""
    if bar is not None:
        bar.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr, flush=True)


# ---- the loop ----------------------------------------------------------------------------------------------
def train(config: TrainConfig, *, resume: bool = False, stop_at: int | None = None) -> TrainResult:
    """Train (or continue training) the model of ``config.task``; see the module docstring.

    Args:
        config: the run's settings (``None`` fields take the preset's values).
        resume: continue the run in ``config.out`` from its newest intact checkpoint. The model and the
            settings in :data:`~sashimi.training.config.FIXED_ON_RESUME` must match the run's; ``steps`` may
            grow; ``lr``, ``ssm_lr`` and ``grad_clip`` may change (with a warning: e.g. after divergence).
        stop_at: stop (with a checkpoint) once this many steps are done, before ``config.steps``;
            a later ``resume=True`` continues exactly as if never stopped.

    Returns:
        :class:`TrainResult`.

    Raises:
        ValueError / FileNotFoundError: bad settings, data or run folder; raised before anything is written
            (:class:`~sashimi.training.checkpoints.RunBusyError`: another trainer writes the folder).
        TrainingDiverged: the loss became non-finite; RunWriteError: a write failed (e.g. a full disk).
        KeyboardInterrupt: Ctrl-C, or :class:`Interrupted` for SIGTERM, after saving a checkpoint.
    """
    cfg = resolve_config(config)
    if stop_at is not None:
        _pos_int(stop_at, "stop_at")
    dist = _setup_distributed(cfg.device)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        return _train(cfg, dist, resume, stop_at)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if dist.initialized_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted(signum)


class _HeldInterrupts:
    """Hold Ctrl-C and SIGTERM while a batch updates the weights, the task state and the step counter, and
    raise them once it is done: a checkpoint of step n always holds the state after n whole steps."""

    def __enter__(self) -> "_HeldInterrupts":
        self.signum: int | None = None
        self.saved: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            self.saved = {s: signal.signal(s, self._hold) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: Any) -> bool:
        for s, handler in self.saved.items():
            signal.signal(s, handler)
        if self.signum is not None and exc[0] is None:
            if self.signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise Interrupted(self.signum)
        return False


def _train(cfg: TrainConfig, dist: _Dist, resume: bool, stop_at: int | None) -> TrainResult:
    task, _ = preset_of(cfg)
    device = _pick_device(cfg, dist)
    mcfg = model_config(cfg)
    task.configure(cfg, mcfg)
    run = Path(cfg.out)
    show = cfg.progress and dist.main

    # ---- validate everything before writing anything
    point = _check_resume(run, cfg, task, mcfg) if resume else None
    if not resume:
        _check_new_run(run)
    data = task.datasets(cfg, mcfg, show)
    if point is not None and point.state["step"] >= cfg.steps:
        raise ValueError(f"--resume: the run in {run} already completed {point.state['step']} steps; pass a larger "
                         "--steps")

    amp_dtype = None
    bf16_gpu = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_gpu):
        amp_dtype = torch.bfloat16

    # ---- model, optimizer, schedule
    torch.manual_seed(cfg.seed)
    core = point.model.to(torch.float32) if point is not None else task.build_model(mcfg)
    core.to(device).train()
    groups = param_groups(core, lr=cfg.lr, weight_decay=cfg.weight_decay, ssm_lr=cfg.ssm_lr)
    for g in groups:
        g["initial_lr"] = g["lr"]
    initial_lrs = [g["lr"] for g in groups]
    fused = {"fused": True} if device.type == "cuda" else {}
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **fused)
    schedule = LRSchedule(cfg.schedule, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio, cfg.plateau_factor,
                          cfg.plateau_patience)
    step, epoch, batch_in_epoch, elapsed, best = 0, 0, 0, 0.0, math.inf
    if point is not None:
        state = point.state
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise ValueError(f"--resume: the optimizer state in {point.ckpt} does not fit this model: {err}") from err
        for g, lr0 in zip(optimizer.param_groups, initial_lrs):
            g["initial_lr"] = lr0  # the run's rates (they may differ from the checkpoint's: see CHANGEABLE_ON_RESUME)
        changed = [f"{f} {getattr(point.saved, f)} -> {getattr(cfg, f)}" for f in CHANGEABLE_ON_RESUME
                   if point.saved is not None and getattr(point.saved, f) != getattr(cfg, f)]
        if changed and dist.main:
            warnings.warn(f"resuming with changed settings ({', '.join(changed)}): the run will differ from an "
                          "uninterrupted one", stacklevel=3)
        schedule.load_state_dict(state["schedule"])
        task.load_state_dict(state.get("task_state", {}))
        step, epoch, elapsed = int(state["step"]), int(state["epoch"]), float(state["elapsed_s"])
        batch_in_epoch, best = int(state["batch_in_epoch"]), float(state.get("best_eval", math.inf))
        if int(state["batch_size"]) != cfg.batch_size or int(state["world_size"]) != dist.world:
            if dist.main:
                warnings.warn(
                    f"resuming with batch_size={cfg.batch_size} x {dist.world} process(es) instead of "
                    f"{state['batch_size']} x {state['world_size']}: the data order restarts at the next epoch",
                    stacklevel=3,
                )
            epoch, batch_in_epoch = epoch + (batch_in_epoch > 0), 0

    model: nn.Module = core
    if dist.world > 1:
        # the SSM parameters' gradients come out of complex views with other strides than the parameters;
        # DDP copies them into its buckets either way (harmless for these small tensors)
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        model = nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)

    sampler = _Sampler(data.train, dist.world, dist.rank, cfg.seed)
    loader = DataLoader(data.train, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                        collate_fn=data.collate, pin_memory=device.type == "cuda", drop_last=False)
    batches_per_epoch = math.ceil(sampler.num_samples / cfg.batch_size)

    # ---- everyone has validated: rank 0 takes the run folder and may write now
    dist.barrier()
    lock = RunLock(run)
    created = False
    if dist.main:
        created = not run.exists()
        run.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        try:  # another trainer may have used the folder since the first check
            if point is None:
                _check_new_run(run)
            elif [d.name for d in checkpoint_dirs(run)] != point.listing:
                raise RunBusyError(f"--resume: the checkpoints in {run} changed while this run started (another "
                                   "trainer?); run the command again. Nothing was written")
        except BaseException:
            lock.release()
            raise
        stale = clean_stale_temporaries(run)  # the folder is this run's: what is left of an earlier writer goes
        if stale and show:
            tqdm.write(f"removed {len(stale)} temporary file(s) left by an interrupted run of {run}", file=sys.stderr)

    fields = log_fields(task)
    log = None
    bar = None
    last_ckpt: Path | None = point.ckpt if point is not None else None
    saved_at = step if point is not None else -1
    train_metrics: dict[str, float] = {k: math.nan for k in task.train_metrics}
    eval_metrics: dict[str, float] = {}
    t_start = time.perf_counter()

    def diverged(at_step: int, what: str, from_weights_of: int | None) -> TrainingDiverged:
        """The error for a non-finite value met at step ``at_step``. When the weights after step
        ``from_weights_of`` gave it and that step has a checkpoint, the checkpoint is removed (unless it is the
        only one of a resumed run)."""
        nonlocal last_ckpt
        note = ""
        if dist.main and last_ckpt is not None and last_ckpt.name == f"step_{from_weights_of:08d}":
            others = [d for d in checkpoint_dirs(run) if d.name != last_ckpt.name]
            if others or not resume:
                shutil.rmtree(last_ckpt, ignore_errors=True)
                note = f"removed the checkpoint of step {at_step - 1}, whose weights gave it; "
                last_ckpt = others[-1] if others else None
                if last_ckpt is not None:
                    publish_model_files(run, last_ckpt)
        return TrainingDiverged(_diverged(at_step, what, optimizer, last_ckpt, run, note))

    def save(step_now: int) -> Path | None:
        nonlocal last_ckpt
        out = None
        if dist.main:
            if not _all_finite(core):
                raise diverged(step_now, "the weights after the update are", None)
            trainer_state = {
                "format": STATE_FORMAT, "step": step_now, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "batch_size": cfg.batch_size, "world_size": dist.world, "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "elapsed_s": elapsed + (time.perf_counter() - t_start),
                "best_eval": best, "train_config": json.dumps(cfg.to_dict()), "task": task.name,
                "task_state": task.state_dict(),
            }
            try:
                out = save_checkpoint(run, lambda folder: task.save_model(core, folder), trainer_state,
                                      cfg.keep_checkpoints)
            except OSError as err:
                complete = checkpoint_dirs(run)  # the step folder may be complete when only its copy to RUN failed
                last_ckpt = complete[-1] if complete else None
                keep = (f"the last complete checkpoint is {last_ckpt} (continue from it with --resume)"
                        if last_ckpt else "no checkpoint was written")
                raise RunWriteError(f"cannot write the checkpoint of step {step_now} in {run}: "
                                    f"{err.strerror or err}; {keep}. Nothing partial was left") from err
        dist.barrier()
        return out

    try:
        if dist.main:
            atomic_write_text(run / TRAIN_CONFIG_NAME, json.dumps(cfg.to_dict(), indent=2) + "\n")
            log = _CSVLog(run / LOG_NAME, fields, step if resume else None)
        if show:
            n_params = sum(p.numel() for p in core.parameters())
            tqdm.write(
                f"sashimi train: task {task.name}, preset {cfg.preset}, {n_params:,} parameters, {data.summary}, "
                f"{dist.world} process(es) on {device}, {'bf16 autocast' if amp_dtype else 'fp32'}"
                + (f", resuming at step {step} from {point.ckpt.name}" if point is not None else "")
            )
            bar = tqdm(total=cfg.steps, initial=step, desc="training", unit="step", dynamic_ncols=True)

        def run_eval() -> dict[str, float]:
            sums = _evaluate(task, core, data, cfg.batch_size, device, cfg.eval_batches, amp_dtype, dist.rank,
                             dist.world)
            sums = dist.sum(sums, device)
            return {k: sums[j] / max(sums[-1], 1e-300) for j, k in enumerate(task.eval_metrics)}

        target = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        acc = [0.0] * (len(task.train_metrics) + 1)
        acc_norm, acc_steps, t_log = 0.0, 0, time.perf_counter()
        schedule.apply(optimizer, step)
        params = [p for p in core.parameters() if p.requires_grad]
        amp = (lambda: torch.autocast(device_type=device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
        while step < target:
            data.train.set_epoch(epoch)
            sampler.set_epoch(epoch)
            sampler.skip = batch_in_epoch * cfg.batch_size
            for batch in loader:
                with _HeldInterrupts():  # the update of one step and its counters; an interrupt waits for them
                    _seed_step(cfg.seed, dist.rank, step)
                    batch = _to_device(batch, device)
                    updates = task.train_updates(model, batch)  # one optimizer update per yielded loss
                    # the weights of the last checkpoint gave a non-finite value only at the batch's first update
                    from_ckpt: int | None = step
                    while True:
                        try:
                            with amp():
                                out = next(updates, None)
                        except ValueError as err:
                            # the task's own batches are valid: a non-finite value inside the model is the
                            # weights' doing
                            if not _all_finite(core) or _NON_FINITE.search(str(err)):
                                raise diverged(step + 1, f"a value inside the model ({err}) is", from_ckpt) from err
                            raise
                        if out is None:
                            break
                        loss = out["loss"]
                        loss_value = float(loss.detach())
                        finite = math.isfinite(loss_value)
                        if dist.world > 1:
                            finite = dist.sum([float(not finite)], device)[0] == 0
                        if not finite:
                            what = f"the loss ({loss_value}) is"
                            raise diverged(step + 1, what, from_ckpt)
                        from_ckpt = None
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        if cfg.grad_clip > 0:
                            norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
                        else:
                            norm = math.nan
                        optimizer.step()
                        task.after_step(core)
                        count = float(out.get("count", 1.0))
                        for j, k in enumerate(task.train_metrics):
                            value = out[k].detach() if isinstance(out[k], torch.Tensor) else out[k]
                            acc[j] += float(value) * count
                        acc[-1] += count
                        acc_norm += norm
                        acc_steps += 1
                    step += 1
                    batch_in_epoch += 1
                    if batch_in_epoch >= batches_per_epoch:
                        epoch, batch_in_epoch = epoch + 1, 0
                    schedule.apply(optimizer, step)

                # no extra evaluation at a stop_at step: it would feed the plateau schedule and the
                # resumed run would differ from an uninterrupted one
                is_eval = bool(cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps
                if step % cfg.log_every == 0 or is_eval:
                    totals = dist.sum(acc, device)
                    now = time.perf_counter()
                    train_metrics = {k: totals[j] / max(totals[-1], 1e-300) for j, k in enumerate(task.train_metrics)}
                    rate = totals[-1] / max(now - t_log, 1e-9)
                    row = {"step": step, "epoch": epoch, "lr": f"{optimizer.param_groups[-1]['lr']:.6g}",
                           **{f"train_{k}": f"{v:.5f}" for k, v in train_metrics.items()},
                           "grad_norm": f"{acc_norm / max(acc_steps, 1):.4g}", "samples_per_s": f"{rate:.1f}",
                           "elapsed_s": f"{elapsed + now - t_start:.1f}"}
                    if is_eval:
                        eval_metrics = run_eval()
                        value = eval_metrics[task.metric]
                        best = min(best, value)
                        schedule.on_eval(value)
                        schedule.apply(optimizer, step)
                        row.update({f"eval_{k}": f"{v:.5f}" for k, v in eval_metrics.items()},
                                   eval_split=data.eval_split)
                        if bar is not None:
                            shown = ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items())
                            bar.write(f"step {step}: eval {shown} ({data.eval_split})")
                    if log is not None:
                        log.write(row)
                    if bar is not None:
                        bar.set_postfix(loss=f"{train_metrics[task.train_metrics[0]]:.3f}", per_s=f"{rate:,.0f}")
                    acc = [0.0] * (len(task.train_metrics) + 1)
                    acc_norm, acc_steps, t_log = 0.0, 0, time.perf_counter()
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

        # ---- all ranks must hold the same weights
        digest = weights_digest(core)
        digests = [digest]
        if dist.world > 1:
            digests = [None] * dist.world
            torch.distributed.all_gather_object(digests, digest)
            if len(set(digests)) != 1:
                raise RuntimeError(f"distributed ranks ended with different weights: {digests}")
        if dist.main:
            summary = {
                "task": task.name, "step": step, "steps": cfg.steps, "finished": step >= cfg.steps,
                **{f"train_{k}": _finite(v) for k, v in train_metrics.items()},
                **{f"eval_{k}": _finite(v) for k, v in eval_metrics.items()},
                "eval_split": data.eval_split, f"best_eval_{task.metric}": _finite(best), "world_size": dist.world,
                "rank_weights_sha256": digests, "checkpoint": str(last_ckpt) if last_ckpt else None,
                "elapsed_s": elapsed + time.perf_counter() - t_start,
            }
            atomic_write_text(run / SUMMARY_NAME, json.dumps(summary, indent=2, default=str) + "\n")
        dist.barrier()
        return TrainResult(run, step, train_metrics.get("bits", math.nan), eval_metrics.get("bits", math.nan),
                           data.eval_split, last_ckpt, digest, task.name, train_metrics, eval_metrics)
    except KeyboardInterrupt:
        if dist.world == 1 and step > saved_at and step > 0:
            last_ckpt = save(step)
            saved_at = step
        if dist.main:
            if saved_at == step and last_ckpt is not None:
                _say(bar, f"interrupted: checkpoint of step {step} saved in {last_ckpt}; continue with --resume")
            elif not resume:
                _discard_new_run(run)
                _say(bar, f"interrupted before the first step: {run} was cleared")
        raise
    except BaseException as err:
        if dist.main and not resume and last_ckpt is None:
            _discard_new_run(run)  # nothing to resume: leave a folder that the same command accepts again
        if isinstance(err, (TrainingError, RunBusyError)) or not isinstance(err, (ValueError, OSError)):
            raise
        kept = (f"the run folder is resumable from {last_ckpt} (continue with --resume)" if last_ckpt
                else f"nothing was kept: the same command can run again on {run}")
        if isinstance(err, OSError):
            raise RunWriteError(f"training stopped at step {step}: {err}; {kept}") from err
        raise ValueError(f"training stopped at step {step}: {err}; {kept}") from err
    finally:
        if bar is not None:
            bar.close()
        if dist.main:
            lock.release()
            if created and not resume and last_ckpt is None:
                try:
                    run.rmdir()  # only when emptied above
                except OSError:
                    pass



def _diverged(step: int, what: str, optimizer: torch.optim.Optimizer, last_ckpt: Path | None, run: Path,
              note: str) -> str:
    """The divergence message: step, what is not finite, the learning rate, and what the run folder keeps."""
    lr = optimizer.param_groups[-1]["lr"]
    if last_ckpt is not None:
        keep = (f"the last good checkpoint is {last_ckpt}: continue from it with --resume and a lower --lr "
                "(or --grad-clip 1)")
    else:
        keep = f"no checkpoint was written ({run} was cleared): start again with a lower --lr (or --grad-clip 1)"
    return f"training diverged at step {step}: {what} not finite (learning rate {lr:.4g}); {note}{keep}"
