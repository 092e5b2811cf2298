"""The shared part of the token tasks (``lm``, ``wavenet``): quantized audio items, next-sample cross-entropy.

Items are :class:`~sashimi.data.AudioFolder` crops or padded clips quantized to the model's ``2**bits``
classes (padding targets are ``IGNORE_INDEX``). A training step shifts the targets right by one (the zero
token in front, the model's ``shift_right``), and the loss is the cross-entropy of the logits against the
targets, padding ignored: minimized in nats, logged and evaluated in bits per sample (the paper's NLL).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from sashimi.data.audio_folder import IGNORE_INDEX, AudioFolder, pad_collate
from sashimi.data.datasets import split_files
from sashimi.losses.tokens import LN2, cross_entropy_bits
from sashimi.training.tasks.base import DataSplits, ModelOption, Task, TrainPreset, unwrap

__all__ = ["TOKEN_OPTIONS", "NamedItems", "TokenTask", "evaluate"]

#: the model options every token task has (the meaning of its tokens)
TOKEN_OPTIONS = (
    ModelOption("n_layers", {"type": int, "help": "layers (SaShiMi: per tier; WaveNet: gated residual layers)"}),
    ModelOption("sample_rate", {"type": int, "help": "the model's audio rate in Hz"}),
    ModelOption("bits", {"type": int, "help": "tokens are 2**bits classes"}),
    ModelOption("quantization", {"choices": ("mu-law", "linear")}),
)


class NamedItems(Dataset):
    """An :class:`AudioFolder` whose item errors name the file (e.g. a NaN sample met during training).

    Args:
        folder: the dataset; ``set_epoch``, ``clips`` and ``len`` pass through.
    """

    def __init__(self, folder: AudioFolder) -> None:
        self.folder = folder

    @property
    def clips(self) -> list:
        return self.folder.clips

    def __len__(self) -> int:
        return len(self.folder)

    def set_epoch(self, epoch: int) -> None:
        self.folder.set_epoch(epoch)

    def __getitem__(self, index: int) -> torch.Tensor:
        """(L,) int64 targets of item ``index``."""
        try:
            return self.folder[index]
        except ValueError as err:
            path = str(self.folder.clips[self.folder.locate(index)[0]].path)
            if path in str(err):
                raise
            raise ValueError(f"bad audio in {path} (item {index}): {err}; fix or remove the file") from err


class TokenTask(Task):
    """Next-sample prediction over quantized audio, for any model with the token interface
    (``forward(inputs (B, L)) -> logits (B, L, 2**bits)``, ``shift_right``, ``config.bits`` ...)."""

    metric: ClassVar[str] = "bits"
    train_metrics: ClassVar[tuple[str, ...]] = ("bits",)
    eval_metrics: ClassVar[tuple[str, ...]] = ("bits",)
    config_class: ClassVar[type]
    model_class: ClassVar[type[nn.Module]]

    def model_config(self, preset: TrainPreset, overrides: Mapping[str, Any]) -> Any:
        kw = dict(preset.model)
        kw.update(overrides)
        if isinstance(kw.get("pool"), list):
            kw["pool"] = tuple(kw["pool"])
        return self.config_class.from_dict(kw)

    def build_model(self, model_config: Any) -> nn.Module:
        return self.model_class(model_config)

    def datasets(self, cfg: Any, model_config: Any, progress: bool) -> DataSplits:
        splits = split_files(cfg.data, cfg.layout, val_fraction=cfg.val_fraction)
        if not splits["train"]:
            raise ValueError(f"{cfg.data} ({cfg.layout} layout) has no training files")
        common = {
            "sample_rate": model_config.sample_rate, "bits": model_config.bits,
            "quantization": model_config.quantization, "seq_len": cfg.seq_len or None, "mode": cfg.mode,
            "minmax": cfg.minmax, "resample": cfg.resample, "short": cfg.short,
            "on_error": "warn" if cfg.skip_bad_files else "raise", "seed": cfg.seed, "progress": progress,
        }
        train_ds = AudioFolder(cfg.data, files=splits["train"], random_crop=True, **common)
        split = "validation" if splits["validation"] else "train"
        eval_ds = AudioFolder(cfg.data, files=splits[split], random_crop=False, **common)
        summary = (f"{len(train_ds.clips)} training clips ({len(train_ds)} items of {cfg.seq_len or 'whole-clip'} "
                   f"samples), eval on {split} ({len(eval_ds.clips)} clips)")
        return DataSplits(NamedItems(train_ds), NamedItems(eval_ds), split, pad_collate, summary)

    def train_step(self, model: nn.Module, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """batch: (B, L) targets (``IGNORE_INDEX`` = padding) -> loss (nats per sample), bits, count."""
        targets = batch  # (B, L)
        n_valid = int((targets != IGNORE_INDEX).sum())
        inputs = unwrap(model).shift_right(targets.clamp_min(0))  # (B, L)
        logits = model(inputs)  # (B, L, C)
        loss_sum = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                                   reduction="sum")
        loss = loss_sum / max(n_valid, 1)
        return {"loss": loss, "bits": loss.detach() / LN2, "count": torch.tensor(n_valid)}

    def eval_step(self, model: nn.Module, batch: torch.Tensor) -> dict[str, float]:
        """batch: (B, L) targets -> NLL in bits per sample over the non-padding targets, and their count."""
        targets = batch  # (B, L)
        valid = targets != IGNORE_INDEX  # (B, L)
        logits = model(unwrap(model).shift_right(targets.clamp_min(0)))  # (B, L, C)
        bits = cross_entropy_bits(logits, targets.clamp_min(0), mask=valid)
        return {"bits": float(bits), "count": float(valid.sum())}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    device: torch.device | str = "cpu",
    *,
    max_batches: int | None = None,
    amp_dtype: torch.dtype | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[float, int]:
    """Summed NLL (nats) and token count of a token model on a dataset of (L,) targets (this rank's share).

    Rank r takes items ``r, r + world_size, ...`` (the first ``max_batches * batch_size * world_size``
    items when capped); sum the results over ranks and divide to get nats per sample (``/ ln 2`` for
    bits). ``model`` maps ``(B, L)`` input tokens to ``(B, L, C)`` logits and has a ``shift_right`` (the
    unwrapped model's is used). Restores the model's training mode.
    """
    core = unwrap(model)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    n = len(dataset)
    if max_batches is not None:
        n = min(n, max_batches * batch_size * world_size)
    idx = list(range(rank, n, world_size))
    total, count = 0.0, 0
    amp = torch.autocast(device_type=device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    for s in range(0, len(idx), batch_size):
        targets = pad_collate([dataset[i] for i in idx[s : s + batch_size]]).to(device)  # (B, L)
        inputs = core.shift_right(targets.clamp_min(0))
        with amp:
            logits = core(inputs)  # (B, L, C)
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="sum")
        total += float(nll)
        count += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    return total, count
