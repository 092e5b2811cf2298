"""Diffusion noise schedules and reverse-process updates (DDPM ancestral, lmnt's fast sampler, DDIM).

Conventions follow the official DiffWave + SaShiMi code (``albertfgu/diffwave-sashimi``, ``utils.py``):
steps are 0-based, ``t in {0, ..., T-1}``, and the network receives ``t`` itself. With linear betas
``beta = linspace(beta_start, beta_end, T)``::

    alpha = 1 - beta,  alpha_bar[t] = prod_{s <= t} alpha[s]
    beta_tilde[0] = beta[0],  beta_tilde[t] = beta[t] (1 - alpha_bar[t-1]) / (1 - alpha_bar[t])
    sigma = sqrt(beta_tilde)

Forward process: ``x_t = sqrt(alpha_bar[t]) x_0 + sqrt(1 - alpha_bar[t]) eps``. The official ancestral update
(DDPM with the posterior variance) is::

    x_{t-1} = (x_t - (1 - alpha[t]) / sqrt(1 - alpha_bar[t]) * eps) / sqrt(alpha[t]) + sigma[t] z    (z only for t > 0)

All tables are float64; updates cast their coefficients to the dtype of the sample.

Inference schedules (:meth:`DDPMScheduler.inference_schedule`) generalise the update to a subsequence of
noise levels ``alpha_bar_s`` (S steps, ``s = S-1 .. 0``): per-step ``alpha_s = alpha_bar_s / alpha_bar_{s-1}``
(``alpha_bar_{-1} = 1``), the same ancestral formula, and noise of variance
``(1 - alpha_bar_{s-1}) / (1 - alpha_bar_s) * (1 - alpha_s)``:

* ``"full"``: the T training steps (the official sampler, bit for bit in float64);
* ``"fast"``: lmnt's DiffWave fast sampler: the noise levels of a short list of *inference betas*
  (default ``[1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5]``), the network told the fractional training step
  :meth:`DDPMScheduler.fast_timesteps` at which ``sqrt(alpha_bar)``, linearly interpolated between training
  steps, equals the inference level;
* an int ``N``: ``N`` training steps evenly spaced from ``T-1`` down to 0 (``round(linspace)``), ancestral
  over that subsequence ("respacing"); ``N = T`` is the full sampler;
* sampler ``"ddim"`` (Song et al., 2021) on the same ``N`` steps: ``x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)``,
  ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z`` with
  ``sigma = eta * sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))``: deterministic for ``eta = 0``,
  the respaced ancestral sampler for ``eta = 1``.

Clipping (off by default, as in the official code): the ancestral samplers clamp the sample to ``[-1, 1]``
after every step (lmnt's sampler does so); DDIM clamps its prediction of ``x0`` before forming ``x_prev``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from sashimi._validate import is_int as _is_int

__all__ = ["LMNT_FAST_BETAS", "DDPMScheduler", "InferenceSchedule", "Sampler", "Steps"]

#: lmnt DiffWave's ``inference_noise_schedule`` (``params.py``): the default betas of the 6-step fast sampler
LMNT_FAST_BETAS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 5e-2, 0.2, 0.5)

Steps = Literal["full", "fast"] | int
Sampler = Literal["ddpm", "ddim"]


def _check_prob(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")
    return value


def _gather(table: Tensor, index: Tensor, like: Tensor) -> Tensor:
    """``table[index]`` (index (B,) or ()) as a (B, 1, ..., 1) tensor broadcasting against ``like`` (B, ...)."""
    values = table.to(like.device)[index.to(like.device)].to(like.dtype)  # (B,) or ()
    if values.ndim == 0:
        return values
    return values.reshape(values.shape + (1,) * (like.ndim - 1))


def _check_sample(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


@dataclass(frozen=True)
class InferenceSchedule:
    """A reverse-diffusion plan of S steps, in call order (from the noisiest step down to step 0).

    Attributes (all float64, shape (S,)):
        sampler: ``"ddpm"`` (ancestral) or ``"ddim"``.
        timesteps: the (possibly fractional) training step given to the network at each call.
        alphas: per-step ``alpha_s = alpha_bar_s / alpha_bar_{s-1}`` of the ancestral update.
        alphas_cumprod: ``alpha_bar`` of the sample ``x_t`` entering each step.
        alphas_cumprod_prev: ``alpha_bar`` of the sample leaving each step (1 after the last).
        sigmas: standard deviation of the noise added by each step (0 where none is drawn).
    """

    sampler: str
    timesteps: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sigmas: Tensor

    def __len__(self) -> int:
        return int(self.timesteps.shape[0])

    def needs_noise(self, i: int) -> bool:
        """Whether step ``i`` (call order) adds fresh Gaussian noise."""
        return bool(self.sigmas[i] > 0)

    @property
    def num_noises(self) -> int:
        """Number of Gaussian draws of a whole trajectory: the start ``x_T`` plus one per noisy step."""
        return 1 + int((self.sigmas > 0).sum())

    def step(self, i: int, eps: Tensor, x_t: Tensor, noise: Tensor | None = None, *, clip: bool = False) -> Tensor:
        """One reverse step ``x_t -> x_prev`` (call-order index ``i``) given the predicted noise ``eps``.

        ``eps``, ``x_t``, ``noise``: (B, ...) of one shape and floating dtype; ``noise`` is required exactly when
        :meth:`needs_noise` is true. ``clip``: clamp to [-1, 1] (the sample for ``ddpm``, the predicted ``x0``
        for ``ddim``). Returns ``x_prev`` (B, ...), dtype of ``x_t``.
        """
        if not _is_int(i) or not 0 <= i < len(self):
            raise ValueError(f"i must be a step index in [0, {len(self)}), got {i!r}")
        _check_sample(x_t, "x_t")
        _check_sample(eps, "eps")
        if eps.shape != x_t.shape:
            raise ValueError(f"eps must have the shape of x_t {tuple(x_t.shape)}, got {tuple(eps.shape)}")
        if self.needs_noise(i):
            if noise is None:
                raise ValueError(f"step {i} adds noise (sigma={float(self.sigmas[i]):.4g}): pass noise")
            _check_sample(noise, "noise")
            if noise.shape != x_t.shape:
                raise ValueError(f"noise must have the shape of x_t {tuple(x_t.shape)}, got {tuple(noise.shape)}")
        elif noise is not None:
            raise ValueError(f"step {i} adds no noise (sigma = 0): noise must be None")
        alpha = self.alphas[i]
        abar = self.alphas_cumprod[i]
        abar_prev = self.alphas_cumprod_prev[i]
        sigma = self.sigmas[i]
        dt = x_t.dtype
        if self.sampler == "ddpm":
            # the official operation order: (x - (1 - alpha) / sqrt(1 - abar) * eps) / sqrt(alpha)
            c_eps = ((1 - alpha) / torch.sqrt(1 - abar)).to(dt)
            x = (x_t - c_eps * eps) / torch.sqrt(alpha).to(dt)
            if noise is not None:
                x = x + sigma.to(dt) * noise
            return x.clamp(-1.0, 1.0) if clip else x
        x0 = (x_t - torch.sqrt(1 - abar).to(dt) * eps) / torch.sqrt(abar).to(dt)
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
        c_dir = torch.sqrt((1 - abar_prev - sigma**2).clamp_min(0.0)).to(dt)
        x = torch.sqrt(abar_prev).to(dt) * x0 + c_dir * eps
        if noise is not None:
            x = x + sigma.to(dt) * noise
        return x


class DDPMScheduler:
    """Linear-beta DDPM noise schedule with float64 tables (defaults: the SC09 setting T=200, 1e-4 -> 0.02).

    Attributes (float64 tensors of shape (T,)): ``betas``, ``alphas``, ``alphas_cumprod``, ``sigmas``
    (square root of the posterior variance ``beta_tilde``, ``sigmas[0] = sqrt(beta[0])``).
    The vocoder setting of the official code is ``DDPMScheduler(50, 1e-4, 0.05)``.
    """

    def __init__(
        self,
        num_train_steps: int = 200,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        fast_betas: Sequence[float] = LMNT_FAST_BETAS,
    ) -> None:
        if not _is_int(num_train_steps):
            raise TypeError(f"num_train_steps must be an int, got {type(num_train_steps).__name__}")
        if num_train_steps < 2:
            raise ValueError(f"num_train_steps must be at least 2, got {num_train_steps}")
        self.num_train_steps = num_train_steps
        self.beta_start = _check_prob(beta_start, "beta_start")
        self.beta_end = _check_prob(beta_end, "beta_end")
        betas = torch.linspace(self.beta_start, self.beta_end, num_train_steps, dtype=torch.float64)  # (T,)
        alphas = 1 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        beta_tilde = betas.clone()
        beta_tilde[1:] = betas[1:] * (1 - alphas_cumprod[:-1]) / (1 - alphas_cumprod[1:])
        self.betas = betas
        self.alphas = alphas
        self.alphas_cumprod = alphas_cumprod
        self.sigmas = torch.sqrt(beta_tilde)
        self.fast_betas = self._check_betas(fast_betas, "fast_betas")

    def __repr__(self) -> str:
        return (
            f"DDPMScheduler(num_train_steps={self.num_train_steps}, beta_start={self.beta_start}, "
            f"beta_end={self.beta_end}, fast_betas={list(self.fast_betas.tolist())})"
        )

    # ---------------------------------------------------------------------------------- validation

    def _check_betas(self, betas: Sequence[float] | Tensor, name: str) -> Tensor:
        values = torch.as_tensor(betas, dtype=torch.float64).flatten() if not isinstance(betas, str) else None
        if values is None or values.numel() == 0:
            raise ValueError(f"{name} must be a non-empty sequence of betas in (0, 1), got {betas!r}")
        if not bool(((values > 0) & (values < 1)).all()):
            raise ValueError(f"{name} must lie in (0, 1), got {values.tolist()}")
        return values

    def _check_t(self, t: int | Tensor, batch: int | None, name: str = "t") -> Tensor:
        """Integer training steps as an int64 tensor () or (B,), each in [0, T)."""
        if _is_int(t):
            t = torch.tensor(t, dtype=torch.int64)
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be an int or an integer tensor, got {type(t).__name__}")
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer training steps, got dtype {t.dtype}")
        if t.ndim > 1:
            t = t.reshape(-1)
        if t.ndim == 1 and batch is not None and t.shape[0] != batch:
            raise ValueError(f"{name} must have shape ({batch},) (one step per example), got {tuple(t.shape)}")
        if t.numel():
            lo, hi = int(t.min()), int(t.max())
            if lo < 0 or hi >= self.num_train_steps:
                raise ValueError(f"{name} must lie in [0, {self.num_train_steps}), got values in [{lo}, {hi}]")
        return t.to(torch.int64)

    # ---------------------------------------------------------------------------------- training

    def add_noise(self, x0: Tensor, noise: Tensor, t: int | Tensor) -> Tensor:
        """Forward process ``x_t = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) noise``.

        ``x0``, ``noise``: (B, ...) floating, one shape; ``t``: int or (B,) integer steps in [0, T).
        Returns ``x_t`` (B, ...) in the dtype of ``x0``.
        """
        _check_sample(x0, "x0")
        _check_sample(noise, "noise")
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0 {tuple(x0.shape)}, got {tuple(noise.shape)}")
        t = self._check_t(t, x0.shape[0] if x0.ndim else None)
        a = _gather(torch.sqrt(self.alphas_cumprod), t, x0)  # (B, 1, ...)
        s = _gather(torch.sqrt(1 - self.alphas_cumprod), t, x0)
        return a * x0 + s * noise.to(x0.dtype)

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """``batch`` training steps drawn uniformly from [0, T) as an int64 tensor (B,)."""
        if not _is_int(batch) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        return torch.randint(self.num_train_steps, (batch,), generator=generator, device=device)

    # ---------------------------------------------------------------------------------- sampling

    def step(
        self,
        eps: Tensor,
        t: int | Tensor,
        x_t: Tensor,
        noise: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        clip: bool = False,
    ) -> Tensor:
        """The official ancestral update from training step ``t`` (int or (B,) integers) to ``t - 1``.

        ``eps``, ``x_t``: (B, ...); ``noise`` (B, ...) is added with weight ``sigmas[t]`` where ``t > 0``
        (drawn with ``generator`` when None); ``clip`` clamps the result to [-1, 1] (lmnt). Returns ``x_prev``.
        """
        _check_sample(x_t, "x_t")
        _check_sample(eps, "eps")
        if eps.shape != x_t.shape:
            raise ValueError(f"eps must have the shape of x_t {tuple(x_t.shape)}, got {tuple(eps.shape)}")
        t = self._check_t(t, x_t.shape[0] if x_t.ndim else None)
        dt = x_t.dtype
        c_eps = _gather((1 - self.alphas) / torch.sqrt(1 - self.alphas_cumprod), t, x_t)
        x = (x_t - c_eps * eps) / _gather(torch.sqrt(self.alphas), t, x_t)
        if bool((t > 0).any()):
            if noise is None:
                noise = torch.randn(x_t.shape, generator=generator, dtype=dt, device=x_t.device)
            _check_sample(noise, "noise")
            if noise.shape != x_t.shape:
                raise ValueError(f"noise must have the shape of x_t {tuple(x_t.shape)}, got {tuple(noise.shape)}")
            sigma = _gather(torch.where(torch.arange(self.num_train_steps) > 0, self.sigmas, 0.0), t, x_t)
            x = x + sigma * noise
        return x.clamp(-1.0, 1.0) if clip else x

    def fast_timesteps(self, inference_betas: Sequence[float] | Tensor | None = None) -> Tensor:
        """lmnt's alignment of inference noise levels to fractional training steps (float64, (S,), s = 0..S-1).

        For ``alpha_bar_inf = cumprod(1 - inference_betas)``, step ``s`` maps to ``t + f`` where
        ``alpha_bar[t+1] <= alpha_bar_inf[s] <= alpha_bar[t]`` and
        ``f = (sqrt(alpha_bar[t]) - sqrt(alpha_bar_inf[s])) / (sqrt(alpha_bar[t]) - sqrt(alpha_bar[t+1]))``.
        ``inference_betas`` defaults to :attr:`fast_betas`; every level must lie within the training range.
        """
        betas = self.fast_betas if inference_betas is None else self._check_betas(inference_betas, "inference_betas")
        abar_inf = torch.cumprod(1 - betas, dim=0)  # (S,)
        abar = self.alphas_cumprod  # (T,) decreasing
        tol = 1e-12
        outside = (abar_inf > abar[0] + tol) | (abar_inf < abar[-1] - tol)
        if bool(outside.any()):
            raise ValueError(
                f"inference_betas give alpha_bar {abar_inf[outside].tolist()} outside the training range "
                f"[{float(abar[-1]):.6g}, {float(abar[0]):.6g}] of this scheduler"
            )
        root = torch.sqrt(abar)  # (T,) decreasing
        target = torch.sqrt(abar_inf.clamp(float(abar[-1]), float(abar[0])))  # (S,)
        # t = the last training step whose sqrt(alpha_bar) is >= the target (searchsorted on the increasing flip)
        count_ge = self.num_train_steps - torch.searchsorted(root.flip(0), target, side="left")  # (S,)
        t = (count_ge - 1).clamp(0, self.num_train_steps - 2)
        frac = (root[t] - target) / (root[t] - root[t + 1])
        return t.to(torch.float64) + frac

    def inference_schedule(
        self, steps: Steps = "full", sampler: Sampler = "ddpm", eta: float = 0.0
    ) -> InferenceSchedule:
        """The reverse-process plan for ``steps`` (``"full"``, ``"fast"`` or an int N) and ``sampler``.

        ``"ddpm"`` with ``"full"`` is the official sampler; with ``"fast"`` lmnt's fast sampler on
        :attr:`fast_betas`; with N the ancestral sampler on N evenly spaced training steps. ``"ddim"`` takes
        ``"full"`` (N = T) or N, and ``eta`` >= 0 (0: deterministic). See the module docstring for the formulas.
        """
        if sampler not in ("ddpm", "ddim"):
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or eta < 0:
            raise ValueError(f"eta must be a finite float >= 0, got {eta!r}")
        if sampler == "ddpm" and eta != 0.0:
            raise ValueError("eta applies to sampler='ddim' only (the ddpm sampler's noise is fixed)")
        T = self.num_train_steps
        if steps == "fast":
            if sampler == "ddim":
                raise ValueError(
                    "steps='fast' is lmnt's ancestral sampler: use sampler='ddpm' or an int number of steps"
                )
            alphas = (1 - self.fast_betas).flip(0)  # (S,) call order
            abar = torch.cumprod(1 - self.fast_betas, dim=0).flip(0)
            timesteps = self.fast_timesteps().flip(0)
        elif steps == "full" or (_is_int(steps) and steps == T and sampler == "ddpm"):
            timesteps = torch.arange(T - 1, -1, -1, dtype=torch.float64)
            alphas = self.alphas.flip(0)
            abar = self.alphas_cumprod.flip(0)
        elif _is_int(steps):
            if not 1 <= steps <= T:
                raise ValueError(f"steps must be 'full', 'fast' or an int in [1, {T}], got {steps}")
            idx = torch.linspace(T - 1, 0, steps, dtype=torch.float64).round().to(torch.int64)  # (S,) descending
            timesteps = idx.to(torch.float64)
            abar = self.alphas_cumprod[idx]
            alphas = abar / torch.cat([abar[1:], abar.new_ones(1)])
        else:
            raise ValueError(f"steps must be 'full', 'fast' or an int in [1, {T}], got {steps!r}")
        abar_prev = torch.cat([abar[1:], abar.new_ones(1)])  # (S,) 1 after the last step
        if sampler == "ddpm":
            if steps == "full" or (_is_int(steps) and steps == T):
                sigmas = torch.cat([self.sigmas.flip(0)[:-1], abar.new_zeros(1)])  # the official table
            else:
                sigmas = torch.sqrt((1 - alphas) * (1 - abar_prev) / (1 - abar))
                sigmas[-1] = 0.0
        else:
            sigmas = eta * torch.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
            sigmas[-1] = 0.0
        return InferenceSchedule(
            sampler=sampler,
            timesteps=timesteps,
            alphas=alphas,
            alphas_cumprod=abar,
            alphas_cumprod_prev=abar_prev,
            sigmas=sigmas,
        )
