"""The SC09 digit classifier of the SaShiMi evaluation: CIFAR ResNeXt-29 (8x64d) on 32x32 log-mel images.

Architecture (official ``sc09_classifier/models/resnext.py``, ``CifarResNeXt(nlabels=10, in_channels=1)``):

* stem: 3x3 convolution (1 -> 64 channels, no bias), batch norm, ReLU;
* 3 stages of ``(depth - 2) // 9`` type-C bottlenecks, widths ``64w, 128w, 256w`` (``w = widen_factor``),
  stride 1, 2, 2 in each stage's first block. A bottleneck is 1x1 conv (in -> D), BN, ReLU, grouped 3x3
  conv (D -> D, ``cardinality`` groups, the stage's stride), BN, ReLU, 1x1 conv (D -> out), BN, plus a
  shortcut (1x1 strided conv + BN where the shape changes, else identity), then ReLU, with
  ``D = cardinality * int(base_width * out / (64 w))`` (512, 1024, 2048 for the official model; 64 is
  ``base_channels``);
* head: global average pooling to the **feature** vector (1024-d officially; the input of the last
  linear, used for FID and NDB) and ``Linear(256w -> n_classes)``; probabilities = softmax(logits).

With the defaults it has 34,425,546 parameters, as the official definition. The input pipeline
(:func:`sashimi.audio.features.sc09_classifier_input`) turns waveforms at ``sample_rate`` into
``(n_mels, 1 + num_samples // hop_length)`` dB images; :meth:`SC09Classifier.classify` runs both.

Training (:func:`train_classifier`) follows the official recipe where it is cheap: cross-entropy, SGD with
momentum 0.9 and weight decay 1e-2, class-balanced sampling, ReduceLROnPlateau on the validation loss
(patience 5, factor 0.1); of the official augmentations, the speed change and the time shift are
reproduced on the waveform (not the STFT time stretch and the background noise).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm.auto import tqdm

from sashimi.audio.features import fix_length, sc09_classifier_input
from sashimi.data.labelled import LabelledAudioFolder
from sashimi.models.base import PretrainedModel, register_model
from sashimi.models.config import ModelConfig

__all__ = [
    "SC09Classifier",
    "SC09ClassifierConfig",
    "augment_waveforms",
    "classifier_accuracy",
    "classifier_losses",
    "train_classifier",
    "train_classifier_on_folders",
]

SC09_LABELS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclass
class SC09ClassifierConfig(ModelConfig):
    """Hyperparameters of :class:`SC09Classifier`: the ResNeXt and its audio input pipeline.

    Attributes:
        n_classes: number of classes (10 digits for SC09).
        labels: class names, index = class id (``None``: unnamed); length ``n_classes`` when given.
        depth: network depth, ``9 k + 2`` (``k`` bottlenecks per stage; 29 officially).
        cardinality: groups of the 3x3 convolutions (8).
        base_width: channels per group at the first stage, before widening (64).
        widen_factor: stage widths are ``base_channels * (1, 2, 4)`` times this (4: feature dimension 1024).
        base_channels: the stage widths' unit (64 officially; smaller values give tiny test models).
        stem_channels: output channels of the stem convolution (64).
        sample_rate: audio rate the classifier expects (Hz); other rates must be resampled first.
        num_samples: clips are zero-padded at the end or trimmed to this length (16000 = 1 s).
        n_fft, hop_length, n_mels, top_db: the mel pipeline (2048, 512, 32, 80 dB).
        pad_mode: STFT centre padding, 'reflect' (librosa < 0.9, the paper era) or 'constant'.
        config_version: version of this config's format.
    """

    model_type: ClassVar[str] = "sc09-classifier"

    n_classes: int = 10
    labels: list[str] | None = field(default_factory=lambda: list(SC09_LABELS))
    depth: int = 29
    cardinality: int = 8
    base_width: int = 64
    widen_factor: int = 4
    base_channels: int = 64
    stem_channels: int = 64
    sample_rate: int = 16000
    num_samples: int = 16000
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 32
    top_db: float = 80.0
    pad_mode: str = "reflect"
    config_version: int = 1

    def __post_init__(self) -> None:
        for name in ("n_classes", "depth", "cardinality", "base_width", "widen_factor", "base_channels",
                     "stem_channels", "sample_rate", "num_samples", "n_fft", "hop_length", "n_mels", "config_version"):
            value = getattr(self, name)
            if not _is_int(value):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {self.n_classes}")
        if (self.depth - 2) % 9 != 0 or self.depth < 11:
            raise ValueError(f"depth must be 9 k + 2 with k >= 1 (11, 20, 29, ...), got {self.depth}")
        if self.labels is not None:
            if not isinstance(self.labels, (list, tuple)) or not all(isinstance(s, str) for s in self.labels):
                raise TypeError("labels must be a list of class names (str) or None")
            self.labels = list(self.labels)
            if len(self.labels) != self.n_classes:
                raise ValueError(f"labels must name n_classes={self.n_classes} classes, got {len(self.labels)}")
            if len(set(self.labels)) != len(self.labels):
                raise ValueError(f"labels must be distinct, got {self.labels}")
        if isinstance(self.top_db, bool) or not isinstance(self.top_db, (int, float)) or self.top_db <= 0:
            raise ValueError(f"top_db must be a positive number, got {self.top_db!r}")
        self.top_db = float(self.top_db)
        if self.pad_mode not in ("reflect", "constant"):
            raise ValueError(f"pad_mode must be 'reflect' or 'constant', got {self.pad_mode!r}")
        if self.n_fft // 2 >= self.num_samples and self.pad_mode == "reflect":
            raise ValueError(f"num_samples ({self.num_samples}) must exceed n_fft // 2 ({self.n_fft // 2})")
        for i, width in enumerate(self.stage_widths):
            if self._group_width(width) < 1:
                raise ValueError(f"stage {i + 1} has no channels per group: raise base_width")

    @property
    def stage_widths(self) -> tuple[int, int, int]:
        """Output channels of the three stages (``64w, 128w, 256w`` officially); the last is the feature dimension."""
        unit = self.base_channels * self.widen_factor
        return unit, 2 * unit, 4 * unit

    def _group_width(self, out_channels: int) -> int:
        return int(self.base_width * out_channels / (self.widen_factor * self.base_channels))

    def bottleneck_width(self, out_channels: int) -> int:
        """Inner width D of a bottleneck of a stage with ``out_channels`` outputs."""
        return self.cardinality * self._group_width(out_channels)

    @property
    def feature_dim(self) -> int:
        """Dimension of the features (the input of the last linear layer)."""
        return self.stage_widths[-1]

    @property
    def input_frames(self) -> int:
        """Time frames of the mel image."""
        return 1 + self.num_samples // self.hop_length

    @classmethod
    def small(cls, **overrides: Any) -> SC09ClassifierConfig:
        """A small ResNeXt-11 (cardinality 4, widths 64/128/256, 159,802 parameters) that trains on a CPU."""
        kwargs: dict[str, Any] = {"depth": 11, "cardinality": 4, "base_width": 8, "widen_factor": 1,
                                  "stem_channels": 16}
        kwargs.update(overrides)
        return cls(**kwargs)


class _Bottleneck(nn.Module):
    """ResNeXt type-C bottleneck: ``(B, C_in, H, W) -> (B, C_out, H / stride, W / stride)``."""

    def __init__(self, in_channels: int, out_channels: int, width: int, cardinality: int, stride: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.grouped = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn_grouped = nn.BatchNorm2d(width)
        self.expand = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn_reduce(self.reduce(x)))
        y = F.relu(self.bn_grouped(self.grouped(y)))
        y = self.bn_expand(self.expand(y))
        return F.relu(y + self.shortcut(x))


@register_model
class SC09Classifier(PretrainedModel, nn.Module):
    """ResNeXt classifier of 1-channel log-mel images (model type ``"sc09-classifier"``); see the module docstring.

    ``forward(x)``: ``(B, 1, n_mels, frames)`` dB images -> logits ``(B, n_classes)``. ``config``: an
    :class:`SC09ClassifierConfig`, its dict, or None for the official network.
    """

    config_class = SC09ClassifierConfig
    card_tags = ("audio", "sashimi-audio", "audio-classification", "sc09")

    def __init__(self, config: SC09ClassifierConfig | dict | None = None) -> None:
        super().__init__()
        config = self._coerce_config(config)
        self.config: SC09ClassifierConfig = config
        self.stem = nn.Conv2d(1, config.stem_channels, 3, padding=1, bias=False)
        self.bn_stem = nn.BatchNorm2d(config.stem_channels)
        blocks_per_stage = (config.depth - 2) // 9
        stages = []
        in_ch = config.stem_channels
        for out_ch, stride in zip(config.stage_widths, (1, 2, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(_Bottleneck(in_ch, out_ch, config.bottleneck_width(out_ch), config.cardinality,
                                          stride if i == 0 else 1))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Linear(config.feature_dim, config.n_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official init: kaiming-normal (fan-out) convolutions, unit/zero batch norms, kaiming linear."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.kaiming_normal_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def card_description(self) -> str:
        """A paragraph of markdown describing the model (for its model card)."""
        c = self.config
        classes = ", ".join(c.labels) if c.labels else f"{c.n_classes} unnamed classes"
        return (f"An audio classifier in the style of the SaShiMi paper's SC09 evaluation network: a ResNeXt-{c.depth} "
                f"({c.cardinality}x{c.base_width}d, {c.feature_dim}-d features) on {c.n_mels}-band log-mel images of "
                f"{c.num_samples / c.sample_rate:g} s clips at {c.sample_rate} Hz. Classes: {classes}. Its features "
                "and probabilities feed `sashimi.metrics.evaluate` (FID, IS, mIS, AM, NDB).")

    def preprocess(self, audio: Tensor) -> Tensor:
        """Waveforms ``(B, T)`` (or ``(T,)``) at ``config.sample_rate`` -> images ``(B, 1, n_mels, frames)``.

        Runs in float64 for float64 input, float32 otherwise; the result is cast to the model's dtype only
        in :meth:`classify`.
        """
        c = self.config
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2:
            raise ValueError(f"audio must have shape (B, T) or (T,), got {tuple(audio.shape)}")
        images = sc09_classifier_input(audio, sample_rate=c.sample_rate, num_samples=c.num_samples, n_fft=c.n_fft,
                                       hop_length=c.hop_length, n_mels=c.n_mels, top_db=c.top_db,
                                       pad_mode=c.pad_mode)  # (B, n_mels, frames)
        return images[:, None]  # (B, 1, n_mels, frames)

    def features(self, x: Tensor) -> Tensor:
        """Images ``(B, 1, n_mels, frames)`` -> pooled features ``(B, feature_dim)`` (input of the last linear)."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"x must have shape (B, 1, n_mels, frames), got {tuple(x.shape)}")
        y = F.relu(self.bn_stem(self.stem(x)))  # (B, C0, M, N)
        y = self.stages(y)  # (B, 256w, M / 4, N / 4)
        return y.mean(dim=(-2, -1))  # (B, 256w)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))  # (B, n_classes)

    @torch.no_grad()
    def classify(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """Waveforms ``(B, T)`` -> ``(features (B, feature_dim), probabilities (B, n_classes))``, in eval mode.

        This is the callable :func:`sashimi.metrics.evaluation.evaluate` takes.
        """
        param = next(self.parameters())
        images = self.preprocess(audio.to(param.device)).to(param.dtype)
        was_training = self.training
        self.eval()
        try:
            feats = self.features(images)  # (B, D)
            probs = torch.softmax(self.classifier(feats), dim=-1)  # (B, C)
        finally:
            self.train(was_training)
        return feats, probs


def augment_waveforms(
    audio: Tensor, generator: torch.Generator, p: float = 0.5, max_speed: float = 0.2, max_shift: float = 0.25
) -> Tensor:
    """Random training augmentation of waveforms ``(B, T) -> (B, T)``, each clip independently.

    With probability ``p`` each: a speed (and pitch) change by a factor ``1 + U(-max_speed, max_speed)``
    (linear interpolation, then zero-padded or trimmed back to ``T``), and a time shift by
    ``U(-max_shift, max_shift)`` of the clip length, zeros shifted in (0.25: about the official +-8 STFT frames
    of 32). The official amplitude change is left out: the dB-relative input does not see it.
    """
    if audio.ndim != 2:
        raise ValueError(f"audio must have shape (B, T), got {tuple(audio.shape)}")
    if not 0.0 <= p <= 1.0 or not 0.0 <= max_speed < 1.0 or max_shift < 0:
        raise ValueError(f"need 0 <= p <= 1, 0 <= max_speed < 1, max_shift >= 0; got {p}, {max_speed}, {max_shift}")
    if max_shift >= 1.0:
        raise ValueError(f"max_shift is a fraction of the clip length and must be < 1, got {max_shift}")
    length = audio.shape[-1]
    out = audio.clone()
    for i in range(audio.shape[0]):
        draws = torch.rand(4, generator=generator, dtype=torch.float64)  # (use speed, speed, use shift, shift)
        x = out[i]  # (T,)
        if draws[0] < p:
            factor = 1.0 + max_speed * (2.0 * float(draws[1]) - 1.0)
            pos = torch.arange(int(length / factor), dtype=torch.float64) * factor  # read positions, < T
            lo = pos.floor().long().clamp(max=length - 1)
            hi = (lo + 1).clamp(max=length - 1)
            frac = (pos - lo).to(x.dtype)
            x = x[lo] * (1 - frac) + x[hi] * frac
            x = fix_length(x, length)
        if draws[2] < p:
            shift = round(max_shift * length * (2.0 * float(draws[3]) - 1.0))
            x = torch.roll(x, shift)
            if shift > 0:
                x[:shift] = 0
            elif shift < 0:
                x[shift:] = 0
        out[i] = x
    return out


def classifier_losses(model: SC09Classifier, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
    """Named losses of one batch ``(audio (B, T), labels (B,))``: ``loss`` (cross-entropy, nats), ``accuracy``.

    The training task's ``train_step`` / ``eval_step``: backpropagate ``loss``; ``accuracy`` is detached.
    """
    audio, labels = batch
    param = next(model.parameters())
    images = model.preprocess(audio.to(param.device)).to(param.dtype)  # (B, 1, M, N)
    logits = model(images)  # (B, C)
    labels = labels.to(param.device)
    loss = F.cross_entropy(logits, labels)
    accuracy = (logits.argmax(dim=-1) == labels).float().mean().detach()
    return {"loss": loss, "accuracy": accuracy}


@torch.no_grad()
def classifier_accuracy(model: SC09Classifier, data: Dataset, batch_size: int = 64) -> dict[str, float]:
    """Mean cross-entropy (``loss``) and ``accuracy`` of ``model`` over a dataset of ``(audio, label)`` items."""
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for audio, labels in DataLoader(data, batch_size=batch_size, shuffle=False):
        out = classifier_losses(model, (audio, labels))
        n = labels.shape[0]
        total_loss += float(out["loss"]) * n
        correct += round(float(out["accuracy"]) * n)
        count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("data is empty")
    return {"loss": total_loss / count, "accuracy": correct / count}


def _balanced_sampler(labels: Sequence[int], n_classes: int, generator: torch.Generator) -> WeightedRandomSampler:
    """Draws every class equally often (the official class-balanced WeightedRandomSampler)."""
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(np.float64)
    weights = torch.as_tensor([1.0 / counts[y] for y in labels], dtype=torch.float64)
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)


def train_classifier(
    model: SC09Classifier,
    train_data: Dataset,
    *,
    val_data: Dataset | None = None,
    epochs: int = 70,
    batch_size: int = 96,
    lr: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 1e-2,
    balanced: bool = True,
    augment: bool = True,
    keep_best: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` on ``(audio (T,), label)`` items (e.g. :class:`sashimi.data.LabelledAudioFolder`).

    The official recipe: SGD (momentum, weight decay), class-balanced sampling when ``balanced`` (the dataset
    must then expose ``labels``), speed and time-shift augmentation when ``augment`` (:func:`augment_waveforms`),
    ReduceLROnPlateau on the validation loss (patience 5, factor 0.1) when
    ``val_data`` is given. With validation data and ``keep_best``, the weights of the epoch with the best
    validation accuracy (ties: lower validation loss) are restored at the end, as the official script keeps
    its best checkpoint. Returns one dict per epoch: ``train_loss``, ``train_accuracy``, ``lr`` and, with
    validation data, ``val_loss`` and ``val_accuracy``.
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not _is_int(value) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if len(train_data) == 0:  # type: ignore[arg-type]
        raise ValueError("train_data is empty")
    generator = torch.Generator().manual_seed(seed)
    if balanced:
        labels = getattr(train_data, "labels", None)
        if labels is None:
            raise ValueError("balanced sampling needs train_data.labels (one class id per item); pass balanced=False")
        loader = DataLoader(train_data, batch_size=batch_size,
                            sampler=_balanced_sampler(labels, model.config.n_classes, generator))
    else:
        loader = DataLoader(train_data, batch_size=batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=5, factor=0.1)
    history: list[dict[str, float]] = []
    best: tuple[float, float] | None = None
    best_state: dict[str, Tensor] | None = None
    for epoch in tqdm(range(epochs), desc="classifier epochs", disable=not progress):
        model.train()
        total_loss, total_acc, count = 0.0, 0.0, 0
        for audio, labels in loader:
            if augment:
                audio = augment_waveforms(audio, generator)
            out = classifier_losses(model, (audio, labels))
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            optimizer.step()
            n = labels.shape[0]
            total_loss += float(out["loss"].detach()) * n
            total_acc += float(out["accuracy"]) * n
            count += n
        record = {"epoch": float(epoch + 1), "train_loss": total_loss / count, "train_accuracy": total_acc / count,
                  "lr": optimizer.param_groups[0]["lr"]}
        if val_data is not None:
            val = classifier_accuracy(model, val_data, batch_size=batch_size)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            scheduler.step(val["loss"])
            score = (val["accuracy"], -val["loss"])
            if keep_best and (best is None or score > best):
                best = score
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append(record)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def train_classifier_on_folders(
    train_dir: str | os.PathLike,
    *,
    val_dir: str | os.PathLike | None = None,
    config: SC09ClassifierConfig | None = None,
    resample: bool = False,
    **train_kwargs: Any,
) -> tuple[SC09Classifier, list[dict[str, float]]]:
    """Build and train a classifier on a folder of labelled clips (one subfolder per class).

    The classes are ``train_dir``'s subfolder names (sorted); ``config`` (default: the official
    architecture) gets them as ``labels`` and ``n_classes``. ``val_dir`` has the same layout (a subset of the
    classes is fine). Clips must be at ``config.sample_rate`` unless ``resample``. ``train_kwargs`` go to
    :func:`train_classifier`. Returns ``(model, history)``; the model is in eval mode.
    """
    base = SC09ClassifierConfig() if config is None else config
    probe = LabelledAudioFolder(train_dir, base.sample_rate, base.num_samples, resample=resample)
    if len(probe.classes) < 2:
        raise ValueError(f"{train_dir} must have at least 2 class subfolders, found {probe.classes}")
    settings = {f.name: getattr(base, f.name) for f in fields(base)}
    settings.update(n_classes=len(probe.classes), labels=list(probe.classes))
    config = SC09ClassifierConfig(**settings)
    val_data = None
    if val_dir is not None:
        val_data = LabelledAudioFolder(val_dir, config.sample_rate, config.num_samples, labels=config.labels,
                                       resample=resample)
    model = SC09Classifier(config)
    history = train_classifier(model, probe, val_data=val_data, **train_kwargs)
    return model, history
