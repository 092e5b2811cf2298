"""``sashimi train --task classifier``: the SC09 classifier trained on labelled clips through the task trainer,
resumed exactly, loaded back with ``sashimi.load_model``; its items (balanced, augmented, deterministic) and
its data errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import sashimi
from sashimi.audio import save_audio
from sashimi.cli import main
from sashimi.data.labelled import LabelledAudioFolder
from sashimi.models.classifier import SC09Classifier, classifier_accuracy
from sashimi.training import TrainConfig, get_task, resolve_config, train
from sashimi.training.tasks.classifier import ClassifierItems, _hold_out, classifier_presets

SR = 16000
N = 4000  # 0.25-s clips: 32 x 8 mel images
NAMES = ("high", "low", "mid")  # sorted: the folder order gives these ids
FREQS = {"low": 250.0, "mid": 900.0, "high": 3000.0}


def _tones(root: Path, per_class: int, seed: int, names: tuple[str, ...] = NAMES, sr: int = SR) -> Path:
    """Noisy tones, one class per frequency band (random pitch within +-8 %, amplitude, phase)."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) / sr
    for name in names:
        for i in range(per_class):
            f = FREQS[name] * rng.uniform(0.92, 1.08)
            x = rng.uniform(0.2, 0.9) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
            save_audio(root / name / f"{i}.wav", (x + 0.02 * rng.standard_normal(N)).astype(np.float32), sr)
    return root


def _cli(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "--task", "classifier", "--preset", "small", "--data", str(data), "--out", str(run),
            "--num-samples", str(N), "--labels", *NAMES, "--batch-size", "12", "--quiet", *extra]


def test_cli_trains_to_high_accuracy_and_loads(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    _tones(data / "train", 16, seed=0)
    _tones(data / "validation", 6, seed=1)
    test = _tones(tmp_path / "test", 10, seed=2)
    run = tmp_path / "run"
    assert main(_cli(data, run, "--steps", "40", "--eval-every", "20", "--lr", "3e-3")) == 0
    out = capsys.readouterr().out
    assert "finished at step 40: eval ce" in out and "sashimi.load_model" in out
    model = sashimi.load_model(run)
    assert isinstance(model, SC09Classifier)
    assert model.config.labels == list(NAMES) and model.config.n_classes == 3 and model.config.num_samples == N
    assert json.loads((run / "config.json").read_text())["model_type"] == "sc09-classifier"
    held_out = classifier_accuracy(model, LabelledAudioFolder(test, SR, N, labels=list(NAMES)))
    assert held_out["accuracy"] >= 0.9, held_out
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["task"] == "classifier" and summary["eval_split"] == "validation"
    assert summary["eval_error"] == pytest.approx(1.0 - summary["eval_accuracy"], abs=1e-12)
    # the logged validation metrics are those of the saved model on the validation folder
    val = classifier_accuracy(model, LabelledAudioFolder(data / "validation", SR, N, labels=list(NAMES)))
    assert summary["eval_accuracy"] == pytest.approx(val["accuracy"], abs=1e-9)
    assert summary["eval_ce"] == pytest.approx(val["loss"], rel=1e-5)
    header = (run / "log.csv").read_text().splitlines()[0].split(",")
    assert {"train_ce", "train_accuracy", "eval_ce", "eval_accuracy", "eval_error"} <= set(header)


def test_resume_is_exact(tmp_path: Path) -> None:
    data = _tones(tmp_path / "data", 4, seed=3)
    full, split = tmp_path / "full", tmp_path / "split"
    common = ("--steps", "4", "--eval-every", "0", "--batch-size", "4", "--val-fraction", "0.25")
    assert main(_cli(data, full, *common)) == 0
    assert main(_cli(data, split, *common, "--stop-at", "3")) == 0  # mid-epoch: 9 training clips, batch 4
    assert main(["train", "--out", str(split), "--resume", "--quiet"]) == 0
    a, b = sashimi.load_model(full).state_dict(), sashimi.load_model(split).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k  # weights and batch-norm statistics bit-identical on one machine


def test_items_are_balanced_augmented_and_deterministic(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _tones(root, 12, seed=4, names=("low",))
    _tones(root, 3, seed=5, names=("high",))
    folder = LabelledAudioFolder(root, SR, N)
    assert folder.classes == ["high", "low"]
    items = ClassifierItems(folder, range(len(folder)), 2, seed=7, train=True)
    drawn = []
    for epoch in range(40):
        items.set_epoch(epoch)
        drawn += [folder.labels[items.indices[j]] for j in items.order]
    share = np.mean(drawn)  # class 1 ('low') has 4x the files: balanced draws give it half the items
    assert abs(share - 0.5) < 0.05, share
    items.set_epoch(3)
    again = ClassifierItems(folder, range(len(folder)), 2, seed=7, train=True)
    again.set_epoch(3)
    x, y = items[5]
    x2, y2 = again[5]
    assert y == y2 and torch.equal(x, x2)  # a function of (seed, epoch, index)
    raw, raw_label = folder[items.indices[items.order[5]]]
    assert raw_label == y and x.shape == raw.shape == (N,)
    assert not torch.equal(x, raw) or not torch.equal(items[6][0], folder[items.indices[items.order[6]]][0])
    plain = ClassifierItems(folder, [2, 0], 2, seed=7, train=False)
    assert torch.equal(plain[0][0], folder[2][0]) and plain[1][1] == folder.labels[0]


def test_hold_out_is_per_class_and_disjoint() -> None:
    labels = [0] * 10 + [1] * 4 + [2] * 1
    train_idx, held = _hold_out(labels, 0.25, seed=0)
    assert sorted(train_idx + held) == list(range(15)) and not set(train_idx) & set(held)
    assert [sum(labels[i] == c for i in held) for c in range(3)] == [2, 1, 0]  # round(0.25 n), one kept in training
    assert _hold_out(labels, 0.25, seed=0) == (train_idx, held)


def test_presets_and_options() -> None:
    task = get_task("classifier")
    assert task.preset_names == ("small", "sc09") and set(classifier_presets()) == set(task.preset_names)
    official = SC09Classifier(task.model_config(classifier_presets()["sc09"], {}))
    assert official.num_parameters() == 34_425_546
    small = task.model_config(classifier_presets()["small"], {"labels": ["a", "b", "c"]})
    assert small.n_classes == 3 and small.labels == ["a", "b", "c"]
    unnamed = task.model_config(classifier_presets()["small"], {"n_classes": 4})
    assert unnamed.n_classes == 4 and unnamed.labels is None
    with pytest.raises(ValueError, match="depth"):
        resolve_config(TrainConfig(data="x", out="y", task="classifier", preset="small", model={"depth": 12}))


def test_data_errors_are_clear(tmp_path: Path) -> None:
    data = _tones(tmp_path / "data", 2, seed=6)
    base = {"data": str(data), "task": "classifier", "preset": "small", "steps": 1, "progress": False}
    with pytest.raises(ValueError, match="--labels high low mid"):  # 3 subfolders, the preset's 10 digits
        train(TrainConfig(out=str(tmp_path / "r1"), model={"num_samples": N, "labels": None}, **base))
    with pytest.raises(ValueError, match="not among the labels"):
        train(TrainConfig(out=str(tmp_path / "r2"), model={"num_samples": N}, **base))
    with pytest.raises(ValueError, match=r"no clips of the class\(es\) \['other'\]"):
        train(TrainConfig(out=str(tmp_path / "r3"), model={"num_samples": N, "labels": [*NAMES, "other"]}, **base))
    odd = _tones(tmp_path / "odd", 2, seed=6, sr=8000)
    with pytest.raises(ValueError, match="8000"):
        train(TrainConfig(out=str(tmp_path / "r4"), model={"num_samples": N, "labels": list(NAMES)},
                          **{**base, "data": str(odd), "resample": False}))
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r4").exists()  # nothing written
