"""Hugging Face Hub integration, in layers:

* :mod:`sashimi.hub.format`: the saved-model folder (``config.json`` + ``model.safetensors`` + ``README.md``),
  atomic writes, strict reads (no model class);
* :mod:`sashimi.hub.download`: fetching a repo's files;
* :mod:`sashimi.hub.cards`: model cards;
* :mod:`sashimi.hub.registry`: where models come from (the bundled model, the registry of official
  release checkpoints converted on first use and cached, Hub ids, folders);
* :mod:`sashimi.hub.publish`: uploading a saved folder of any family.

Loading a model: :func:`sashimi.load_model` (any family) or ``<Class>.from_pretrained``. See
``docs/pretrained.md``.
"""

from sashimi.hub.format import CARD_NAME, CONFIG_NAME, PICKLE_NAMES, WEIGHTS_NAME
from sashimi.hub.registry import (
    BUNDLED_NAME,
    PRETRAINED,
    PretrainedCheckpoint,
    bundled_model_path,
    converted_cache_root,
    list_pretrained,
    resolve_files,
    resolve_pretrained,
)

__all__ = [
    "BUNDLED_NAME",
    "CARD_NAME",
    "CONFIG_NAME",
    "PICKLE_NAMES",
    "PRETRAINED",
    "WEIGHTS_NAME",
    "PretrainedCheckpoint",
    "bundled_model_path",
    "converted_cache_root",
    "list_pretrained",
    "resolve_files",
    "resolve_pretrained",
]
