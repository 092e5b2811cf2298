"""Compatibility module: the trainer moved to :mod:`sashimi.training` (a generic loop plus one task per model
family). The names users and scripts import from here keep working; ``PRESETS`` / ``PRESET_NAMES`` are the
presets of the default task ``lm``."""

from sashimi.training.checkpoints import CHECKPOINTS_DIR, STATE_FORMAT, TRAINER_STATE_NAME, checkpoint_dirs
from sashimi.training.command import add_train_arguments, config_from_args, run_cli
from sashimi.training.config import (
    FIXED_ON_RESUME,
    PRECISIONS,
    SCHEDULES,
    TRAIN_CONFIG_NAME,
    TrainConfig,
    load_train_config,
    model_config,
    resolve_config,
)
from sashimi.training.schedule import LRSchedule
from sashimi.training.tasks.base import TrainPreset
from sashimi.training.tasks.lm import LM_PRESET_NAMES, lm_presets
from sashimi.training.tasks.tokens import evaluate
from sashimi.training.trainer import LOG_NAME, SUMMARY_NAME, TrainResult, train

#: name -> :class:`TrainPreset` of the ``lm`` task: 'tiny', 'sc09', 'beethoven', 'youtubemix'.
PRESETS: dict[str, TrainPreset] = lm_presets()
PRESET_NAMES = LM_PRESET_NAMES

__all__ = [
    "CHECKPOINTS_DIR",
    "FIXED_ON_RESUME",
    "LOG_NAME",
    "PRECISIONS",
    "PRESETS",
    "PRESET_NAMES",
    "SCHEDULES",
    "STATE_FORMAT",
    "SUMMARY_NAME",
    "TRAINER_STATE_NAME",
    "TRAIN_CONFIG_NAME",
    "LRSchedule",
    "TrainConfig",
    "TrainPreset",
    "TrainResult",
    "add_train_arguments",
    "checkpoint_dirs",
    "config_from_args",
    "evaluate",
    "load_train_config",
    "model_config",
    "resolve_config",
    "run_cli",
    "train",
]
