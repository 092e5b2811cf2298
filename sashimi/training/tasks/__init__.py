"""Training tasks: one per model family (``lm``, ``wavenet``, ``masked``, ``sing``, ``diffwave``,
``classifier``), registered by name for ``sashimi train --task``."""

from sashimi.training.tasks.base import (
    DataSplits,
    ModelOption,
    Task,
    TrainPreset,
    get_task,
    register_task,
    task_names,
    unwrap,
)
from sashimi.training.tasks.diffwave import DiffWaveTask
from sashimi.training.tasks.lm import LMTask
from sashimi.training.tasks.masked import MaskedTask
from sashimi.training.tasks.sing import SINGTask
from sashimi.training.tasks.tokens import TokenTask
from sashimi.training.tasks.wavenet import WaveNetTask
from sashimi.training.tasks.classifier import ClassifierTask  # registered after lm and wavenet: --task order

__all__ = [
    "ClassifierTask",
    "DataSplits",
    "DiffWaveTask",
    "LMTask",
    "MaskedTask",
    "ModelOption",
    "SINGTask",
    "Task",
    "TokenTask",
    "TrainPreset",
    "WaveNetTask",
    "get_task",
    "register_task",
    "task_names",
    "unwrap",
]
