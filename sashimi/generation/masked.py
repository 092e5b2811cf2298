"""Iterative masked decoding (MAGNeT, Ziv et al. 2024), with optional exact-likelihood rescoring.

The streams (codebooks) are decoded one after another. A stage starts fully masked (except a pinned
prompt); at each of its steps the model predicts every position, the masked positions receive
sampled tokens, and the spans the model is least confident about are masked again for the next
step, fewer each time along the cosine schedule (:func:`sashimi.schedulers.decoding_steps`). Spans
that were kept once are never masked again.

The decoder sees the model only as a callable ``model(tokens, labels, stage) -> logits`` and the
rescorer only through ``rescorer(inputs) -> logits``, ``rescorer.shift_right`` and ``rescorer.config``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from sashimi.schedulers.masking import _check_cfg, decoding_steps, least_probable_spans

__all__ = ["DONT_REMASK", "SPAN_ARRANGEMENTS", "SPAN_SCORINGS", "masked_decode", "sample_top_p"]

#: the score of a span that must not be masked again (kept spans, the prompt)
DONT_REMASK = -1e4
SPAN_SCORINGS = ("max", "prod")
SPAN_ARRANGEMENTS = ("nonoverlap", "stride1")

#: ``model(tokens (B, K, T), labels (B,) or None, stage) -> logits (B, K, T, card)``
MaskedModelFn = Callable[[torch.Tensor, "torch.Tensor | None", int], torch.Tensor]


def sample_top_p(probs: torch.Tensor, top_p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Nucleus sampling: one draw per row from the smallest set of most likely classes reaching ``top_p``.

    A class is dropped when the mass of the classes ranked before it exceeds ``top_p`` (so the most
    likely class always stays); the draw is by inverse CDF over the kept classes in decreasing order of
    probability, with one uniform per row from ``generator`` (an exact draw from the renormalised nucleus).

    Args:
        probs: (..., C) probabilities. top_p: in (0, 1].

    Returns:
        LongTensor (...,).
    """
    sorted_p, idx = probs.sort(dim=-1, descending=True)  # (..., C)
    cdf = sorted_p.cumsum(dim=-1)  # (..., C)
    n_keep = (cdf - sorted_p <= top_p).sum(dim=-1, keepdim=True)  # (..., 1), >= 1
    mass = cdf.gather(-1, n_keep - 1)  # (..., 1): the nucleus's mass
    u = torch.rand(mass.shape, generator=generator, device=probs.device, dtype=mass.dtype)  # [0, 1)
    # the first kept class whose cumulative mass exceeds u * mass (clamped: rounding may not leave the nucleus)
    pick = (cdf <= u * mass).sum(dim=-1, keepdim=True).clamp_max(n_keep - 1)
    return idx.gather(-1, pick).squeeze(-1)


def _check_steps(steps: object, n_codebooks: int) -> tuple[int, ...]:
    if isinstance(steps, int) and not isinstance(steps, bool):
        steps = (steps,)
    if not isinstance(steps, (tuple, list)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in steps
    ):
        raise ValueError(f"steps must be a sequence of positive ints (one per stream), got {steps!r}")
    if len(steps) != n_codebooks:
        raise ValueError(f"steps has {len(steps)} entries but the model has n_codebooks={n_codebooks} streams")
    return tuple(steps)


def _check_rescorer(rescorer: Any, n_codebooks: int, card: int, quantization: str | None) -> None:
    if n_codebooks != 1:
        raise ValueError(f"rescoring needs a single token stream (K = 1 audio tokens), this model has K={n_codebooks}")
    if quantization is None:
        raise ValueError("rescoring needs audio tokens (a model with a quantization); this model has codec tokens")
    cfg = getattr(rescorer, "config", None)
    bits, quant = getattr(cfg, "bits", None), getattr(cfg, "quantization", None)
    if bits is None or quant is None or not callable(rescorer) or not hasattr(rescorer, "shift_right"):
        raise TypeError("rescorer must be an autoregressive token model (a SaShiMiLM) with config.bits/quantization")
    if 2**bits != card or quant != quantization:
        raise ValueError(
            f"rescorer tokens ({2**bits} classes, {quant}) differ from the masked model's ({card} classes, "
            f"{quantization}): both must use the same quantization"
        )


@torch.no_grad()
def masked_decode(
    model: MaskedModelFn,
    batch_size: int,
    num_tokens: int,
    *,
    n_codebooks: int,
    card: int,
    span_len: int = 3,
    steps: Sequence[int] | int = (20, 10, 10, 10),
    temperature: float = 3.0,
    top_p: float = 0.9,
    cfg: tuple[float, float] = (10.0, 1.0),
    labels: torch.Tensor | None = None,
    span_scoring: str = "max",
    span_arrangement: str = "nonoverlap",
    prompt: torch.Tensor | None = None,
    rescorer: Any = None,
    rescore_weight: float = 0.7,
    quantization: str | None = None,
    anneal_temperature: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    trace: list[dict] | None = None,
) -> torch.Tensor:
    """Fill ``num_tokens`` positions of K streams by iterative masked decoding.

    Args:
        model: ``model(tokens (B, K, T), labels, stage) -> logits (B, K, T, card)``; the mask id is
            ``card``; ``labels=None`` means unconditional.
        batch_size: B. num_tokens: T (nonoverlap: trimmed to a multiple of ``span_len``).
        n_codebooks: K. card: classes per stream. span_len: tokens per span.
        steps: decoding steps per stream (K entries).
        temperature: initial sampling temperature, annealed linearly to 0.01 in every stage.
        top_p: nucleus mass in (0, 1].
        cfg: guidance coefficient at mask rate 1 and 0 (used when ``labels`` is given: two passes,
            ``uncond + (cond - uncond) * coef``).
        labels: optional (B,) class labels.
        span_scoring: 'max' (``1 - max p`` over the span) or 'prod' (``sum -log p``).
        span_arrangement: 'nonoverlap' (fixed spans) or 'stride1' (least probable overlapping windows).
        prompt: optional (B, K, P) tokens pinned at the start (P < T); every stream is pinned.
        rescorer: optional autoregressive model of the same audio tokens (K = 1): each step, the
            probability of every candidate token is ``w p_rescorer + (1 - w) p_model`` before span
            scoring (one teacher-forced pass).
        rescore_weight: w in [0, 1].
        quantization: the token quantization of the model (None: codec tokens; rescoring needs it).
        anneal_temperature: False keeps ``temperature`` constant.
        generator: for the draws (the same tokens for the same generator state).
        device: of the tokens (default: CPU).
        progress: tqdm bar over all steps.
        trace: if a list, one dict per step is appended (stage, step, mask_rate, cfg_coef, temperature,
            n_masked (tokens masked in the first item's input), mask (B, T), tokens (B, T) after the step,
            probs (B, T) of the tokens used for scoring).

    Returns:
        LongTensor (B, K, T') of tokens in [0, card).
    """
    if not callable(model):
        raise TypeError(f"model must be callable as model(tokens, labels, stage), got {type(model).__name__}")
    for name, v in (("batch_size", batch_size), ("num_tokens", num_tokens), ("n_codebooks", n_codebooks),
                    ("card", card), ("span_len", span_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    steps = _check_steps(steps, n_codebooks)
    if span_scoring not in SPAN_SCORINGS:
        raise ValueError(f"span_scoring must be one of {SPAN_SCORINGS}, got {span_scoring!r}")
    if span_arrangement not in SPAN_ARRANGEMENTS:
        raise ValueError(f"span_arrangement must be one of {SPAN_ARRANGEMENTS}, got {span_arrangement!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    cfg = _check_cfg(cfg)
    if isinstance(rescore_weight, bool) or not isinstance(rescore_weight, (int, float)) or not 0 <= rescore_weight <= 1:
        raise ValueError(f"rescore_weight must be in [0, 1], got {rescore_weight!r}")
    if rescorer is not None:
        _check_rescorer(rescorer, n_codebooks, card, quantization)
    L = span_len
    chunked = span_arrangement == "nonoverlap"
    T = num_tokens // L * L if chunked else num_tokens
    if T < L:
        raise ValueError(f"num_tokens={num_tokens} is shorter than one span (span_len={L})")
    device = torch.device(device) if device is not None else torch.device("cpu")
    mask_id = card
    tokens = torch.full((batch_size, n_codebooks, T), mask_id, dtype=torch.long, device=device)  # (B, K, T)
    P = 0
    if prompt is not None:
        if not isinstance(prompt, torch.Tensor) or prompt.dtype.is_floating_point or prompt.dtype == torch.bool:
            raise TypeError("prompt must be an integer token tensor of shape (B, K, P)")
        if prompt.ndim != 3 or prompt.shape[0] != batch_size or prompt.shape[1] != n_codebooks:
            raise ValueError(f"prompt must have shape ({batch_size}, {n_codebooks}, P), got {tuple(prompt.shape)}")
        P = prompt.shape[2]
        if P >= T:
            raise ValueError(f"prompt length {P} leaves nothing to decode in T={T} tokens")
        if prompt.numel() and (int(prompt.min()) < 0 or int(prompt.max()) >= card):
            raise ValueError(f"prompt tokens must lie in [0, {card}) (the mask id {card} is not allowed)")
        tokens[..., :P] = prompt.to(device=device, dtype=torch.long)
    pinned = torch.arange(T, device=device) < P  # (T,)
    n_units = T // L if chunked else T
    n_prompt_units = P // L if chunked else P
    plans = [decoding_steps(n_units - n_prompt_units, s, temperature, cfg, anneal_temperature) for s in steps]
    bar = tqdm(total=sum(steps), desc="masked decoding", unit="step", disable=not progress)
    for k in range(n_codebooks):
        scores = torch.zeros(batch_size, n_units, device=device)  # (B, units)
        scores[:, :n_prompt_units] = DONT_REMASK
        stage = tokens[:, k].clone()  # (B, T)
        for i, plan in enumerate(plans[k]):
            if chunked:
                units = torch.zeros_like(scores, dtype=torch.bool).scatter(1, scores.topk(plan.n_masked).indices, True)
                mask = units.repeat_interleave(L, dim=1)  # (B, T)
            else:
                mask = torch.stack([least_probable_spans(s, plan.n_masked, L) for s in scores])  # (B, T)
            stage = stage.masked_fill(mask & ~pinned, mask_id)
            # every position holding the mask id is filled (at step 0, stride-1 windows need not cover all)
            mask = stage == mask_id  # (B, T)
            if not chunked:
                units = mask
            tokens[:, k] = stage
            logits = model(tokens, labels, k)[:, k].float()  # (B, T, card)
            if labels is not None:
                uncond = model(tokens, None, k)[:, k].float()
                logits = uncond + (logits - uncond) * plan.cfg_coef
            probs = torch.softmax(logits / plan.temperature, dim=-1)  # (B, T, card)
            stage = stage.masked_scatter(mask, sample_top_p(probs[mask], top_p, generator))  # draws where masked
            tokens[:, k] = stage
            p = probs.gather(-1, stage.unsqueeze(-1)).squeeze(-1)  # (B, T)
            if rescorer is not None:
                lp = torch.log_softmax(rescorer(rescorer.shift_right(stage)).float(), dim=-1)  # (B, T, card)
                p = rescore_weight * lp.gather(-1, stage.unsqueeze(-1)).squeeze(-1).exp() + (1 - rescore_weight) * p
            if chunked and span_scoring == "max":
                new = 1 - p.reshape(batch_size, n_units, L).amax(-1)
            elif chunked:
                new = (-torch.log(p)).reshape(batch_size, n_units, L).sum(-1)
            else:
                new = -torch.log(p)
            scores = new.masked_fill(~units, DONT_REMASK)
            if trace is not None:
                trace.append({
                    "stage": k, "step": i, "mask_rate": plan.mask_rate, "cfg_coef": plan.cfg_coef,
                    "temperature": plan.temperature, "n_masked": int(mask[0].sum()), "mask": mask.clone(),
                    "tokens": stage.clone(), "probs": p.clone(),
                })
            bar.update(1)
    bar.close()
    return tokens
