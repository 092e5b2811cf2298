"""Task ``wavenet``: the paper's WaveNet baselines (:class:`~sashimi.models.baselines.WaveNet`) on quantized audio.

The same items, loss and metric as ``lm`` (next-sample cross-entropy, NLL in bits per sample), so the two
families train and score on equal terms. Presets: ``tiny`` (8 layers, receptive field 256 samples, for CPU
demos and tests) and, per paper dataset, WaveNet-512 and WaveNet-1024 (40 layers, 64 residual / dilation
channels, 512 end channels, 512 or 1024 skip channels) with that dataset's data settings.

Model folder: ``config.json`` (the :class:`WaveNetConfig` fields plus ``"model_type": "wavenet"``) and
``model.safetensors``; :func:`load_wavenet` reads it back (strict, safetensors only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from safetensors.torch import load_file, save_file
from torch import nn

from sashimi.data.datasets import DATA_PRESETS, DataPreset
from sashimi.models.baselines.wavenet import WaveNet, WaveNetConfig, wavenet_paper
from sashimi.training.tasks.base import ModelOption, TrainPreset, register_task
from sashimi.training.tasks.tokens import TOKEN_OPTIONS, TokenTask

__all__ = ["WAVENET_MODEL_TYPE", "WaveNetTask", "load_wavenet", "save_wavenet", "wavenet_presets"]

WAVENET_MODEL_TYPE = "wavenet"
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


def save_wavenet(model: WaveNet, folder: str | Path) -> None:
    """Write ``folder/config.json`` (with ``model_type``) and ``folder/model.safetensors``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": WAVENET_MODEL_TYPE, **model.config.to_dict()}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))


def load_wavenet(folder: str | Path) -> WaveNet:
    """A :class:`WaveNet` from a folder written by :func:`save_wavenet` (every tensor must match), in eval mode.

    Raises:
        FileNotFoundError: a missing file. ValueError: a folder of another model type, or a bad file.
    """
    folder = Path(folder)
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not a valid JSON config: {err}") from err
    if not isinstance(config, dict) or config.pop("model_type", None) != WAVENET_MODEL_TYPE:
        raise ValueError(f"{path} is not a WaveNet config (model_type must be {WAVENET_MODEL_TYPE!r})")
    config.pop("config_version", None)
    model = WaveNet(WaveNetConfig.from_dict(config))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{folder} has no model.safetensors")
    try:
        state = load_file(str(weights))
    except Exception as err:
        raise ValueError(f"{weights} is not a readable safetensors file: {err}") from err
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights} does not fit the config in {path}: {err}") from err
    return model.eval()


@register_task
class WaveNetTask(TokenTask):
    """WaveNet next-sample training (``sashimi train --task wavenet``)."""

    name: ClassVar[str] = "wavenet"
    model_type: ClassVar[str] = WAVENET_MODEL_TYPE
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
        save_wavenet(model, folder)

    def load_model(self, folder: Path) -> nn.Module:
        return load_wavenet(folder)

    def describe_load(self, folder: str) -> str:
        return f"sashimi.training.tasks.wavenet.load_wavenet({folder!r})"
