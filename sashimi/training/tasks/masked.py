"""Task ``masked``: the MAGNeT-style :class:`~sashimi.models.masked.MaskedSaShiMi` on quantized audio.

Items are :class:`~sashimi.data.AudioFolder` crops quantized to the model's ``card = 2**bits`` classes (one
stream, K = 1); a step is :func:`~sashimi.models.masked.masked_training_loss` (span masks at a cosine-scheduled
rate, cross-entropy on the masked tokens): minimized in nats, logged in bits per masked token together with
the masked-token accuracy. Evaluation draws its masks from a fixed seed, so it is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from sashimi.data.audio_folder import IGNORE_INDEX
from sashimi.data.datasets import DataPreset
from sashimi.models.masked import MaskedSaShiMi, MaskedSaShiMiConfig, masked_training_loss
from sashimi.training.tasks.base import ModelOption, TrainPreset, register_task
from sashimi.training.tasks.tokens import TokenTask

__all__ = ["EVAL_SEED", "MASKED_PRESET_NAMES", "MaskedTask", "masked_presets"]

MASKED_PRESET_NAMES = ("tiny", "bundled")
#: the seed of the evaluation masks (the same masks for the same batch in every evaluation)
EVAL_SEED = 1234


def masked_presets() -> dict[str, TrainPreset]:
    """The presets of ``--task masked``: 'tiny' and the bundled model's size ('bundled')."""
    audio = {"card": 256, "quantization": "mu-law", "sample_rate": 16000, "span_len": 8}
    return {
        "tiny": TrainPreset(
            {"d_model": 16, "n_layers": 2, "pool": (4, 4), "expand": 2, "ff": 2, "d_state": 16, **audio},
            DataPreset("folder", 4096, "crop", minmax=False), 8, 4e-3,
            "a small bidirectional SaShiMi masked model for CPU experiments: 4096-sample crops",
        ),
        "bundled": TrainPreset(
            {"d_model": 32, "n_layers": 2, "pool": (4, 4), "expand": 2, "ff": 2, "d_state": 32, **audio},
            DataPreset("folder", 4096, "crop", minmax=False), 8, 4e-3,
            "the bundled SaShiMiLM's size, bidirectional with U-Net skips (scripts/train_masked_default.py)",
        ),
    }


def _tokens(batch: torch.Tensor) -> torch.Tensor:
    """(B, L) targets -> (B, 1, L) tokens; padding is refused (masked training needs whole crops)."""
    if bool((batch == IGNORE_INDEX).any()):
        raise ValueError("task 'masked' needs items without padding: use --mode crop (and clips >= --seq-len)")
    return batch.unsqueeze(1)


@register_task
class MaskedTask(TokenTask):
    """MaskedSaShiMi span-masked training (``sashimi train --task masked``)."""

    name: ClassVar[str] = "masked"
    model_type: ClassVar[str] = "masked-sashimi"
    preset_names: ClassVar[tuple[str, ...]] = MASKED_PRESET_NAMES
    metric: ClassVar[str] = "bits"
    train_metrics: ClassVar[tuple[str, ...]] = ("bits", "accuracy")
    eval_metrics: ClassVar[tuple[str, ...]] = ("bits", "accuracy")
    config_class: ClassVar[type] = MaskedSaShiMiConfig
    model_class: ClassVar[type[nn.Module]] = MaskedSaShiMi
    model_options: ClassVar[tuple[ModelOption, ...]] = (
        ModelOption("d_model", {"type": int}),
        ModelOption("n_layers", {"type": int, "help": "layers per tier"}),
        ModelOption("d_state", {"type": int}),
        ModelOption("pool", {"type": int, "nargs": "*", "help": "pooling factors, e.g. --pool 4 4"}),
        ModelOption("span_len", {"type": int, "help": "tokens per masked span"}),
        ModelOption("sample_rate", {"type": int, "help": "the model's audio rate in Hz"}),
        ModelOption("card", {"type": int, "help": "token classes (2**bits)"}),
        ModelOption("quantization", {"choices": ("mu-law", "linear")}),
    )

    def presets(self) -> Mapping[str, TrainPreset]:
        return masked_presets()

    def train_step(self, model: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """batch: (B, L) targets -> loss (nats per masked token), bits, accuracy, count (masked tokens)."""
        out = masked_training_loss(model, _tokens(batch))
        return {k: out[k] for k in ("loss", "bits", "accuracy", "count")}

    def eval_step(self, model: nn.Module, batch: torch.Tensor) -> dict[str, Any]:
        """batch: (B, L) targets -> bits and accuracy on masks drawn from :data:`EVAL_SEED`, and their count."""
        g = torch.Generator(device=batch.device).manual_seed(EVAL_SEED)
        out = masked_training_loss(model, _tokens(batch), generator=g)
        return {"bits": float(out["bits"]), "accuracy": float(out["accuracy"]), "count": float(out["count"])}

    def save_model(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)

    def load_model(self, folder: Path) -> nn.Module:
        return MaskedSaShiMi.from_pretrained(str(folder))

    def describe_load(self, folder: str) -> str:
        return f"MaskedSaShiMi.from_pretrained({folder!r})"
