"""The task interface of the trainer: what one model family supplies, and the registry of tasks.

A *task* knows its family: it builds the model (and its config) from a run's settings, saves and loads the
model folder, makes the datasets, and computes the named losses of a training step and the named metrics of
an evaluation batch. The generic loop in :mod:`sashimi.training.trainer` does everything else (run folder,
resume, DDP, checkpoints, schedules, clipping, autocast, log). See ``docs/training.md``, "Adding a task".

Frozen parameters (e.g. an encoder trained in an earlier phase): set ``requires_grad = False`` in
:meth:`Task.build_model` and :meth:`Task.load_model`; the optimizer leaves them out. Task state that must
survive a resume (an EMA of the weights, a phase counter): :meth:`Task.state_dict` / :meth:`Task.load_state_dict`,
updated in :meth:`Task.after_step`.

Tasks trained in stages (SING: autoencoder, sequence, end-to-end) list them in :attr:`Task.phases`: each phase
is a run of its own (``--phase``), initialized from an earlier run's model folder (``--init-from``, when
:attr:`Task.takes_init_from`); :meth:`Task.configure` receives the run's settings before any model is built or
loaded. A task whose batch makes several optimizer updates (truncated backpropagation through time) yields them
from :meth:`Task.train_updates`; a trainer step is then the whole batch.

Conventions of :meth:`Task.train_step` and :meth:`Task.eval_step`:

* every value is a mean over what the batch counts (tokens, items, frames ...);
* the entry ``"count"`` (optional, default 1) is that count: the trainer averages a metric over a logging
  interval, over evaluation batches and over DDP ranks weighted by it;
* ``train_step`` returns tensors and its entry ``"loss"`` is what the optimizer minimizes; the entries named
  in :attr:`Task.train_metrics` are logged as ``train_<name>``;
* ``eval_step`` returns floats; the entries named in :attr:`Task.eval_metrics` are logged as ``eval_<name>``,
  and :attr:`Task.metric` (lower is better) drives the plateau schedule and the best-metric record.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from sashimi.data.datasets import DataPreset

__all__ = ["DataSplits", "ModelOption", "Task", "TrainPreset", "get_task", "register_task", "task_names", "unwrap"]


@dataclass(frozen=True)
class TrainPreset:
    """A model size plus the data and optimization defaults that go with it.

    Attributes:
        model: keyword arguments of the task's model config.
        data: item settings and dataset layout.
        batch_size: per-process batch size.
        lr: AdamW learning rate of the non-SSM parameters.
        description: one line.
        schedule: the default learning-rate schedule (``TrainConfig.schedule``).
        grad_clip: the default max gradient norm (``TrainConfig.grad_clip``; 0 = no clipping).
    """

    model: dict[str, Any]
    data: DataPreset
    batch_size: int
    lr: float
    description: str
    schedule: str = "plateau"
    grad_clip: float = 1.0


@dataclass(frozen=True)
class ModelOption:
    """A command-line model option of a task: ``--<flag>`` sets the model config field ``field``.

    Attributes:
        field: the model config field (the flag is ``--`` + the field with ``-`` for ``_``).
        kwargs: ``argparse`` ``add_argument`` keyword arguments (``type``, ``nargs``, ``choices``, ``help``).
    """

    field: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


@dataclass
class DataSplits:
    """The datasets of a run.

    Attributes:
        train: training items (a map-style dataset with ``set_epoch(epoch)``; item i must be a deterministic
            function of (seed, epoch, i) for exact resumption and consistent DDP ranks).
        eval: evaluation items (deterministic).
        eval_split: 'validation', or 'train' when evaluating on tiles of the training data.
        collate: list of items -> batch (tensors, or tuples / dicts of tensors).
        summary: one line for the start-of-run message (clip and item counts).
    """

    train: Dataset
    eval: Dataset
    eval_split: str
    collate: Callable[[list[Any]], Any]
    summary: str = ""


class Task(ABC):
    """One model family's part of training (see the module docstring for the step conventions).

    Class attributes:
        name: the ``--task`` name (the registry key, recorded in ``train_config.json``).
        model_type: the ``model_type`` its model folders record in ``config.json``.
        preset_names: names of :meth:`presets`, the first being the default.
        metric: the evaluation metric that drives the plateau schedule (lower is better).
        train_metrics, eval_metrics: names logged as ``train_<name>`` / ``eval_<name>``.
        model_options: the task's command-line model options.
        phases: the training phases (``--phase``; the first is the default); empty: a single phase.
        takes_init_from: the task can initialize a new run from a model folder (``--init-from``).
    """

    name: ClassVar[str]
    model_type: ClassVar[str]
    preset_names: ClassVar[tuple[str, ...]]
    metric: ClassVar[str]
    train_metrics: ClassVar[tuple[str, ...]]
    eval_metrics: ClassVar[tuple[str, ...]]
    model_options: ClassVar[tuple[ModelOption, ...]] = ()
    phases: ClassVar[tuple[str, ...]] = ()
    takes_init_from: ClassVar[bool] = False

    def configure(self, cfg: Any, model_config: Any) -> None:
        """Take the resolved :class:`~sashimi.training.config.TrainConfig` of a run (its ``phase`` and
        ``init_from``) and its model config; the trainer calls it before any other method that builds, loads or
        steps a model. Default: nothing.

        Raises:
            ValueError: settings the task cannot run with, naming them; before anything is written.
        """

    @abstractmethod
    def presets(self) -> Mapping[str, TrainPreset]:
        """Preset name -> :class:`TrainPreset` (keys: :attr:`preset_names`)."""

    @abstractmethod
    def model_config(self, preset: TrainPreset, overrides: Mapping[str, Any]) -> Any:
        """The model config of a run (an object with ``to_dict()``): the preset's model plus overrides.

        Raises:
            ValueError / TypeError: an unknown or invalid field, naming it.
        """

    @abstractmethod
    def build_model(self, model_config: Any) -> nn.Module:
        """A freshly initialized model (the trainer seeds torch before calling it)."""

    @abstractmethod
    def save_model(self, model: nn.Module, folder: Path) -> None:
        """Write the model folder (``config.json`` with ``model_type``, ``model.safetensors``, maybe ``README.md``)."""

    @abstractmethod
    def load_model(self, folder: Path) -> nn.Module:
        """Read a model folder written by :meth:`save_model` (strict)."""

    @abstractmethod
    def datasets(self, cfg: Any, model_config: Any, progress: bool) -> DataSplits:
        """The datasets of a resolved :class:`~sashimi.training.config.TrainConfig` ``cfg``.

        Raises:
            ValueError / FileNotFoundError: bad data, naming the file; before anything is written.
        """

    @abstractmethod
    def train_step(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Named losses of one batch (on the model's device); ``"loss"`` is minimized. ``model`` may be DDP-wrapped:
        call it for the forward, use :func:`unwrap` for anything else."""

    @abstractmethod
    def eval_step(self, model: nn.Module, batch: Any) -> dict[str, float]:
        """Named metrics of one evaluation batch (the model is in eval mode, gradients off)."""

    def train_updates(self, model: nn.Module, batch: Any) -> Iterator[dict[str, torch.Tensor]]:
        """The optimizer updates of one training batch: each yielded dict (as :meth:`train_step` returns) is one
        update; the trainer back-propagates its ``"loss"``, clips and steps the optimizer (and calls
        :meth:`after_step`) before asking for the next. Default: the single :meth:`train_step`. Override for
        truncated backpropagation through time (one update per chunk, the state detached between chunks)."""
        yield self.train_step(model, batch)

    def after_step(self, model: nn.Module) -> None:
        """Called after every optimizer step with the unwrapped model (e.g. to update an EMA of the weights that
        the task keeps and saves in :meth:`save_model`). Default: nothing."""

    def state_dict(self) -> dict[str, Any]:
        """The task's own training state (tensors, numbers, strings, lists, dicts), saved in every checkpoint
        and given back to :meth:`load_state_dict` on resume, so that resumption stays exact. Default: empty."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` when resuming (called after :meth:`load_model`). Default: nothing."""

    def describe_load(self, folder: str) -> str:
        """How a user loads the model folder ``folder`` (for the end-of-run message)."""
        return f"sashimi.load_model({folder!r})"


#: task name -> Task subclass
_TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make ``cls`` available as ``--task cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task takes a Task subclass, got {cls!r}")
    if cls.name in _TASKS and _TASKS[cls.name] is not cls:
        raise ValueError(f"a task named {cls.name!r} is already registered ({_TASKS[cls.name].__name__})")
    _TASKS[cls.name] = cls
    return cls


def task_names() -> tuple[str, ...]:
    """The registered task names, in registration order."""
    return tuple(_TASKS)


def get_task(name: str) -> Task:
    """A new instance of the task registered as ``name``.

    Raises:
        ValueError: an unknown name, listing the known ones.
    """
    if name not in _TASKS:
        raise ValueError(f"task must be one of {task_names()}, got {name!r}")
    return _TASKS[name]()


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
