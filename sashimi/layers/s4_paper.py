"""The January-2022 bidirectional S4 layer of the SaShiMi paper's diffusion checkpoints (diffwave-sashimi,
branch ``checkpoints``), kept to load and run those weights exactly.

It differs from :class:`~sashimi.layers.S4Block` (the ``master`` S4) in every respect that matters numerically:

* two independent kernels per layer (``kernel`` forward, ``kernel2`` backward), each a DPLR system
  ``A = diag(w) - p q^*`` whose ``w`` and ``[B; p]`` are shared by all channels and, like ``log_dt``, frozen
  (buffers); only ``C = [C; q]`` (per channel), ``D`` and the output linear train;
* no truncation correction: the kernel is the inverse FFT of the generating function at the ``l_max``-th
  roots of unity stored in the buffers ``nodes`` / ``z`` (float32 in the released files), i.e. the
  ``l_max``-periodic (aliased) kernel; it is cast to float32 as the official code does;
* the backward direction includes the current sample (``y2[n] = sum_{j<=l_max-1-n} k2[j] u[n+j]``);
* ``D`` is added to both directions, the two outputs are concatenated (2H channels), GELU, then a linear
  2H -> H without GLU.

The official code only works for inputs of length exactly ``l_max``; here a shorter input uses the first
L taps of both kernels (identical at L = l_max).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sashimi.kernels import cauchy
from sashimi.layers.s4block import check_sequence_input
from sashimi.layers.s4kernel import hippo_legs_dplr

__all__ = ["PaperS4Block", "PaperS4Kernel", "paper_fft_nodes"]


def paper_fft_nodes(L: int, dtype: torch.dtype = torch.complex64) -> tuple[torch.Tensor, torch.Tensor]:
    """The official FFT nodes ``omega_k = exp(-2 pi i / L)^k`` (k = 0..L/2), ``z_k = 2 (1 - omega_k) / (1 + omega_k)``.

    Computed as the official code does (a power of one root in ``dtype``; complex64 in the released
    checkpoints), so a freshly built layer holds the same buffers as a paper checkpoint.

    Returns:
        nodes (L/2+1,), z (L/2+1,) complex.
    """
    if isinstance(L, bool) or not isinstance(L, int) or L < 2 or L % 2:
        raise ValueError(f"L must be an even int >= 2, got {L!r}")
    root = torch.tensor(complex(math.cos(-2 * math.pi / L), math.sin(-2 * math.pi / L)), dtype=dtype)
    nodes = root ** torch.arange(0, L // 2 + 1)
    z = 2 * (1 - nodes) / (1 + nodes)
    return nodes, z


class PaperS4Kernel(nn.Module):
    """One direction's kernel of :class:`PaperS4Block`: length ``l_max`` from the stored FFT nodes.

    Buffers (as in the checkpoint): ``log_dt`` (H,), ``w`` (N/2, 2), ``B`` (2, N/2, 2) = [B; p],
    ``nodes`` and ``z`` (l_max/2 + 1, 2). Parameter: ``C`` (H, 2, N/2, 2) = [C; q]. Complex values are
    stored as real views (..., 2).

    Args:
        d_model: H.
        l_max: kernel length (the training length of the layer's tier).
        d_state: N (even).
        dt_min, dt_max: log-uniform dt range of the init.
    """

    def __init__(self, d_model: int, l_max: int, d_state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        for name, val in (("d_model", d_model), ("d_state", d_state)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if d_state % 2:
            raise ValueError(f"d_state must be even, got {d_state}")
        self.d_model, self.l_max, self.d_state = d_model, l_max, d_state
        lam, P, B = hippo_legs_dplr(d_state)  # (N/2,), (1, N/2), (N/2,)
        nodes, z = paper_fft_nodes(l_max)
        log_dt = torch.rand(d_model, dtype=torch.float64) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        # C ~ CN(0, 1) per channel, q = p (a stable A = diag(w) - p p^*)
        C = torch.randn(d_model, d_state // 2, dtype=torch.complex128)
        Cq = torch.stack([C, P[0].expand(d_model, -1)], dim=1)  # (H, 2, N/2)
        dtype = torch.get_default_dtype()
        self.register_buffer("log_dt", log_dt.to(dtype))
        self.register_buffer("w", torch.view_as_real(lam).to(dtype))
        self.register_buffer("B", torch.view_as_real(torch.stack([B, P[0]])).to(dtype))
        self.register_buffer("nodes", torch.view_as_real(nodes).to(dtype))
        self.register_buffer("z", torch.view_as_real(z).to(dtype))
        self.C = nn.Parameter(torch.view_as_real(Cq).to(dtype).contiguous())
        #: None, or a dict in which no-grad kernels are kept (set by :func:`sashimi.layers.cached_kernels`;
        #: the parameters must not change while it is set)
        self.kernel_cache: dict | None = None

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, l_max={self.l_max}, d_state={self.d_state}"

    def forward(self) -> torch.Tensor:
        """The kernel (H, l_max), float32 (the official cast), computed in the buffers' precision."""
        cache = self.kernel_cache
        if cache is not None and not torch.is_grad_enabled():
            key = (self.C.dtype, self.C.device)
            if key not in cache:
                cache[key] = self._compute()
            return cache[key]
        return self._compute()

    def _compute(self) -> torch.Tensor:
        real = torch.float64 if self.C.dtype == torch.float64 else torch.float32
        cplx = lambda t: torch.view_as_complex(t.to(real).contiguous())
        dt = torch.exp(self.log_dt.to(real))  # (H,)
        w, B, C = cplx(self.w), cplx(self.B), cplx(self.C)  # (N/2,), (2, N/2), (H, 2, N/2)
        nodes, z = cplx(self.nodes), cplx(self.z)  # (L',)
        v = B[None, None, :, :] * C[:, :, None, :].conj()  # (H, 2, 2, N/2): v[h, i, j] = B_j conj(C_hi)
        wd = (w * dt[:, None])[:, None, None, :]  # (H, 1, 1, N/2)
        r = cauchy(v, z, wd) * dt[:, None, None, None]  # (H, 2, 2, L'): resolvents at the nodes
        k_f = r[:, 0, 0] - r[:, 0, 1] * r[:, 1, 0] / (1 + r[:, 1, 1])  # rank-1 Woodbury, (H, L')
        k_f = k_f * 2 / (1 + nodes)  # bilinear transform
        return torch.fft.irfft(k_f, n=self.l_max).to(torch.float32)  # (H, l_max)


class PaperS4Block(nn.Module):
    """The paper checkpoints' bidirectional S4 layer (see the module docstring), on (B, L, H) sequences.

    Args:
        d_model: H.
        l_max: the tier's training length; inputs may be shorter (the kernels are truncated), not longer.
        d_state: N.
        dt_min, dt_max: dt init range.
    """

    def __init__(self, d_model: int, l_max: int, d_state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1) -> None:
        super().__init__()
        self.d_model, self.l_max = d_model, l_max
        self.kernel = PaperS4Kernel(d_model, l_max, d_state, dt_min, dt_max)
        self.kernel2 = PaperS4Kernel(d_model, l_max, d_state, dt_min, dt_max)
        self.D = nn.Parameter(torch.randn(d_model))
        self.output_linear = nn.Linear(2 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, H) -> (B, L, H), L <= l_max."""
        check_sequence_input(x, self.d_model, transposed=False)
        L = x.shape[1]
        if L > self.l_max:
            raise ValueError(
                f"input length {L} exceeds this paper-layout S4 layer's l_max={self.l_max} (its kernels are "
                f"computed at the stored length-{self.l_max} FFT nodes)"
            )
        u = x.transpose(1, 2)  # (B, H, L)
        # the kernels' FFTs run in float32, as in the official code (the product is in u's precision)
        k1f = torch.fft.rfft(self.kernel()[:, :L], n=2 * L)  # (H, L+1)
        k2f = torch.fft.rfft(self.kernel2()[:, :L].flip(-1), n=2 * L)  # (H, L+1)
        uf = torch.fft.rfft(u, n=2 * L)  # (B, H, L+1)
        y1 = torch.fft.irfft(uf * k1f.to(uf.dtype), n=2 * L)[..., :L]  # causal, (B, H, L)
        # anticausal, the current sample included
        y2 = torch.fft.irfft(uf * k2f.to(uf.dtype), n=2 * L)[..., L - 1 : 2 * L - 1]
        Du = self.D.unsqueeze(-1) * u  # (B, H, L)
        y = torch.cat([y1 + Du, y2 + Du], dim=1)  # (B, 2H, L)
        return self.output_linear(F.gelu(y).transpose(1, 2))  # (B, L, H)
