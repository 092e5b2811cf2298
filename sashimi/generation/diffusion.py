"""The reverse-diffusion sampling loop, shared by every noise-predicting model (DiffWaveSaShiMi, DiffWave-WaveNet).

The loop sees the network only as a callable ``denoise(x_t, t) -> eps`` and the schedule only through
:class:`~sashimi.schedulers.noise.InferenceSchedule`::

    x = noise_0                                     # x_T ~ N(0, I), shape (B, ...)
    for i, t in enumerate(plan.timesteps):          # from the noisiest step down to step 0
        eps = denoise(x, t * ones(B))               # t float64, possibly fractional (lmnt's fast sampler)
        x = plan.step(i, eps, x, noise_i or None)   # noise only for steps with sigma > 0

Random draws happen in this order: the start ``x_T``, then one draw after each noisy step. With a
``torch.Generator`` seeded as ``torch.manual_seed(s)`` and float64, the draws equal the official code's
``torch.normal`` calls, so the official trajectory is reproduced from its seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["Denoiser", "NoiseSchedule", "sample"]

#: ``denoise(x_t (B, ...), t (B,) float64 diffusion steps) -> eps (B, ...)``
Denoiser = Callable[[Tensor, Tensor], Tensor]


class _Plan(Protocol):
    timesteps: Tensor  # (S,) float64, call order
    num_noises: int

    def __len__(self) -> int: ...

    def needs_noise(self, i: int) -> bool: ...

    def step(self, i: int, eps: Tensor, x_t: Tensor, noise: Tensor | None = None, *, clip: bool = False) -> Tensor: ...


class NoiseSchedule(Protocol):
    """What the loop needs of a scheduler (e.g. :class:`sashimi.schedulers.DDPMScheduler`)."""

    def inference_schedule(self, steps: str | int, sampler: str, eta: float) -> _Plan: ...


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, int) or not all(isinstance(s, int) and not isinstance(s, bool) for s in shape):
        raise TypeError(f"shape must be a sequence of ints such as (B, L), got {shape!r}")
    shape = tuple(shape)
    if len(shape) < 1 or any(s < 1 for s in shape):
        raise ValueError(f"shape must be (B, ...) with positive sizes, got {shape}")
    return shape


@torch.no_grad()
def sample(
    denoise: Denoiser,
    scheduler: NoiseSchedule,
    shape: Sequence[int],
    steps: Literal["full", "fast"] | int = "full",
    sampler: Literal["ddpm", "ddim"] = "ddpm",
    eta: float = 0.0,
    clip: bool = False,
    generator: torch.Generator | None = None,
    progress: bool = True,
    sample_rate: int = 16000,
    noises: Tensor | Sequence[Tensor] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Run the reverse diffusion from Gaussian noise to a sample of ``shape`` (B, L) (or (B, C, L)).

    Args:
        denoise: the noise predictor, called once per step as ``denoise(x_t, t)`` with ``x_t`` (B, ...) and
            ``t`` (B,) float64 on ``device``; returns ``eps`` of the shape of ``x_t``.
        scheduler: the training noise schedule (a :class:`~sashimi.schedulers.DDPMScheduler`).
        shape: (B, ...) of the sample.
        steps, sampler, eta: the inference schedule (see ``DDPMScheduler.inference_schedule``):
            ``"full"`` (the official sampler), ``"fast"`` (lmnt's), or an int number of steps; ``"ddpm"`` or ``"ddim"``.
        clip: clamp to [-1, 1] at every step (ancestral: the sample, as lmnt; DDIM: the predicted x0).
        generator: the source of every Gaussian draw (reproducible sampling).
        progress: a tqdm bar with steps/s and the real-time factor ``rtf`` (seconds of audio per second of
            compute, projected over the whole run, for ``B * L / sample_rate`` seconds of audio).
        sample_rate: samples per second of the audio, for the real-time factor.
        noises: the Gaussian draws to use instead of drawing: (num_noises, *shape) or a sequence of tensors of
            ``shape``, in draw order (``x_T`` first, then the noise of each noisy step); their count must be
            ``plan.num_noises``. They are cast to ``dtype``.
        dtype, device: of the sample (float64 for reference checks).

    Returns:
        The sample ``x_0`` of ``shape``, ``dtype``.
    """
    shape = _check_shape(shape)
    if not callable(denoise):
        raise TypeError(f"denoise must be callable as denoise(x_t, t) -> eps, got {type(denoise).__name__}")
    if not callable(getattr(scheduler, "inference_schedule", None)):
        raise TypeError(f"scheduler must be a noise scheduler such as DDPMScheduler, got {type(scheduler).__name__}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
    plan = scheduler.inference_schedule(steps, sampler, eta)
    if noises is not None:
        if len(noises) != plan.num_noises:
            raise ValueError(
                f"noises must hold {plan.num_noises} draws (x_T and one per noisy step of this "
                f"{len(plan)}-step {sampler} schedule), got {len(noises)}"
            )
        for k, n in enumerate(noises):
            if tuple(n.shape) != shape:
                raise ValueError(f"noises[{k}] must have shape {shape}, got {tuple(n.shape)}")
    draws = 0

    def draw() -> Tensor:
        nonlocal draws
        if noises is not None:
            z = noises[draws].to(device=device, dtype=dtype)
        else:
            z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        draws += 1
        return z

    x = draw()  # (B, ...) x_T
    batch = shape[0]
    seconds = batch * shape[-1] / sample_rate
    bar = tqdm(total=len(plan), desc=f"sampling ({sampler})", unit="step", leave=False, disable=not progress)
    start = time.perf_counter()
    for i in range(len(plan)):
        t = plan.timesteps[i].to(x.device).expand(batch)  # (B,) float64
        eps = denoise(x, t)
        if not isinstance(eps, Tensor) or eps.shape != x.shape:
            got = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
            raise ValueError(f"denoise must return eps of shape {tuple(x.shape)}, got {got}")
        x = plan.step(i, eps.to(dtype), x, draw() if plan.needs_noise(i) else None, clip=clip)
        if progress:
            elapsed = time.perf_counter() - start
            bar.update(1)
            projected = elapsed * len(plan) / (i + 1)
            bar.set_postfix(rtf=f"{seconds / projected:.3f}")
    bar.close()
    return x
