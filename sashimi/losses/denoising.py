"""The denoising (eps-prediction) loss of DDPM / DiffWave training.

For clean audio ``x0`` (B, ...), one training step per example ``t ~ U{0, ..., T-1}`` and ``z ~ N(0, I)``::

    x_t = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) z
    loss = mean((eps_model(x_t, t[, mel]) - z)^2)        # "mse": the official DiffWave + SaShiMi loss
    loss = mean(|eps_model(x_t, t[, mel]) - z|)          # "l1": lmnt's DiffWave

No weighting over ``t``. The model is seen only as a callable; the scheduler only through ``add_noise`` and
``sample_timesteps`` (e.g. :class:`sashimi.schedulers.DDPMScheduler`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["denoising_loss"]


class _Forward(Protocol):
    def add_noise(self, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor: ...

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor: ...


def denoising_loss(
    eps_model: Callable[..., Tensor],
    x0: Tensor,
    scheduler: _Forward,
    mel: Tensor | None = None,
    loss: Literal["mse", "l1"] = "mse",
    generator: torch.Generator | None = None,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
) -> Tensor:
    """Mean eps-prediction loss over all elements, a scalar tensor.

    Args:
        eps_model: ``eps_model(x_t, t)`` (or ``eps_model(x_t, t, mel)`` when ``mel`` is given) with ``x_t`` of the
            shape of ``x0`` and ``t`` (B,) int64; returns eps of the shape of ``x0``.
        x0: clean audio (B, L) or (B, 1, L), floating.
        scheduler: the noise schedule (``add_noise``, ``sample_timesteps``).
        mel: conditioning features (B, n_mels, frames), passed through to ``eps_model``.
        loss: ``"mse"`` (official) or ``"l1"`` (lmnt).
        generator: draws ``t`` and the noise (reproducible training).
        t: (B,) integer steps to use instead of drawing them (for checks against recorded values).
        noise: the noise (shape of ``x0``) to use instead of drawing it.
    """
    if loss not in ("mse", "l1"):
        raise ValueError(f"loss must be 'mse' or 'l1', got {loss!r}")
    if not isinstance(x0, Tensor) or not x0.is_floating_point():
        got = x0.dtype if isinstance(x0, Tensor) else type(x0).__name__
        raise TypeError(f"x0 must be a floating-point tensor (B, L) or (B, 1, L), got {got}")
    if x0.ndim < 2:
        raise ValueError(f"x0 must have a batch dimension, shape (B, L) or (B, 1, L), got {tuple(x0.shape)}")
    batch = x0.shape[0]
    if t is None:
        t = scheduler.sample_timesteps(batch, generator=generator, device=x0.device)  # (B,)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_t = scheduler.add_noise(x0, noise, t)  # validates t and the noise shape
    t = t.reshape(batch).to(device=x0.device, dtype=torch.int64)  # (B,)
    eps = eps_model(x_t, t) if mel is None else eps_model(x_t, t, mel)
    if not isinstance(eps, Tensor) or eps.shape != x0.shape:
        got = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
        raise ValueError(f"eps_model must return eps of the shape of x0 {tuple(x0.shape)}, got {got}")
    target = noise.to(eps.dtype)
    return F.mse_loss(eps, target) if loss == "mse" else F.l1_loss(eps, target)
