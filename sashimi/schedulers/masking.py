"""Masking schedules of MAGNeT-style masked token models: tensors in, tensors out.

Training (Ziv et al. 2024; the official audiocraft solver): a mask rate ``p = cos(pi/2 u)`` with
``u ~ U(0, 1)`` per item; ``p`` is turned into a number of random span starts with a lookup table that
compensates for overlapping spans in expectation (:func:`span_starts_lut`), and each start masks
itself and the next ``span_len - 1`` tokens (:func:`span_mask`).

Decoding: step ``i`` of ``s`` has mask rate ``cos(pi/2 * linspace(0, 1, s)[i])``; the number of spans
re-masked is ``max(floor(rate * n_spans), 1)`` (:func:`decoding_schedule`); the classifier-free
guidance coefficient and the sampling temperature are annealed with it (:func:`decoding_steps`).
With the stride-1 arrangement the re-masked set is the union of the least probable overlapping
windows (:func:`least_probable_spans`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "DecodingStep",
    "cosine_mask_rate",
    "decoding_schedule",
    "decoding_steps",
    "least_probable_spans",
    "span_expected_rate",
    "span_mask",
    "span_starts_lut",
]

#: the lowest sampling temperature of the annealed schedule (the official floor)
MIN_TEMPERATURE = 0.01


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def cosine_mask_rate(u: torch.Tensor | float) -> torch.Tensor:
    """The cosine masking schedule ``p = cos(pi/2 * u)`` (float32 unless ``u`` is float64).

    Args:
        u: any shape, values in [0, 1] (0: everything masked, 1: nothing).

    Returns:
        p of the same shape (a 0-dim tensor for a float).
    """
    if not isinstance(u, torch.Tensor):
        if isinstance(u, bool) or not isinstance(u, (int, float)):
            raise TypeError(f"u must be a tensor or a number, got {type(u).__name__}")
        u = torch.tensor(float(u))
    if not u.is_floating_point():
        u = u.float()
    return torch.cos(u * math.pi * 0.5)


def span_starts_lut(T: int, span_len: int) -> torch.Tensor:
    """How many random span starts give each mask percentage 0..100 (the official lookup table).

    With ``n`` distinct starts drawn uniformly among T positions, each masking ``span_len`` tokens
    (truncated at the end), the expected masked fraction is ``1 - C(T - span_len, n) / C(T, n)``;
    entry m is the smallest n whose expected fraction reaches ``m / 100`` (computed in float64).

    Args:
        T: sequence length (>= 1). span_len: tokens per span (>= 1).

    Returns:
        LongTensor (101,).
    """
    expected = span_expected_rate(T, span_len)  # (T,)
    return torch.searchsorted(expected, torch.arange(101, dtype=torch.float64) / 100)


def span_expected_rate(T: int, span_len: int) -> torch.Tensor:
    """(T,) float64: the expected masked fraction for 0 .. T-1 random span starts (see :func:`span_starts_lut`)."""
    _check_int("T", T)
    _check_int("span_len", span_len)
    j = torch.arange(0, T - 1, dtype=torch.float64)
    # C(T - L, n) / C(T, n) = prod_{j < n} (T - L - j) / (T - j), a running product (overflow-safe)
    ratio = ((T - span_len - j) / (T - j)).clamp_min(0.0)  # (T - 1,)
    return torch.cat([torch.zeros(1, dtype=torch.float64), 1.0 - torch.cumprod(ratio, dim=0)])


def span_mask(
    batch: int,
    T: int,
    rate: torch.Tensor | float,
    span_len: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training masks: random (possibly overlapping) spans covering a fraction ``rate`` in expectation.

    ``n = max(lut[round(100 rate)], 1)`` starts per row, uniform without replacement among all T
    positions; each start masks itself and the next ``span_len - 1`` positions (truncated at T). With
    ``span_len == 1``, ``max(round(T rate), 1)`` single positions are masked.

    Args:
        batch: B. T: sequence length.
        rate: mask rate in [0, 1], a number or a (B,) tensor (one per row).
        span_len: tokens per span.
        generator: for the random starts.

    Returns:
        BoolTensor (B, T), True where masked.
    """
    _check_int("batch", batch)
    _check_int("T", T)
    _check_int("span_len", span_len)
    rate = torch.as_tensor(rate, dtype=torch.float64, device=device)
    if rate.ndim == 0:
        rate = rate.expand(batch)
    if rate.shape != (batch,):
        raise ValueError(f"rate must be a number or a tensor of shape ({batch},), got shape {tuple(rate.shape)}")
    if not torch.all((rate >= 0) & (rate <= 1)):
        raise ValueError("rate must lie in [0, 1]")
    # a uniform random permutation per row: the positions holding the n smallest entries are uniform
    perm = torch.rand(batch, T, generator=generator, device=rate.device).argsort(dim=-1)  # (B, T)
    if span_len == 1:
        n = (T * rate).round().clamp_min(1).long()  # (B,)
        return perm < n.unsqueeze(-1)
    lut = span_starts_lut(T, span_len).to(rate.device)
    n = lut[(100 * rate).round().long()].clamp_min(1)  # (B,)
    starts = perm < n.unsqueeze(-1)  # (B, T)
    # a position is masked when a start lies in the span_len positions up to it
    window = torch.nn.functional.pad(starts.float(), (span_len - 1, 0)).unfold(-1, span_len, 1)  # (B, T, L)
    return window.amax(dim=-1) > 0


@dataclass(frozen=True)
class DecodingStep:
    """One step of iterative decoding (see :func:`decoding_steps`).

    Attributes:
        mask_rate: ``cos(pi/2 t)`` at this step's time ``t`` (float32 arithmetic, as the official code).
        n_masked: spans (nonoverlap) or tokens (stride1) masked in the model's input at this step.
        cfg_coef: guidance coefficient ``rate * cfg_max + (1 - rate) * cfg_min``.
        temperature: ``max(temperature * (s - 1 - i) / s, 0.01)`` (or the constant temperature).
    """

    mask_rate: float
    n_masked: int
    cfg_coef: float
    temperature: float


def decoding_steps(
    n_units: int,
    steps: int,
    temperature: float = 3.0,
    cfg: tuple[float, float] = (10.0, 1.0),
    anneal_temperature: bool = True,
) -> list[DecodingStep]:
    """The per-step schedule of one decoding stage.

    Args:
        n_units: spans (nonoverlap) or tokens (stride1) to generate (prompt excluded), >= 1.
        steps: s >= 1.
        temperature: the initial sampling temperature (> 0).
        cfg: (coefficient at mask rate 1, coefficient at mask rate 0).
        anneal_temperature: decrease the temperature linearly to the floor 0.01 (official default).

    Returns:
        s :class:`DecodingStep`.
    """
    _check_int("n_units", n_units)
    _check_int("steps", steps)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    cfg_max, cfg_min = _check_cfg(cfg)
    rates = cosine_mask_rate(torch.linspace(0, 1, steps))  # (s,) float32
    out = []
    for i, r in enumerate(rates.tolist()):
        steps_left = steps - 1 - i
        tau = temperature * (steps_left / steps) if anneal_temperature else float(temperature)
        out.append(DecodingStep(
            mask_rate=r,
            n_masked=max(int(r * n_units), 1),
            cfg_coef=r * cfg_max + (1 - r) * cfg_min,
            temperature=max(tau, MIN_TEMPERATURE),
        ))
    return out


def _check_cfg(cfg: object) -> tuple[float, float]:
    if (not isinstance(cfg, (tuple, list)) or len(cfg) != 2
            or not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in cfg)):
        raise ValueError(f"cfg must be a pair of numbers (at mask rate 1, at mask rate 0), got {cfg!r}")
    return float(cfg[0]), float(cfg[1])


def decoding_schedule(T: int, steps: int, span_len: int, prompt_len: int = 0) -> torch.Tensor:
    """Tokens masked in the model input at each decoding step (nonoverlap spans).

    T is first trimmed to a multiple of ``span_len``; the ``prompt_len // span_len`` spans of the prompt
    are never masked. E.g. T=500, 20 steps, span 3: 498, 495, 489, ..., 39, 3.

    Returns:
        LongTensor (steps,).
    """
    _check_int("T", T)
    _check_int("span_len", span_len)
    _check_int("prompt_len", prompt_len, 0)
    n_spans = T // span_len - prompt_len // span_len
    if n_spans < 1:
        raise ValueError(
            f"nothing to decode: T={T} holds {T // span_len} spans of {span_len}, the prompt {prompt_len // span_len}"
        )
    return torch.tensor([s.n_masked * span_len for s in decoding_steps(n_spans, steps)], dtype=torch.long)


def least_probable_spans(scores: torch.Tensor, n_target: int, span_len: int) -> torch.Tensor:
    """Stride-1 span selection: the union of the least probable windows, close to ``n_target`` tokens.

    Windows of ``span_len`` consecutive tokens are ranked by their summed score (``-log p`` of their
    tokens; higher = less probable). The number u of top-ranked windows is chosen by the official
    bisection between ``n // span_len`` and ``n - span_len + 1`` (``n = max(n_target, span_len)``): a
    union above n tokens lowers the upper bound, else raises the lower; the last union tried is returned.

    Args:
        scores: (T,) per-token scores, T >= span_len.
        n_target: wanted number of masked tokens (>= 1).

    Returns:
        BoolTensor (T,).
    """
    if not isinstance(scores, torch.Tensor) or scores.ndim != 1:
        raise ValueError("scores must be a 1-D tensor of per-token scores")
    _check_int("n_target", n_target)
    _check_int("span_len", span_len)
    T = scores.shape[0]
    if T < span_len:
        raise ValueError(f"scores has {T} tokens, fewer than span_len={span_len}")
    order = scores.unfold(0, span_len, 1).sum(-1).argsort(descending=True)  # (T - L + 1,) windows, worst first
    n = max(n_target, span_len)

    def union(u: int) -> torch.Tensor:
        starts = torch.zeros(T, dtype=torch.bool, device=scores.device)
        starts[order[:u]] = True
        window = torch.nn.functional.pad(starts.float(), (span_len - 1, 0)).unfold(0, span_len, 1)
        return window.amax(-1) > 0

    lo, hi = n // span_len, n - span_len + 1
    mid = round(0.5 * (lo + hi))
    mask = union(mid)
    while lo < mid < hi:
        if int(mask.sum()) > n:
            hi = mid
        else:
            lo = mid
        mid = round(0.5 * (lo + hi))
        if lo < mid < hi:
            mask = union(mid)
    return mask
