"""Pure-function SSM kernels: Cauchy and log-Vandermonde products and the S4 / S4D convolution kernel.

The recurrent side: :func:`diag_step` (one step of a diagonal SSM layer) and
:mod:`sashimi.kernels.native` (the state pass of streaming generation on CPU, a C kernel compiled on
first use, with a PyTorch specification).

Each op has a public function (shapes in its docstring), a dense ``*_ref`` specification used by
the tests, a memory-frugal PyTorch path, and a Triton path for CUDA tensors (``sashimi.kernels.triton``,
imported lazily). The backend is chosen per call: the ``backend=`` argument, else the
``SASHIMI_BACKEND`` environment variable, else Triton on CUDA when it works and PyTorch otherwise.
"""

from sashimi.kernels._backend import available_backends
from sashimi.kernels.cauchy import CauchyFn, cauchy, cauchy_ref
from sashimi.kernels.ssm import (
    bilinear,
    c_tilde,
    discretize_diag,
    dplr_matrix,
    full_pairs,
    ssm_kernel,
    ssm_kernel_ref,
)
from sashimi.kernels.vandermonde import (
    VandermondeFn,
    VandermondeTransposeFn,
    vandermonde,
    vandermonde_ref,
    vandermonde_transpose,
    vandermonde_transpose_ref,
)

__all__ = [
    "CauchyFn",
    "VandermondeFn",
    "VandermondeTransposeFn",
    "available_backends",
    "bilinear",
    "c_tilde",
    "cauchy",
    "cauchy_ref",
    "discretize_diag",
    "dplr_matrix",
    "full_pairs",
    "ssm_kernel",
    "ssm_kernel_ref",
    "vandermonde",
    "vandermonde_ref",
    "vandermonde_transpose",
    "vandermonde_transpose_ref",
]

# one recurrent step of a diagonal SSM layer (state update + output + D skip), see sashimi.kernels.step
from sashimi.kernels.step import diag_step, diag_step_ref

__all__ += ["diag_step", "diag_step_ref"]
