"""Hybrid generation (Hybrid-MAGNeT, Ziv et al. 2024): an autoregressive prefix, then masked decoding.

The first ``ar_tokens`` come from the autoregressive model's step program; the masked model then
decodes the rest in parallel with that prefix pinned as its prompt. Both models are used through
their public methods only (``lm.generate``, ``masked.generate``), so any pair with the same audio
tokens works.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["generate_hybrid"]


def generate_hybrid(
    lm: Any,
    masked: Any,
    num_tokens: int,
    ar_tokens: int,
    batch_size: int = 1,
    *,
    prompt: torch.Tensor | None = None,
    ar_temperature: float = 1.0,
    ar_top_p: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = True,
    **decode_kwargs: Any,
) -> Any:
    """AR prefix of ``ar_tokens`` tokens, then masked decoding of the remaining positions.

    Args:
        lm: autoregressive audio-token model (a SaShiMiLM): ``lm.generate(batch_size, num_samples,
            prompt=..., ...)`` returning ``.tokens`` (B, P), and ``lm.config.bits/quantization``.
        masked: masked model (a MaskedSaShiMi with K = 1 and the same quantization).
        num_tokens: T, total length (nonoverlap decoding trims it to a multiple of the span).
        ar_tokens: P, 1 <= P < T.
        batch_size: B.
        prompt: optional prompt of the AR part (see ``lm.generate``: (B, P0) tokens or waveform, P0 <= P).
        ar_temperature, ar_top_p: sampling of the AR part.
        generator: shared by both parts.
        progress: progress bar of the masked part.
        **decode_kwargs: passed to ``masked.generate`` (steps, temperature, top_p, labels, rescorer, ...).

    Returns:
        the masked model's generation output; its tokens (B, 1, T') start with the AR tokens exactly.
    """
    mc, lc = getattr(masked, "config", None), getattr(lm, "config", None)
    if getattr(mc, "n_codebooks", None) != 1 or getattr(mc, "quantization", None) is None:
        raise ValueError("generate_hybrid needs a masked model of audio tokens (n_codebooks=1 with a quantization)")
    if getattr(lc, "bits", None) is None or 2**lc.bits != mc.card or lc.quantization != mc.quantization:
        raise ValueError(
            f"the AR model's tokens ({getattr(lc, 'bits', None)} bits, {getattr(lc, 'quantization', None)}) differ "
            f"from the masked model's ({mc.card} classes, {mc.quantization})"
        )
    for name, v in (("num_tokens", num_tokens), ("ar_tokens", ar_tokens), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if ar_tokens >= num_tokens:
        raise ValueError(f"ar_tokens={ar_tokens} must be shorter than num_tokens={num_tokens}")
    ar = lm.generate(batch_size, ar_tokens, prompt=prompt, temperature=ar_temperature, top_p=ar_top_p,
                     generator=generator, progress=False)
    prefix = ar.tokens.unsqueeze(1)  # (B, 1, P)
    return masked.generate(batch_size, num_tokens, prompt=prefix, generator=generator, progress=progress,
                           **decode_kwargs)
