"""Triton kernels for the SSM convolution kernels: Cauchy and log-Vandermonde products and their gradients.

This subpackage is the only place that imports ``triton``; :mod:`sashimi.kernels` imports it lazily
(from the autograd wrappers :class:`~sashimi.kernels.CauchyFn`, :class:`~sashimi.kernels.VandermondeFn`
and :class:`~sashimi.kernels.VandermondeTransposeFn`, and from the backend probe), so ``import
sashimi`` never imports Triton. Triton has no complex type: complex tensors are passed as their
``torch.view_as_real`` float views and every kernel works on (real, imag) pairs.

Launchers (all take and return complex / real torch tensors; broadcast batch dims ``...``):

* :func:`cauchy_fwd` ``(v, z, w, out=None)``: ``sum_n v/(z - w) + conj(v)/(z - conj(w))``;
  :func:`cauchy_bwd` ``(v, z, w, grad, out=None) -> (dv, dw)``. Grid: (pole set, block of nodes
  / poles, block of numerator rows); the reciprocals of a tile are formed once in registers and
  reused by all numerator rows sharing the poles (batch dims along which ``w`` has stride 0, as
  in the DPLR kernel's (c + r, 1 + r, H, N/2) numerators against (H, N/2) poles). O(N + L) memory
  per row; nothing of size N x L reaches global memory.
* :func:`vandermonde_fwd` ``(v, x, L, out=None)``: ``2 Re sum_n v exp(x l)``;
  :func:`vandermonde_bwd` ``(v, x, grad) -> (dv, dx)``;
  :func:`vandermonde_transpose_fwd` ``(u, x, out=None)``: ``sum_l u exp(x l)``;
  :func:`vandermonde_transpose_bwd` ``(u, x, grad) -> (du, dx)``. Node powers use a two-level
  exponent ``z^(cT + j) = z^(cT) z^j``: ``z^j`` (j < T <= 64) from a small float64 host table,
  ``z^(cT)`` evaluated inside the kernel in float64, so the phase stays accurate for L up to
  2^24 even when the products run in float32.
* :func:`probe` ``(device_type) -> bool``: runs a tiny kernel on that device type and checks it.

Backward conventions follow PyTorch's complex autograd (conjugate Wirtinger): the functions return
exactly what ``torch.autograd`` gives for the dense ``*_ref`` specifications.

Testing on CPU: Triton's interpreter runs the kernels on CPU tensors when ``TRITON_INTERPRET=1``
is set *before this subpackage is first imported* (``triton.jit`` picks the interpreter at
decoration time). ``tests/kernels/test_triton.py`` therefore runs its checks in a subprocess with
``TRITON_INTERPRET=1 SASHIMI_BACKEND=triton``::

    python -m pytest tests/kernels/test_triton.py -q
    # or the checks directly, printing errors against the references:
    TRITON_INTERPRET=1 SASHIMI_BACKEND=triton python tests/kernels/test_triton.py --device cpu

On a CUDA machine the same test file also runs the checks on the GPU (compiled kernels).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sashimi.kernels.triton.cauchy import cauchy_bwd, cauchy_fwd
from sashimi.kernels.triton.vandermonde import (
    vandermonde_bwd,
    vandermonde_fwd,
    vandermonde_transpose_bwd,
    vandermonde_transpose_fwd,
)

# fused diagonal SSM step (state update in place + output + D skip), see sashimi.kernels.triton.step:
# diag_step_fwd(x, dA, dB, dC, u, D=None, *, two_re=True, out=None) -> y (B, C, H)
from sashimi.kernels.triton.step import diag_step_fwd

__all__ = [
    "cauchy_bwd",
    "cauchy_fwd",
    "probe",
    "vandermonde_bwd",
    "vandermonde_fwd",
    "vandermonde_transpose_bwd",
    "vandermonde_transpose_fwd",
]


@triton.jit
def _probe_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    tl.store(y_ptr + offs, 2.0 * x + 1.0, mask=mask)


def probe(device_type: str) -> bool:
    """Whether Triton kernels run on ``device_type`` ('cuda', or 'cpu' under ``TRITON_INTERPRET=1``).

    Launches a tiny kernel on a 10-element tensor and checks its result; never raises.
    """
    try:
        device = torch.device(device_type)
        if device.type == "cuda" and not torch.cuda.is_available():
            return False
        x = torch.arange(10, dtype=torch.float32, device=device)
        y = torch.full_like(x, float("nan"))
        _probe_kernel[(2,)](x, y, 10, BLOCK=8)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return bool(torch.equal(y.cpu(), 2 * x.cpu() + 1))
    except Exception:
        return False


__all__ += ["diag_step_fwd"]
