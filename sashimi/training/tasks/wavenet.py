"""Task ``wavenet``: the paper's WaveNet baselines (:class:`~sashimi.models.baselines.WaveNet`) on quantized audio.

The same items, loss and metric as ``lm`` (next-sample cross-entropy, NLL in bits per sample), so the two
families train and score on equal terms. Presets: ``tiny`` (8 layers, receptive field 256 samples, for CPU
demos and tests) and, per paper dataset, WaveNet-512 and WaveNet-1024 (40 layers, 64 residual / dilation
channels, 512 end channels, 512 or 1024 skip channels) with that dataset's data settings.

Model folder: the shared format (``config.json`` with ``"model_type": "wavenet"``, ``model.safetensors``, a
model card): ``sashimi.load_model(RUN)`` or ``WaveNet.from_pretrained(RUN)`` loads a run folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from torch import nn

from sashimi.data.datasets import DATA_PRESETS, DataPreset
from sashimi.models.baselines.wavenet import WaveNet, WaveNetConfig, wavenet_paper
from sashimi.training.tasks.base import ModelOption, TrainPreset, register_task
from sashimi.training.tasks.tokens import TOKEN_OPTIONS, TokenTask

__all__ = ["WaveNetTask", "wavenet_presets"]

#: the token settings of the paper's datasets (16 kHz, 8 bits; Beethoven is linear)
_DATA_TOKENS = {"sc09": "mu-law", "beethoven": "linear", "youtubemix": "mu-law"}


def wavenet_presets() -> dict[str, TrainPreset]:
    """The presets of ``--task wavenet``: 'tiny', and '<dataset>-512' / '<dataset>-1024' for sc09, beethoven and
    youtubemix (the paper's WaveNet-512 / WaveNet-1024 with the dataset's data settings; lr 1e-3)."""
    out = {
        "tiny": TrainPreset(
            {"n_layers": 8, "dilation_cycle": 8, "residual_channels": 16, "dilation_channels": 16,
             "skip_channels": 32, "end_channels": 32, "bits": 8, "quantization": "mu-law", "sample_rate": 16000},
            DataPreset("folder", 4096, "crop", minmax=False), 8, 2e-3,
            "a small WaveNet (8 layers, receptive field 256 samples, about 20k parameters) for CPU demos",
        )
    }
    for data, quantization in _DATA_TOKENS.items():
        for skip in (512, 1024):
            model = wavenet_paper(skip, bits=8, quantization=quantization, sample_rate=16000).to_dict()
            out[f"{data}-{skip}"] = TrainPreset(
                model, DATA_PRESETS[data], 16 if data == "sc09" else 8, 1e-3,
                f"the paper's WaveNet-{skip} baseline on {data} (8-bit {quantization})",
            )
    return out


@register_task
class WaveNetTask(TokenTask):
    """WaveNet next-sample training (``sashimi train --task wavenet``)."""

    name: ClassVar[str] = "wavenet"
    model_type: ClassVar[str] = WaveNetConfig.model_type
    preset_names: ClassVar[tuple[str, ...]] = ("tiny", *(f"{d}-{s}" for d in _DATA_TOKENS for s in (512, 1024)))
    config_class: ClassVar[type] = WaveNetConfig
    model_class: ClassVar[type[nn.Module]] = WaveNet
    model_options: ClassVar[tuple[ModelOption, ...]] = (
        TOKEN_OPTIONS[0],
        ModelOption("dilation_cycle", {"type": int, "help": "WaveNet: dilations 2**(i %% cycle)"}),
        ModelOption("residual_channels", {"type": int}),
        ModelOption("dilation_channels", {"type": int}),
        ModelOption("skip_channels", {"type": int, "help": "WaveNet: 512 or 1024 in the paper"}),
        ModelOption("end_channels", {"type": int}),
        ModelOption("kernel_size", {"type": int}),
        *TOKEN_OPTIONS[1:],
    )

    def presets(self) -> Mapping[str, TrainPreset]:
        return wavenet_presets()

    def save_model(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)

    def load_model(self, folder: Path) -> nn.Module:
        return WaveNet.from_pretrained(str(folder))
