"""The model families and their configs, and :func:`load_model`, which builds the right class from a
saved folder, a Hub repo id or a pretrained name (``config.json`` records the ``model_type``).

Each family registers itself (:func:`sashimi.models.base.register_model`) when its module is imported
here: ``sashimi-lm`` (:class:`SaShiMiLM`), ``wavenet`` (:class:`~sashimi.models.baselines.WaveNet`),
``sc09-classifier`` (:class:`SC09Classifier`), ``masked-sashimi`` (:class:`MaskedSaShiMi`),
``diffwave-sashimi`` (:class:`DiffWaveSaShiMi`),
``diffwave-wavenet`` (:class:`~sashimi.models.baselines.DiffWaveWaveNet`), ``sing`` (:class:`SING`).
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from sashimi.hub.registry import resolve_files
from sashimi.models.base import ModelConfig, PretrainedModel, load_files, model_class, model_types, register_model
from sashimi.models.baselines import DiffWaveWaveNet, DiffWaveWaveNetConfig, WaveNet, WaveNetConfig
from sashimi.models.classifier import SC09Classifier, SC09ClassifierConfig
from sashimi.models.config import SaShiMiConfig, SaShiMiLMConfig
from sashimi.models.diffwave import DiffWaveSaShiMi, DiffWaveSaShiMiConfig
from sashimi.models.lm import GenerationOutput, SaShiMiLM
from sashimi.models.masked import MaskedGenerationOutput, MaskedSaShiMi, MaskedSaShiMiConfig
from sashimi.models.sashimi import BiSaShiMi, SaShiMi, SaShiMiState
from sashimi.models.sing import SING, SINGConfig

__all__ = [
    "BiSaShiMi",
    "GenerationOutput",
    "ModelConfig",
    "PretrainedModel",
    "SaShiMi",
    "SaShiMiConfig",
    "SaShiMiLM",
    "SaShiMiLMConfig",
    "SaShiMiState",
    "WaveNet",
    "WaveNetConfig",
    "SC09Classifier",
    "MaskedSaShiMi",
    "SING",
    "SINGConfig",
    "DiffWaveSaShiMi",
    "DiffWaveSaShiMiConfig",
    "DiffWaveWaveNet",
    "DiffWaveWaveNetConfig",
    "MaskedSaShiMiConfig",
    "MaskedGenerationOutput",
    "SC09ClassifierConfig",
    "load_model",
    "model_class",
    "model_types",
    "register_model",
]


def load_model(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    **kwargs: Any,
) -> nn.Module:
    """The saved model at ``name_or_path``, as an instance of the class its ``config.json`` names.

    Args:
        name_or_path: a local folder (``config.json`` + ``model.safetensors``), the bundled name
            ``"sashimi-default"``, a registered pretrained name (:func:`sashimi.hub.registry.list_pretrained`)
            or a Hub repo id. Folders written before ``config.json`` recorded a ``model_type`` load as
            :class:`SaShiMiLM`.
        revision, cache_dir, force_download, local_files_only, token: as for ``hf_hub_download``.
        **kwargs: ``map_location``, ``dtype``, ``strict``, ``check_finite`` (see
            :meth:`PretrainedModel.from_pretrained`).

    Raises:
        ValueError: an unknown ``model_type`` (the known ones are listed) or an invalid config / weights.
    """
    cfg, weights = resolve_files(
        name_or_path, revision=revision, cache_dir=cache_dir, force_download=force_download,
        local_files_only=local_files_only, token=token,
    )
    return load_files(cfg, weights, **kwargs)
