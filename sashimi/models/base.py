"""What every model family shares: the registry of model types and the saved-model mixin.

A family is a config dataclass (a :class:`ModelConfig` with a ``model_type``) and an ``nn.Module`` that
mixes in :class:`PretrainedModel` and is registered with :func:`register_model`::

    @register_model
    class MyModel(PretrainedModel, nn.Module):
        config_class = MyConfig          # MyConfig.model_type == "my-model"

``save_pretrained`` writes ``config.json`` (with ``model_type``) and ``model.safetensors`` atomically, with
a model card whose text comes from :meth:`PretrainedModel.card_description`; ``from_pretrained`` and
:func:`sashimi.load_model` read them back strictly (see :mod:`sashimi.hub.format`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from sashimi.hub.cards import render_card
from sashimi.hub.format import GENERATION_NAME, read_config, read_generation_defaults, read_weights, write_model_folder
from sashimi.hub.registry import resolve_files
from sashimi.models.config import ModelConfig

__all__ = ["LEGACY_MODEL_TYPE", "ModelConfig", "PretrainedModel", "model_class", "model_types", "register_model"]

#: the model type of folders written before ``config.json`` recorded one (all were SaShiMiLM)
LEGACY_MODEL_TYPE = "sashimi-lm"

_REGISTRY: dict[str, type] = {}


def register_model(cls: type) -> type:
    """Class decorator: register a :class:`PretrainedModel` under its ``config_class.model_type``."""
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and issubclass(config_class, ModelConfig) and config_class.model_type):
        raise TypeError(f"{cls.__name__}.config_class must be a ModelConfig subclass with a model_type")
    name = config_class.model_type
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"model type {name!r} is already registered to {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def model_types() -> list[str]:
    """The registered model types."""
    return sorted(_REGISTRY)


def model_class(model_type: str) -> type:
    """The class registered for ``model_type``.

    Raises:
        ValueError: an unknown model type (the message lists the known ones).
    """
    if model_type not in _REGISTRY:
        raise ValueError(f"unknown model_type {model_type!r}; this version of sashimi-audio knows {model_types()}")
    return _REGISTRY[model_type]


def _check_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")
    return dtype


def _problems(own: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> tuple[list[str], bool]:
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(tensors)
        if tuple(tensors[k].shape) != tuple(own[k].shape)
    )
    out = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" (and {len(items) - 10} more)" if len(items) > 10 else ""
            out.append(f"{len(items)} {label}: {items[:10]}{more}")
    return out, bool(shapes)


def saved_model_type(raw: dict[str, Any]) -> str:
    """The model type a ``config.json`` records (:data:`LEGACY_MODEL_TYPE` when it has none)."""
    mtype = raw.get("model_type", LEGACY_MODEL_TYPE)
    if not isinstance(mtype, str):
        raise ValueError(f"model_type must be a string, got {mtype!r}")
    return mtype


class PretrainedModel:
    """Mixin for the ``nn.Module`` of a model family: saving, strict loading, model cards.

    Class attributes: ``config_class`` (the family's :class:`ModelConfig`), ``card_tags``.
    The module keeps its config as ``self.config``.
    """

    config_class: ClassVar[type[ModelConfig]]
    card_tags: ClassVar[tuple[str, ...]] = ("audio", "sashimi-audio")
    config: ModelConfig
    #: default generation settings stored with the model (``generation.json``: e.g. a temperature the
    #: command line uses when none is given); replace the dict, do not mutate the class default
    generation_defaults: dict[str, Any] = {}

    @classmethod
    def _coerce_config(cls, config: ModelConfig | dict | None) -> ModelConfig:
        """``config`` as ``config_class`` (None: the defaults; a dict: :meth:`ModelConfig.from_dict`)."""
        if config is None:
            return cls.config_class()
        if isinstance(config, dict):
            return cls.config_class.from_dict(config)
        if not isinstance(config, cls.config_class):
            raise TypeError(f"config must be a {cls.config_class.__name__}, got {type(config).__name__}")
        return config

    # ---- description (model cards) --------------------------------------------------------------
    def card_description(self) -> str:
        """A paragraph of markdown describing the model for its card (families override it)."""
        return f"A `{self.config.model_type}` model of the sashimi-audio library."

    def card_sections(self) -> str:
        """Extra markdown sections of the card (e.g. where converted weights came from)."""
        return ""

    def card_usage(self, model_id: str) -> str:
        """The card's usage section."""
        return (
            f"```python\nimport sashimi\n\nmodel = sashimi.load_model({model_id!r})\n```\n\n"
            f"or `sashimi info {model_id}` from the command line."
        )

    def model_card(self, repo_id: str | None = None) -> str:
        """The markdown of this model's card (``README.md``)."""
        model_id = repo_id or "<this-folder-or-repo>"
        return render_card(
            title=f"{type(self).__name__} ({self.config.model_type})", description=self.card_description(),
            usage=self.card_usage(model_id), config=self.config.to_dict(), n_params=self.num_parameters(),
            tags=self.card_tags, sections=self.card_sections(),
        )

    def generate_model_card(self, repo_id: str | None = None):
        """:meth:`model_card` as a :class:`huggingface_hub.ModelCard` (the name ``huggingface_hub``'s mixins use)."""
        from huggingface_hub import ModelCard

        return ModelCard(self.model_card(repo_id))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # type: ignore[attr-defined]

    # ---- saving ------------------------------------------------------------------------------------
    def save_pretrained(
        self, save_directory: str | os.PathLike, *, model_card_kwargs: dict[str, Any] | None = None,
        repo_id: str | None = None,
    ) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory``
        atomically (the old files survive any failure; see :func:`sashimi.hub.format.write_model_folder`).

        Args:
            model_card_kwargs: ``{"repo_id": ...}`` names the repo in the card's usage section.
        """
        repo_id = repo_id or (model_card_kwargs or {}).get("repo_id")
        state = self.state_dict()  # type: ignore[attr-defined]
        write_model_folder(save_directory, self.config.to_dict(), dict(state), self.model_card(repo_id),
                           generation=dict(self.generation_defaults))

    def push_to_hub(self, repo_id: str, *, token: str | None = None, private: bool | None = None,
                    commit_message: str | None = None) -> str:
        """Save the model into a temporary folder and upload it to a Hub model repo; returns the commit URL."""
        import tempfile

        from huggingface_hub import HfApi

        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, repo_id=repo_id)
            api = HfApi(token=token)
            repo_id = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True).repo_id
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="model",
                                     commit_message=commit_message or f"Upload {type(self).__name__} (sashimi-audio)")
        return str(getattr(info, "commit_url", info))

    # ---- loading ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        map_location: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        strict: bool = True,
        check_finite: bool = True,
    ):
        """Load a model of this class from a local folder, a Hub repo id, or a known pretrained name.

        Args:
            pretrained_model_name_or_path: a folder with ``config.json`` + ``model.safetensors``; a
                registry name (:func:`sashimi.hub.registry.list_pretrained`); or a Hub repo id.
            revision, cache_dir, force_download, local_files_only, token: as for ``hf_hub_download``.
            map_location: device of the returned model.
            dtype: cast the model to this floating dtype (default: the dtype stored in the file).
            strict: missing or unexpected tensors are an error (default); wrong shapes always are.
            check_finite: refuse weights with NaN or infinite values (naming the tensors).

        Only safetensors weights are read (never a pickle). Returns the model in eval mode.

        Raises:
            ValueError: the folder holds another model family (use :func:`sashimi.load_model`), or its
                config / weights are invalid.
        """
        cfg, weights = resolve_files(
            pretrained_model_name_or_path, revision=revision, cache_dir=cache_dir, force_download=force_download,
            local_files_only=local_files_only, token=token,
        )
        return cls._from_files(cfg, weights, map_location=map_location, dtype=dtype, strict=strict,
                               check_finite=check_finite)

    @classmethod
    def _from_files(
        cls, config_file: str | os.PathLike, weights_file: str | os.PathLike, *,
        map_location: str | torch.device = "cpu", dtype: torch.dtype | str | None = None, strict: bool = True,
        check_finite: bool = True,
    ):
        """Build the model from a ``config.json`` and a ``model.safetensors`` (see :meth:`from_pretrained`)."""
        dtype = _check_dtype(dtype)
        config_file, weights_file = Path(config_file), Path(weights_file)
        raw = read_config(config_file)
        mtype = saved_model_type(raw)
        mine = cls.config_class.model_type
        if mtype != mine:
            raise ValueError(
                f"{config_file.parent} holds a {mtype!r} model, not a {mine!r} ({cls.__name__}): load it with "
                "sashimi.load_model(...), which picks the class from config.json"
            )
        raw = {k: v for k, v in raw.items() if k != "model_type"}
        try:
            config = cls.config_class.from_dict(raw, complete=True)
            model = cls(config)
        except (ValueError, TypeError) as err:
            raise ValueError(f"invalid model config {config_file}: {err}") from err
        tensors = read_weights(weights_file, check_finite=check_finite)
        problems, bad_shapes = _problems(model.state_dict(), tensors)
        if bad_shapes or (strict and problems):
            raise ValueError(f"{weights_file} does not match the model of {config_file.name}: " + "; ".join(problems))
        if problems:
            warnings.warn(f"loading {weights_file} non-strictly: " + "; ".join(problems), stacklevel=3)
        floats = {t.dtype for t in tensors.values() if t.is_floating_point()}
        if len(floats) == 1:
            model.to(next(iter(floats)))
        model.load_state_dict(tensors, strict=strict)
        if dtype is not None:
            model.to(dtype)
        model.to(map_location)
        model.eval()
        defaults = read_generation_defaults(config_file.parent / GENERATION_NAME)
        if defaults:
            model.generation_defaults = defaults
        return model


def load_files(config_file: str | os.PathLike, weights_file: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """The model saved in ``config_file`` + ``weights_file``, of the class its ``model_type`` names
    (keyword arguments: see :meth:`PretrainedModel.from_pretrained`)."""
    mtype = saved_model_type(read_config(config_file))
    return model_class(mtype)._from_files(config_file, weights_file, **kwargs)
