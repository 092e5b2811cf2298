"""Per-call choice of the compute backend for the kernels in :mod:`sashimi.kernels`.

Order of precedence: the ``backend=`` argument of a call, then the ``SASHIMI_BACKEND``
environment variable, then the automatic choice (Triton for CUDA tensors when Triton imports
and passes a tiny probe call, the pure-PyTorch path otherwise). Nothing here imports Triton
at module import time, and nothing warns.
"""

from __future__ import annotations

import functools
import os

import torch

BACKENDS = ("torch", "triton", "ref")


@functools.cache
def triton_importable() -> bool:
    """Whether the ``triton`` package imports (checked once, lazily)."""
    try:
        import triton
        import triton.language  # noqa: F401
    except Exception:
        return False
    return True


def triton_interpret() -> bool:
    """Whether Triton runs in interpreter mode (``TRITON_INTERPRET=1``), which works on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.cache
def _triton_probe(device_type: str) -> bool:
    """Run a tiny Triton kernel once per device type; cache whether it worked."""
    if not triton_importable():
        return False
    try:
        from sashimi.kernels.triton import probe

        return probe(device_type)
    except Exception:
        return False


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """The backends that can run on ``device`` (default: CUDA if present, else CPU).

    ``'torch'`` (memory-frugal PyTorch) and ``'ref'`` (dense reference spec) always work;
    ``'triton'`` is listed when Triton imports and a probe kernel runs on that device type
    (on CPU only under ``TRITON_INTERPRET=1``).
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = torch.device(device).type
    out = ["torch", "ref"]
    if (device_type == "cuda" or triton_interpret()) and _triton_probe(device_type):
        out.insert(0, "triton")
    return out


def resolve_backend(backend: str | None, *tensors: torch.Tensor) -> str:
    """Pick the backend for one call on ``tensors``."""
    if backend is None:
        backend = os.environ.get("SASHIMI_BACKEND") or None
    if backend is not None:
        backend = backend.lower()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "triton":
            device_type = tensors[0].device.type if tensors else "cpu"
            if device_type != "cuda" and not triton_interpret():
                raise RuntimeError(
                    "backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 to run the "
                    f"kernels in Triton's interpreter on {device_type} tensors"
                )
            if not _triton_probe(device_type):
                raise RuntimeError("backend='triton' was requested but Triton is not importable or failed its probe")
        return backend
    if tensors and tensors[0].device.type == "cuda" and _triton_probe("cuda"):
        return "triton"
    return "torch"
