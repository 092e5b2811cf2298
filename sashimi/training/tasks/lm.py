"""Task ``lm``: the autoregressive :class:`~sashimi.models.lm.SaShiMiLM` on quantized audio (the paper's setup)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from torch import nn

from sashimi.convert.state_spaces import VARIANTS
from sashimi.data.datasets import DATA_PRESETS, DataPreset
from sashimi.models.lm import SaShiMiLM, SaShiMiLMConfig
from sashimi.training.tasks.base import ModelOption, TrainPreset, register_task
from sashimi.training.tasks.tokens import TOKEN_OPTIONS, TokenTask

__all__ = ["LM_PRESET_NAMES", "LMTask", "lm_presets"]

LM_PRESET_NAMES = ("tiny", "sc09", "beethoven", "youtubemix")


def lm_presets() -> dict[str, TrainPreset]:
    """The presets of ``--task lm``: 'tiny' and the paper's three SaShiMi models with their data settings."""
    out = {
        "tiny": TrainPreset(
            {"d_model": 16, "n_layers": 2, "pool": (4, 4), "expand": 2, "ff": 2, "d_state": 16, "bits": 8,
             "quantization": "mu-law", "sample_rate": 16000},
            DataPreset("folder", 4096, "crop", minmax=False), 8, 4e-3,
            "a small SaShiMi (about 0.1M parameters) for CPU experiments and demos: 4096-sample crops",
        )
    }
    for name, batch, desc in (
        ("sc09", 16, "the paper's SC09 SaShiMi (8 layers per tier, d_model 64): 1-s clips, 8-bit mu-law"),
        ("beethoven", 8, "the paper's Beethoven SaShiMi: 8-s clips, 8-bit linear"),
        ("youtubemix", 8, "the paper's YouTubeMix SaShiMi: crops of 131072 samples, 8-bit mu-law"),
    ):
        out[name] = TrainPreset(dict(VARIANTS[name].config), DATA_PRESETS[name], batch, 4e-3, desc)
    return out


@register_task
class LMTask(TokenTask):
    """SaShiMiLM next-sample training (``sashimi train --task lm``, the default)."""

    name: ClassVar[str] = "lm"
    model_type: ClassVar[str] = SaShiMiLMConfig.model_type
    preset_names: ClassVar[tuple[str, ...]] = LM_PRESET_NAMES
    config_class: ClassVar[type] = SaShiMiLMConfig
    model_class: ClassVar[type[nn.Module]] = SaShiMiLM
    model_options: ClassVar[tuple[ModelOption, ...]] = (
        ModelOption("d_model", {"type": int}),
        TOKEN_OPTIONS[0],
        ModelOption("d_state", {"type": int}),
        ModelOption("pool", {"type": int, "nargs": "*", "help": "pooling factors, e.g. --pool 4 4"}),
        ModelOption("expand", {"type": int}),
        ModelOption("ff", {"type": int}),
        ModelOption("dropout", {"type": float}),
        *TOKEN_OPTIONS[1:],
    )

    def presets(self) -> Mapping[str, TrainPreset]:
        return lm_presets()

    def save_model(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)

    def load_model(self, folder: Path) -> nn.Module:
        return SaShiMiLM.from_pretrained(str(folder))

    def describe_load(self, folder: str) -> str:
        return f"SaShiMiLM.from_pretrained({folder!r})"
