"""Optimizer parameter groups: SSM parameters get their own learning rate and no weight decay."""

from __future__ import annotations

from torch import nn

__all__ = ["param_groups"]


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0, ssm_lr: float = 1e-3) -> list[dict]:
    """Split ``model``'s trainable parameters into optimizer groups (the reference's recipe).

    * SSM parameters (S4 kernels' dt, A = Lambda, P, B: those carrying an ``_optim`` hint) get
      ``lr = ssm_lr`` (or the per-layer ``ssm_lr`` hint when one was set) and no weight decay.
    * Other matrices (ndim >= 2) get ``lr`` and ``weight_decay``.
    * Vectors and scalars (biases, norm scales, D) get ``lr`` and no weight decay.

    Returns:
        A list of dicts for ``torch.optim.AdamW(groups)``; empty groups are dropped. Each group
        has a ``name`` ('ssm', 'decay', 'no_decay') for logging.
    """
    ssm: dict[float, list[nn.Parameter]] = {}
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        hint = getattr(p, "_optim", None)
        if hint is not None:
            ssm.setdefault(hint.get("lr") or ssm_lr, []).append(p)
        elif p.ndim >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"name": "ssm", "params": ps, "lr": group_lr, "weight_decay": 0.0} for group_lr, ps in ssm.items()
    ]
    groups.append({"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay})
    groups.append({"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]
