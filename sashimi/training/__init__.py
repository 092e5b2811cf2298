"""Training for every model family: a generic loop (:mod:`~sashimi.training.trainer`) plus one task per family
(:mod:`~sashimi.training.tasks`: ``lm``, ``wavenet``). See ``docs/training.md``."""

from sashimi.training.checkpoints import RunBusyError, checkpoint_dirs
from sashimi.training.config import (
    FIXED_ON_RESUME,
    PRECISIONS,
    SCHEDULES,
    ConfigError,
    TrainConfig,
    load_train_config,
    model_config,
    resolve_config,
)
from sashimi.training.schedule import LRSchedule
from sashimi.training.tasks import DataSplits, ModelOption, Task, TrainPreset, get_task, register_task, task_names
from sashimi.training.trainer import (
    Interrupted,
    RunWriteError,
    TrainingDiverged,
    TrainingError,
    TrainResult,
    train,
)

__all__ = [
    "FIXED_ON_RESUME",
    "PRECISIONS",
    "SCHEDULES",
    "ConfigError",
    "DataSplits",
    "Interrupted",
    "LRSchedule",
    "ModelOption",
    "RunBusyError",
    "RunWriteError",
    "Task",
    "TrainConfig",
    "TrainPreset",
    "TrainResult",
    "TrainingDiverged",
    "TrainingError",
    "checkpoint_dirs",
    "get_task",
    "load_train_config",
    "model_config",
    "register_task",
    "resolve_config",
    "task_names",
    "train",
]
