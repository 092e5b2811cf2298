"""Task ``classifier``: the SC09 evaluation classifier (:class:`~sashimi.models.classifier.SC09Classifier`) on a
folder of labelled clips.

Data: ``--data FOLDER`` whose subfolders are the classes (``FOLDER/<label>/*.wav``), or a folder with split
subfolders ``train/`` and optionally ``validation/`` (or ``valid/`` / ``val/``), each laid out by class (the
layout of ``realdata.py --only digits`` and of SC09; a ``test/`` split is left alone for ``sashimi evaluate``).
Without a validation folder, ``--val-fraction`` holds out that fraction of each class's files (a seeded draw);
with neither, evaluation runs on the training clips. Clips are read at the model's ``sample_rate`` (other rates
are resampled unless ``--no-resample``) and padded or trimmed to its ``num_samples``; ``--seq-len``, ``--mode``
and ``--minmax`` do not apply to this task.

Classes: the model config's ``labels`` (the SC09 digits by default) name the class ids. ``--labels a b c`` sets
them (and ``n_classes``); every class subfolder of the data must be one of them. With ``labels`` unset
(``None``), the sorted subfolder names are the classes and their count must be ``n_classes``.

Training follows the official recipe where the generic trainer allows: cross-entropy, class-balanced sampling
(a fresh balanced draw per epoch), the speed and time-shift augmentation of
:func:`~sashimi.models.classifier.augment_waveforms` (drawn from (seed, epoch, item), so resumption is exact),
and the plateau schedule on the validation cross-entropy. The optimizer is the trainer's AdamW (the official
script uses SGD with momentum 0.9 and weight decay 1e-2; the presets' AdamW rates were chosen for it).

Metrics: ``ce`` (cross-entropy, nats; drives the schedule and the best-metric record), ``accuracy`` and
``error`` (1 - accuracy), logged as ``train_<name>`` / ``eval_<name>``.
The run folder is a model folder: ``sashimi.load_model(RUN)`` returns the classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from sashimi.data.datasets import DataPreset
from sashimi.data.labelled import LabelledAudioFolder
from sashimi.models.classifier import SC09Classifier, SC09ClassifierConfig, augment_waveforms
from sashimi.training.tasks.base import DataSplits, ModelOption, Task, TrainPreset, register_task, unwrap

__all__ = ["CLASSIFIER_PRESET_NAMES", "ClassifierItems", "ClassifierTask", "classifier_presets"]

CLASSIFIER_PRESET_NAMES = ("small", "sc09")
_VALIDATION_NAMES = ("validation", "valid", "val")


def classifier_presets() -> dict[str, TrainPreset]:
    """The presets of ``--task classifier``: 'small' (a ResNeXt-11 of 0.16M parameters that trains on a CPU) and
    'sc09' (the official ResNeXt-29 8x64d, 34.4M parameters; batch 96 as the official script)."""
    data = DataPreset("folder", 16000, "pad", minmax=False)
    return {
        "small": TrainPreset(
            SC09ClassifierConfig.small().to_dict(), data, 32, 3e-3,
            "a small ResNeXt-11 classifier (cardinality 4, 0.16M parameters) for CPU training and demos",
        ),
        "sc09": TrainPreset(
            SC09ClassifierConfig().to_dict(), data, 96, 1e-3,
            "the official SC09 evaluation classifier: ResNeXt-29 8x64d on 32-band log-mel images (34.4M parameters)",
        ),
    }


class ClassifierItems(Dataset):
    """Training or evaluation items ``(audio (num_samples,) float32, class id)`` of a labelled folder.

    Args:
        folder: the clips.
        indices: which of ``folder``'s items this split holds.
        n_classes: the model's class count (for balancing).
        seed: the run's seed.
        train: training items: a class-balanced draw per epoch (with replacement, as the official sampler)
            and augmentation; both are functions of (seed, epoch, index). Otherwise items are the clips in order.
    """

    def __init__(self, folder: LabelledAudioFolder, indices: Sequence[int], n_classes: int, seed: int,
                 train: bool) -> None:
        self.folder = folder
        self.indices = list(indices)
        self.labels = [folder.labels[i] for i in self.indices]
        self.n_classes = n_classes
        self.seed = seed
        self.train = train
        self.epoch = 0
        self.order = list(range(len(self.indices)))
        if train:
            self.set_epoch(0)

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        """Draw the epoch's class-balanced item order (training items; a no-op for evaluation items)."""
        self.epoch = int(epoch)
        if not self.train or not self.indices:
            return
        labels = torch.as_tensor(self.labels)
        counts = torch.bincount(labels, minlength=self.n_classes).to(torch.float64)
        weights = 1.0 / counts[labels]  # (N,) every present class equally likely
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.order = torch.multinomial(weights, len(self.indices), replacement=True, generator=g).tolist()

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        audio, label = self.folder[self.indices[self.order[index]]]  # (T,)
        if self.train:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_033 + index)
            audio = augment_waveforms(audio[None], g)[0]  # (T,)
        return audio, label


def _split_roots(root: Path) -> tuple[Path, Path | None]:
    """(training folder, validation folder or None) of a data folder with or without split subfolders."""
    if (root / "train").is_dir():
        for name in _VALIDATION_NAMES:
            if (root / name).is_dir():
                return root / "train", root / name
        return root / "train", None
    return root, None


def _hold_out(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices): ``round(fraction * n)`` of each class's n items, a seeded draw
    (at least one item stays in training)."""
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    for c in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == c]
        perm = torch.randperm(len(members), generator=g).tolist()
        k = min(round(fraction * len(members)), len(members) - 1)
        held.extend(members[j] for j in perm[:k])
        train.extend(members[j] for j in perm[k:])
    return sorted(train), sorted(held)


@register_task
class ClassifierTask(Task):
    """SC09-style classifier training on labelled clips (``sashimi train --task classifier``)."""

    name: ClassVar[str] = "classifier"
    model_type: ClassVar[str] = SC09ClassifierConfig.model_type
    preset_names: ClassVar[tuple[str, ...]] = CLASSIFIER_PRESET_NAMES
    metric: ClassVar[str] = "ce"
    train_metrics: ClassVar[tuple[str, ...]] = ("ce", "accuracy")
    eval_metrics: ClassVar[tuple[str, ...]] = ("ce", "accuracy", "error")
    model_options: ClassVar[tuple[ModelOption, ...]] = (
        ModelOption("labels", {"nargs": "+", "help": "classifier: class names (= the data's class subfolders)"}),
        ModelOption("n_classes", {"type": int, "help": "classifier: number of classes (default: len(--labels))"}),
        ModelOption("depth", {"type": int, "help": "classifier: ResNeXt depth 9k+2 (29 officially)"}),
        ModelOption("cardinality", {"type": int}),
        ModelOption("base_width", {"type": int}),
        ModelOption("widen_factor", {"type": int}),
        ModelOption("num_samples", {"type": int, "help": "classifier: clips are padded or trimmed to this length"}),
    )

    def presets(self) -> Mapping[str, TrainPreset]:
        return classifier_presets()

    def model_config(self, preset: TrainPreset, overrides: Mapping[str, Any]) -> SC09ClassifierConfig:
        kw = dict(preset.model)
        kw.update(overrides)
        if "labels" in overrides and "n_classes" not in overrides and overrides["labels"] is not None:
            kw["n_classes"] = len(overrides["labels"])
        elif "n_classes" in overrides and "labels" not in overrides and kw.get("labels") is not None:
            if len(kw["labels"]) != kw["n_classes"]:
                kw["labels"] = None  # the preset's names do not fit the new class count
        return SC09ClassifierConfig.from_dict(kw)

    def build_model(self, model_config: Any) -> nn.Module:
        return SC09Classifier(model_config)

    def save_model(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)

    def load_model(self, folder: Path) -> nn.Module:
        return SC09Classifier.from_pretrained(str(folder))

    def describe_load(self, folder: str) -> str:
        return f"sashimi.load_model({folder!r})"

    def datasets(self, cfg: Any, model_config: Any, progress: bool) -> DataSplits:
        mc: SC09ClassifierConfig = model_config
        train_root, val_root = _split_roots(Path(cfg.data))
        train_folder = LabelledAudioFolder(train_root, mc.sample_rate, mc.num_samples, labels=mc.labels,
                                           resample=cfg.resample)
        if mc.labels is None and len(train_folder.classes) != mc.n_classes:
            raise ValueError(
                f"{train_root} has {len(train_folder.classes)} class subfolders {train_folder.classes} but the model "
                f"has n_classes={mc.n_classes}: pass --labels {' '.join(train_folder.classes)}")
        missing = sorted(set(range(mc.n_classes)) - set(train_folder.labels))
        if missing:
            names = [train_folder.classes[i] for i in missing]
            present = " ".join(c for c in train_folder.classes if c not in names)
            raise ValueError(f"{train_root} has no clips of the class(es) {names}: every class of the model needs "
                             f"training clips (or pass --labels {present})")
        every = list(range(len(train_folder)))
        if val_root is not None:
            val_folder = LabelledAudioFolder(val_root, mc.sample_rate, mc.num_samples, labels=train_folder.classes,
                                             resample=cfg.resample)
            train_idx, eval_folder, eval_idx, split = every, val_folder, list(range(len(val_folder))), "validation"
        elif cfg.val_fraction > 0:
            train_idx, eval_idx = _hold_out(train_folder.labels, cfg.val_fraction, cfg.seed)
            eval_folder, split = train_folder, "validation"
        else:
            train_idx, eval_folder, eval_idx, split = every, train_folder, every, "train"
        train = ClassifierItems(train_folder, train_idx, mc.n_classes, cfg.seed, train=True)
        evaluation = ClassifierItems(eval_folder, eval_idx, mc.n_classes, cfg.seed, train=False)
        summary = (f"{len(train)} training clips of {mc.n_classes} classes ({', '.join(train_folder.classes)}), "
                   f"eval on {split} ({len(evaluation)} clips)")
        return DataSplits(train, evaluation, split, default_collate, summary)

    def _logits(self, model: nn.Module, audio: Tensor) -> Tensor:
        """(B, T) waveforms -> (B, C) logits; the mel front end runs in float32 outside any autocast."""
        core = unwrap(model)
        with torch.autocast(device_type=audio.device.type, enabled=False):
            images = core.preprocess(audio.float())  # (B, 1, M, N)
        return model(images)  # (B, C)

    def train_step(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """batch: (audio (B, T), labels (B,)) -> loss (cross-entropy, nats), ce (the same, detached), accuracy,
        count."""
        audio, labels = batch
        logits = self._logits(model, audio)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.argmax(dim=-1) == labels).double().mean().detach()
        return {"loss": loss, "ce": loss.detach(), "accuracy": accuracy, "count": torch.tensor(labels.shape[0])}

    def eval_step(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> dict[str, float]:
        """batch: (audio (B, T), labels (B,)) -> mean cross-entropy (nats), accuracy, error rate, count."""
        audio, labels = batch
        logits = self._logits(model, audio)  # (B, C)
        ce = float(F.cross_entropy(logits.float(), labels))
        accuracy = int((logits.argmax(dim=-1) == labels).sum()) / labels.shape[0]
        return {"ce": ce, "accuracy": accuracy, "error": 1.0 - accuracy, "count": float(labels.shape[0])}
