"""The task interface on a family that is not a token model: dict batches, count-weighted metrics, task state
(an EMA of the weights) that survives an exact resume, and the log columns named after the task's metrics."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

from sashimi.data.datasets import DataPreset
from sashimi.training import DataSplits, Task, TrainConfig, TrainPreset, get_task, register_task, train
from sashimi.training.tasks.base import unwrap


@dataclass
class _Cfg:
    width: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Pairs(Dataset):
    """Deterministic (x (W,), y ()) pairs: y = x . w_true + 0.5."""

    def __init__(self, n: int, width: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, width, generator=g, dtype=torch.float64).float()
        self.y = self.x @ torch.arange(1.0, width + 1) + 0.5

    def __len__(self) -> int:
        return len(self.y)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {"x": torch.stack([it["x"] for it in items]), "y": torch.stack([it["y"] for it in items])}


@register_task
class _RegressionTask(Task):
    """Linear regression with an EMA of the weights saved beside the model (the DiffWave pattern)."""

    name: ClassVar[str] = "test-regression"
    model_type: ClassVar[str] = "test-linear"
    preset_names: ClassVar[tuple[str, ...]] = ("small",)
    metric: ClassVar[str] = "mse"
    train_metrics: ClassVar[tuple[str, ...]] = ("mse",)
    eval_metrics: ClassVar[tuple[str, ...]] = ("mse", "mae")

    def __init__(self) -> None:
        self.ema: dict[str, torch.Tensor] = {}

    def presets(self) -> Mapping[str, TrainPreset]:
        return {"small": TrainPreset({"width": 4}, DataPreset("folder", 0, "crop", minmax=False), 3, 0.5, "test")}

    def model_config(self, preset: TrainPreset, overrides: Mapping[str, Any]) -> _Cfg:
        return _Cfg(**{**preset.model, **overrides})

    def build_model(self, model_config: _Cfg) -> nn.Module:
        model = nn.Linear(model_config.width, 1)
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return model

    def save_model(self, model: nn.Module, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"model_type": self.model_type, "width": model.in_features}))
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
        save_file(self.ema, str(folder / "ema.safetensors"))

    def load_model(self, folder: Path) -> nn.Module:
        width = json.loads((folder / "config.json").read_text())["width"]
        model = nn.Linear(width, 1)
        model.load_state_dict(load_file(str(folder / "model.safetensors")))
        return model

    def datasets(self, cfg: Any, model_config: _Cfg, progress: bool) -> DataSplits:
        return DataSplits(_Pairs(10, model_config.width, cfg.seed), _Pairs(5, model_config.width, 99), "validation",
                          _collate, "10 pairs")

    def train_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mse = F.mse_loss(model(batch["x"]).squeeze(-1), batch["y"])
        return {"loss": mse, "mse": mse.detach(), "count": torch.tensor(len(batch["y"]))}

    def eval_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        err = unwrap(model)(batch["x"]).squeeze(-1) - batch["y"]
        return {"mse": float(err.pow(2).mean()), "mae": float(err.abs().mean()), "count": float(len(err))}

    def after_step(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            self.ema[k].mul_(0.9).add_(v.detach(), alpha=0.1)

    def state_dict(self) -> dict[str, Any]:
        return {"ema": {k: v.clone() for k, v in self.ema.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema = {k: v.clone() for k, v in state["ema"].items()}


def _cfg(tmp_path: Path, out: str, **kw: Any) -> TrainConfig:
    base = {"data": str(tmp_path), "out": str(tmp_path / out), "task": "test-regression", "preset": "small",
            "steps": 30, "eval_every": 10, "log_every": 1, "checkpoint_every": 0, "schedule": "cosine",
            "progress": False}
    return TrainConfig(**{**base, **kw})


def test_generic_loop_resumes_exactly_with_task_state(tmp_path: Path) -> None:
    full = train(_cfg(tmp_path, "full"))
    stopped = train(_cfg(tmp_path, "split", checkpoint_every=4), stop_at=13)  # mid-epoch: 10 items, batch 3
    assert stopped.step == 13
    resumed = train(_cfg(tmp_path, "split", checkpoint_every=4), resume=True)
    assert resumed.step == 30 and resumed.task == "test-regression"
    for name in ("model.safetensors", "ema.safetensors"):  # the weights and the task's EMA state
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "split" / name))
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    ema = load_file(str(tmp_path / "full" / "ema.safetensors"))
    weights = load_file(str(tmp_path / "full" / "model.safetensors"))
    assert not torch.equal(ema["weight"], weights["weight"])  # the EMA really lags the weights
    # metrics are count-weighted over unequal batches (5 eval items, batch 3): the mean over the items
    model = get_task("test-regression").load_model(tmp_path / "full")
    data = _Pairs(5, 4, 99)
    with torch.no_grad():
        err = model(data.x).squeeze(-1) - data.y
    assert full.eval_metrics["mse"] == pytest.approx(float(err.pow(2).mean()), rel=1e-6)
    assert full.eval_metrics["mae"] == pytest.approx(float(err.abs().mean()), rel=1e-6)
    assert full.eval_bits != full.eval_bits  # no token metric for this task (NaN)
    with (tmp_path / "full" / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "epoch", "lr", "train_mse", "grad_norm", "samples_per_s", "eval_mse", "eval_mae",
                             "eval_split", "elapsed_s"]
    evals = [float(r["eval_mse"]) for r in rows if r["eval_mse"]]
    assert len(evals) == 3 and evals[-1] < 0.25 * evals[0]  # it learns
    summary = json.loads((tmp_path / "full" / "train_summary.json").read_text())
    assert summary["task"] == "test-regression" and summary["best_eval_mse"] <= summary["eval_mse"] + 1e-12


def test_registry_refuses_duplicates_and_unknown_names() -> None:
    class Other(_RegressionTask):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_task(Other)
    with pytest.raises(ValueError, match="task must be one of"):
        get_task("no-such-task")
    with pytest.raises(TypeError, match="Task subclass"):
        register_task(int)


@register_task
class _InterruptedTask(_RegressionTask):
    """The regression task whose ``after_step`` receives Ctrl-C (SIGINT to itself) during step 5, i.e. after
    the optimizer updated the weights and before the step counter moved."""

    name: ClassVar[str] = "test-interrupted"
    updates = 0

    def after_step(self, model: nn.Module) -> None:
        super().after_step(model)
        type(self).updates += 1
        if type(self).updates == 5:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupt_during_an_update_waits_for_the_step_to_finish(tmp_path: Path) -> None:
    """Ctrl-C landing between the optimizer step and the step counter: the checkpoint is of step 5 with the
    weights after 5 steps (not labelled step 4 with step 5's weights), so resuming is exact."""
    train(_cfg(tmp_path, "full", steps=12, eval_every=0))
    _InterruptedTask.updates = 0
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tmp_path, "split", task="test-interrupted", steps=12, eval_every=0))
    state = torch.load(tmp_path / "split" / "checkpoints" / "step_00000005" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 5
    resumed = train(_cfg(tmp_path, "split", task="test-interrupted", steps=12, eval_every=0), resume=True)
    assert resumed.step == 12
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
