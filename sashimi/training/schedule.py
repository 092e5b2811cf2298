"""Learning-rate schedules of the trainer: warmup x (cosine | plateau | constant)."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["SCHEDULES", "LRSchedule"]

SCHEDULES = ("plateau", "cosine", "constant")


class LRSchedule:
    """Learning-rate multiplier of every parameter group: warmup x (cosine | plateau | constant).

    Each group's rate is ``group['initial_lr'] * factor(step)``. Warmup: ``(step + 1) / warmup_steps``
    for the first ``warmup_steps`` steps. Cosine: from 1 down to ``min_ratio`` over the steps after the
    warmup. Plateau: :meth:`on_eval` multiplies the scale by ``factor`` when the metric has not improved
    (relative threshold 1e-4) for more than ``patience`` evaluations, never below ``min_ratio``.
    """

    def __init__(self, kind: str, total_steps: int, warmup_steps: int = 0, min_ratio: float = 0.0,
                 factor: float = 0.2, patience: int = 20, threshold: float = 1e-4) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
        self.kind, self.total, self.warmup = kind, total_steps, warmup_steps
        self.min_ratio, self.factor_, self.patience, self.threshold = min_ratio, factor, patience, threshold
        self.scale, self.best, self.bad = 1.0, math.inf, 0

    def factor(self, step: int) -> float:
        """The multiplier for the update that follows ``step`` completed steps."""
        f = 1.0
        if step < self.warmup:
            f = (step + 1) / self.warmup
        if self.kind == "cosine":
            span = max(1, self.total - self.warmup)
            t = min(1.0, max(0, step - self.warmup) / span)
            f *= self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        elif self.kind == "plateau":
            f *= self.scale
        return f

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        f = self.factor(step)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * f
        return f

    def on_eval(self, metric: float) -> None:
        if self.kind != "plateau" or not math.isfinite(metric):
            return
        if metric < self.best * (1 - self.threshold):
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.bad > self.patience:
                self.scale = max(self.min_ratio, self.scale * self.factor_)
                self.bad = 0

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale, self.best, self.bad = float(state["scale"]), float(state["best"]), int(state["bad"])
