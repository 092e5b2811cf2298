"""The autoregressive generation loop: prefill, the step loop (through the flat step program of
:mod:`sashimi.generation.step_program` where it applies), inverse-CDF sampling, threads and progress.

It drives a token model through a small protocol (a :class:`~sashimi.models.SaShiMiLM` satisfies it):
``config`` (``bits``, ``quantization``, ``sample_rate``, ``zero_token``), ``init_state(B, device=,
mode=)``, ``step(tokens (B,), state) -> (logits (B, C), state)``, ``prefill(tokens (B, P), mode=) ->
(logits (B, P, C), state)``, ``shift_right``, ``_check_tokens``, and its ``encoder`` (embedding),
``backbone`` (a causal SaShiMi) and ``decoder`` (linear head).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sashimi._validate import check_int, check_number
from sashimi.audio import dequantize, quantize
from sashimi.generation import step_program
from sashimi.generation.sampling import Sampler, cpu_threads, sample_from

__all__ = ["PIPELINE_MIN_BATCH", "GenerationOutput", "generate"]

#: the smallest batch :func:`generate` pipelines on the CPU with ``num_threads > 1``: below
#: it a step's work is too small for the thread handoffs (measured on 2 cores, SC09 model: batch 1
#: 0.72 ms per step pipelined vs 0.64 inline, batch 8 0.95 vs 0.89, batch 16 1.13 vs 1.14, batch 32
#: 1.30 vs 1.66)
PIPELINE_MIN_BATCH = 16


@dataclass
class GenerationOutput:
    """Result of :func:`generate` (:meth:`SaShiMiLM.generate`).

    Attributes:
        waveform: (B, T) float32 in [-1, 1], decoded with the model's quantization.
        tokens: (B, T) int64.
        log_likelihood: (B,) float64: sum over all T tokens of log p(token | past) in nats, from the
            untempered model (the prompt's tokens included).
        sample_rate: Hz.
    """

    waveform: torch.Tensor
    tokens: torch.Tensor
    log_likelihood: torch.Tensor
    sample_rate: int

    @property
    def bits_per_sample(self) -> torch.Tensor:
        """(B,) negative log-likelihood per token in bits (the paper's NLL metric)."""
        return -self.log_likelihood / self.tokens.shape[1] / math.log(2)


@torch.no_grad()
def generate(
    lm: Any,
    batch_size: int,
    num_samples: int,
    prompt: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = True,
    mode: str = "auto",
    compile: bool = False,
    num_threads: int | None = 1,
) -> GenerationOutput:
    """Sample waveforms autoregressively from the token model ``lm`` in step mode.

    Args:
        batch_size: B.
        num_samples: T, total length including the prompt.
        prompt: optional (B, P) or (P,) int tokens or float waveform in [-1, 1] (quantized with
            the model's settings): the first P <= T output tokens.
        temperature: softmax temperature for sampling (> 0); the returned likelihood is untempered.
        top_p: nucleus sampling mass in (0, 1].
        generator: torch.Generator for reproducible sampling.
        progress: show a tqdm bar with samples/s and the real-time factor.
        mode: S4 step discretization (see :meth:`S4Block.init_state`).
        compile: compile each tier's per-sample step with ``torch.compile`` (slow to start:
            worth it for long generations).
        num_threads: CPU threads while generating (default 1; torch's setting is restored
            afterwards; None keeps it). With n > 1 and at least :data:`PIPELINE_MIN_BATCH`
            streams, the lower tiers of the step program (run when the top tier's pooling window
            closes) run in a second thread while the top tier goes on (exact: the UpPool is one
            window behind; see ``pipeline`` in :class:`sashimi.generation.step_program.FastStepper`).
            torch gets n - 1 intra-op threads, pipelined or not (a step's tensors are small:
            intra-op threading mostly adds synchronisation). The tokens do not depend on it.
            Ignored off the CPU.

    The sampling loop steps a flat program built once from the weights (see
    :mod:`sashimi.generation.step_program`: real arithmetic, no per-step validation); configurations it
    does not cover step with :meth:`step`. Sampling is by inverse CDF with the uniforms drawn
    from ``generator`` in blocks of steps (the same tokens for the same generator state).
    """
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                    or num_threads < 1):
        raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}")
    on_cpu = lm.decoder.weight.device.type == "cpu"
    threads = torch.get_num_threads() if num_threads is None else num_threads
    pipeline = on_cpu and threads > 1 and batch_size >= PIPELINE_MIN_BATCH
    # n - 1 intra-op threads, pipelined or not: a step's tensors are too small to share
    intra = None if num_threads is None and not pipeline else max(1, threads - 1)
    with cpu_threads(intra if on_cpu else None):
        return _generate(lm, batch_size, num_samples, prompt, temperature, top_p, generator, progress, mode,
                              compile, pipeline)

def _generate(
    lm: Any, batch_size: int, num_samples: int, prompt: torch.Tensor | None, temperature: float, top_p: float,
    generator: torch.Generator | None, progress: bool, mode: str, compile: bool, pipeline: bool = False,
) -> GenerationOutput:
    cfg = lm.config
    check_int(batch_size, "batch_size")
    check_int(num_samples, "num_samples")
    check_number(temperature, "temperature", low=0.0, low_open=True)
    check_number(top_p, "top_p", low=0.0, high=1.0, low_open=True)
    device = lm.decoder.weight.device
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device}, the model on {device}: "
                         f"use torch.Generator(device={device.type!r})")
    if prompt is not None and not isinstance(prompt, torch.Tensor):
        raise TypeError(f"prompt must be a tensor of tokens or a waveform, got {type(prompt).__name__}")
    tokens = torch.empty(batch_size, num_samples, dtype=torch.long, device=device)
    ll = torch.zeros(batch_size, dtype=torch.float64, device=device)
    start = 0
    if prompt is not None:
        p = prompt.unsqueeze(0) if prompt.ndim == 1 else prompt
        if p.is_floating_point():
            p = quantize(p, bits=cfg.bits, quantization=cfg.quantization)
        p = lm._check_tokens(p.to(device), 2, "prompt")
        if p.shape[0] == 1 and batch_size > 1:
            p = p.expand(batch_size, -1)
        if p.shape[0] != batch_size:
            raise ValueError(f"prompt has batch size {p.shape[0]}, expected 1 or batch_size={batch_size}")
        if p.shape[1] > num_samples:
            raise ValueError(f"prompt has {p.shape[1]} samples, longer than num_samples={num_samples}")
        start = p.shape[1]
        tokens[:, :start] = p
        logits, state = lm.prefill(lm.shift_right(p), mode=mode) if start > 1 else (None, None)
        if state is None:  # a one-token prompt: step the zero token
            state = lm.init_state(batch_size, device=device, mode=mode)
            logits = lm.step(torch.full((batch_size,), cfg.zero_token, device=device), state)[0].unsqueeze(1)
        logp = torch.log_softmax(logits.double(), dim=-1)  # (B, P, C)
        ll += logp.gather(-1, p.unsqueeze(-1)).squeeze(-1).sum(dim=1)
        if start == num_samples:
            return _output(lm, tokens, ll)
        logits, _ = lm.step(p[:, -1], state)  # logits of token `start`
    else:
        state = lm.init_state(batch_size, device=device, mode=mode)
        logits, _ = lm.step(torch.full((batch_size,), cfg.zero_token, device=device), state)

    emb, dec_w, dec_b = lm.encoder.weight, lm.decoder.weight, lm.decoder.bias
    # without a nucleus the step program also draws (inside its last unit; see FastStepper)
    draw = (emb, float(temperature)) if top_p >= 1.0 else None
    stepper = step_program.build(lm.backbone, state, compile=compile, pipeline=pipeline, decoder=(dec_w, dec_b),
                                 draw=draw)
    if stepper is None and compile:
        warnings.warn(
            "generate(compile=True) steps uncompiled: the fast step program does not cover this model "
            f"({step_program.unsupported_reason(lm.backbone, state)})", stacklevel=4,
        )
    sample = Sampler(batch_size, logits.shape[-1], temperature, top_p, generator, device)
    logp = torch.log_softmax(logits.double(), dim=-1)  # (B, C): the first draw's
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_samples - start, unit="step", desc="generating", leave=False)
    t0 = time.perf_counter()
    t = start
    x = None  # once the step program draws: the embedding of the last class drawn
    try:
        with torch.no_grad():
            while t < num_samples:
                i0 = sample.refill()  # uniforms for steps t .. t + n - 1 at block positions i0 ..
                n = min(sample.left(), num_samples - t, 256)  # the bar moves every 256 steps
                drawn = []
                for j in range(n):
                    u = sample.noise[i0 + j]  # (B,)
                    if x is not None:  # a step on the last class, then the draw of this one
                        nxt, x = stepper.step(x, u, ll)
                    else:
                        nxt = sample_from(logp, u, temperature, top_p)  # (B,)
                        ll += logp.gather(-1, nxt.unsqueeze(-1)).squeeze(-1)
                        if t + j + 1 < num_samples:
                            if stepper is None:
                                logp = torch.log_softmax(lm.step(nxt, state)[0].double(), dim=-1)
                            elif draw is not None:
                                x = F.embedding(nxt, emb)
                            else:  # log-probabilities straight from the step program
                                logp = stepper.step(F.embedding(nxt, emb))
                    drawn.append(nxt)
                tokens[:, t : t + n] = torch.stack(drawn, dim=1)
                sample.consume(n)
                t += n
                if bar is not None:
                    rate = (t - start) * batch_size / max(time.perf_counter() - t0, 1e-9)
                    bar.update(t - start - bar.n)
                    bar.set_postfix(samples_per_s=f"{rate:,.0f}", rtf=f"{rate / cfg.sample_rate:.3f}")
    finally:
        if stepper is not None:
            stepper.close()
        if bar is not None:
            bar.close()
    return _output(lm, tokens, ll)

def _output(lm: Any, tokens: torch.Tensor, ll: torch.Tensor) -> GenerationOutput:
    cfg = lm.config
    wav = dequantize(tokens.cpu(), bits=cfg.bits, quantization=cfg.quantization).float()
    return GenerationOutput(wav, tokens.cpu(), ll.cpu(), cfg.sample_rate)
