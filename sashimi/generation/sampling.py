"""Sampling from a model's distribution: inverse-CDF draws with temperature and nucleus (top-p), with the
uniforms drawn in blocks from a ``torch.Generator``; and the CPU-thread setting of a generation loop."""

from __future__ import annotations

import contextlib

import torch

__all__ = ["Sampler", "cpu_threads", "sample_from"]


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run with ``torch.set_num_threads(n)`` (None: unchanged), restoring the previous setting."""
    old = torch.get_num_threads()
    if n is not None and n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def sample_from(logp: torch.Tensor, u: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Inverse-CDF draws from (b, C) log-probabilities with one uniform ``u`` (b,) in [0, 1 - 2**-50)
    per row.

    With ``p = softmax(logp / temperature)`` (classes outside the nucleus, the smallest set of the
    most likely classes whose tempered mass reaches ``top_p``, set to 0; the most likely class always
    stays), the sample is the first class whose cumulative mass exceeds ``u * sum(p)``: an exact
    draw from ``p``.
    """
    probs = logp.exp() if temperature == 1.0 else torch.softmax(logp / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(dim=-1) - sorted_p >= top_p  # keeps the most likely class
        probs = probs.masked_fill(torch.zeros_like(drop).scatter(-1, idx, drop), 0.0)
    cdf = probs.cumsum(dim=-1)  # (b, C)
    # u < 1 - 2**-50 (see Sampler.refill): u * total stays below the total, so the first class whose
    # cumulative mass exceeds it exists and has a positive probability. It is the number of cumulative
    # masses at or below u * total (the CDF is nondecreasing: searchsorted's answer, as one reduction
    # that also fuses into the step program's compiled graph)
    return (cdf <= u.unsqueeze(-1) * cdf[:, -1:]).sum(dim=-1)


class Sampler:
    """Inverse-CDF sampling (:func:`sample_from`) with the uniforms for ``block`` steps drawn at once
    from ``generator`` (one call instead of a multinomial draw per step)."""

    def __init__(self, batch: int, classes: int, temperature: float, top_p: float,
                 generator: torch.Generator | None, device: torch.device, block: int = 4096) -> None:
        self.shape = (max(1, min(block, 2**20 // batch)), batch)  # at most 8 MB of uniforms
        self.temperature, self.top_p, self.generator = float(temperature), float(top_p), generator
        self.noise = torch.empty(self.shape, dtype=torch.float64, device=device)
        self.i = self.shape[0]

    def refill(self) -> int:
        """Draw a new block of uniforms if the current one is used up; the next unused position."""
        if self.i == self.shape[0]:
            # (block, B) in [0, 1 - 2**-50): a draw may not round up to the total mass
            self.noise.uniform_(generator=self.generator).mul_(1.0 - 2.0**-50)
            self.i = 0
        return self.i

    def left(self) -> int:
        """Unused steps of the current block."""
        return self.shape[0] - self.i

    def consume(self, n: int) -> None:
        self.i += n

    def __call__(self, logp: torch.Tensor) -> torch.Tensor:
        """The next samples of the whole batch."""
        i = self.refill()
        self.consume(1)
        return sample_from(logp, self.noise[i], self.temperature, self.top_p)
