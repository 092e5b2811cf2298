"""One recurrent step of a diagonal SSM layer: state update, output contraction and D skip."""

from __future__ import annotations

import torch

from sashimi.kernels._backend import resolve_backend

__all__ = ["diag_step", "diag_step_ref"]


def _fits(shape, target: tuple) -> bool:
    """Whether ``shape`` broadcasts to exactly ``target``."""
    try:
        return tuple(torch.broadcast_shapes(tuple(shape), target)) == tuple(target)
    except RuntimeError:
        return False


def _validate(x, dA, dB, dC, u, D) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_complex() or x.ndim != 3:
        got = f"{x.dtype} of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a complex (B, H, M) state tensor, got {got}")
    B, H, M = x.shape
    for name, t, shape in (("dA", dA, (H, M)), ("dB", dB, (H, M)), ("dC", dC, None)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} must have the state's dtype {x.dtype}, got {t.dtype}")
        if shape is not None and not _fits(t.shape, shape):
            raise ValueError(f"{name} must have shape (H, M) = {shape}, got {tuple(t.shape)}")
    if dC.ndim != 3 or dC.shape[1:] != (H, M):
        raise ValueError(f"dC must have shape (C, H, M) with (H, M) = {(H, M)}, got {tuple(dC.shape)}")
    if not isinstance(u, torch.Tensor) or not u.is_floating_point():
        raise TypeError(f"u must be a real floating (B, H) tensor, got {getattr(u, 'dtype', type(u).__name__)}")
    if u.ndim != 2 or not _fits(u.shape, (B, H)):
        raise ValueError(f"u must have shape (B, H) = {(B, H)}, got {tuple(u.shape)}")
    if D is not None:
        if not isinstance(D, torch.Tensor) or not D.is_floating_point():
            raise TypeError(
                f"D must be a real floating (C, H) tensor or None, got {getattr(D, 'dtype', type(D).__name__)}"
            )
        C = dC.shape[0]
        if D.ndim > 2 or not _fits(D.shape, (C, H)):
            raise ValueError(f"D must have shape (C, H) = {(C, H)}, got {tuple(D.shape)}")
    for name, t in (("dA", dA), ("dB", dB), ("dC", dC), ("u", u), ("D", D)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, the state x on {x.device}")


def _resolve_traced(backend: str | None, device_type: str) -> str:
    """:func:`resolve_backend` for a tensor on ``device_type``, evaluated once while ``torch.compile`` traces.

    ``resolve_backend`` caches its probe with ``functools.lru_cache``, which Dynamo cannot trace; this
    function is marked as having a constant result, so Dynamo calls it eagerly and bakes the answer
    (a string) into the graph: the backend of a compiled graph is fixed when it is traced.
    """
    return resolve_backend(backend, torch.empty(0, device=device_type))


# The marker torch.compiler.assume_constant_result(fn) sets, set directly so that importing sashimi
# does not import torch._dynamo (tests/kernels/test_library.py checks that the two agree).
_resolve_traced._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _resolve(backend: str | None, x: torch.Tensor) -> str:
    if torch.compiler.is_compiling():
        return _resolve_traced(backend, x.device.type)
    return resolve_backend(backend, x)


def diag_step_ref(
    x: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, dC: torch.Tensor, u: torch.Tensor,
    D: torch.Tensor | None = None, two_re: bool = True,
) -> torch.Tensor:
    """Plain specification of :func:`diag_step` (out-of-place update copied into ``x``, a loop over channels)."""
    real = x.real.dtype
    u = u.to(real)
    x_new = dA * x + dB * u.unsqueeze(-1)  # (B, H, M)
    ys = [(dC[c] * x_new).sum(-1).real for c in range(dC.shape[0])]  # C x (B, H)
    y = torch.stack(ys, dim=1) if ys else x.real.new_zeros(x.shape[0], 0, x.shape[1])  # (B, C, H)
    if two_re:
        y = 2 * y
    if D is not None:
        y = y + D.to(real) * u.unsqueeze(1)
    x.copy_(x_new)
    return y


def _diag_step_torch(x, dA, dB, dC, u, D, two_re):
    """The ``'diagonal'`` branch of :func:`sashimi.layers.s4block.ssm_step` and the block's D skip, op for op."""
    u = u.to(x.real.dtype)
    uc = u.unsqueeze(-1)  # (B, H, 1)
    x.mul_(dA).add_(dB * uc)
    y = (dC[0] * x).sum(-1).unsqueeze(1) if dC.shape[0] == 1 else torch.einsum("chn,bhn->bch", dC, x)
    y = 2 * y.real if two_re else y.real
    if D is not None:
        y = y + D.to(u.dtype) * u.unsqueeze(1)
    return y


def diag_step(
    x: torch.Tensor,
    dA: torch.Tensor,
    dB: torch.Tensor,
    dC: torch.Tensor,
    u: torch.Tensor,
    D: torch.Tensor | None = None,
    *,
    two_re: bool = True,
    backend: str | None = None,
) -> torch.Tensor:
    """One step of a diagonal SSM with a batch of states; updates ``x`` in place.

    ``x <- dA * x + dB * u[..., None]`` then
    ``y[b, c, h] = s * Re(sum_n dC[c, h, n] x[b, h, n]) + D[c, h] u[b, h]`` with ``s = 2`` when
    ``two_re`` (S4D: the state holds one member of each conjugate pair) else 1 (an eigendecomposed
    DPLR state). The output is read after the update. This is the ``'diagonal'`` mode of
    :func:`sashimi.layers.s4block.ssm_step` followed by the block's D skip; with
    ``consts = state.consts``, ``diag_step(state.x, consts["dA"], consts["dB"], consts["dC"], u,
    block.D, two_re=consts.two_re)`` replaces both.

    Args:
        x: (B, H, M) complex64 / complex128 state, updated in place.
        dA, dB: (H, M) complex, x's dtype (broadcastable to (H, M)).
        dC: (C, H, M) complex, x's dtype.
        u: (B, H) real input; cast to x's real precision.
        D: optional (C, H) real skip weights (cast likewise); None for no skip.
        two_re: output scale 2 (conjugate-pair S4D state, the default) or 1.
        backend: ``'torch'``, ``'triton'`` (one fused kernel launch) or ``'ref'``; default per call
            (``SASHIMI_BACKEND``, else Triton for CUDA tensors when it works). The Triton kernel
            has no backward: when autograd needs gradients through the step (grad mode on and an
            input requiring grad), the PyTorch path runs instead. Under ``torch.compile`` the
            Triton path goes through the registered op ``torch.ops.sashimi.diag_step``
            (:mod:`sashimi.kernels._library`) so it traces without graph breaks.

    Returns:
        y: (B, C, H) real, x's real precision.
    """
    _validate(x, dA, dB, dC, u, D)
    which = _resolve(backend, x)
    if which == "ref":
        return diag_step_ref(x, dA, dB, dC, u, D, two_re)
    if which == "triton" and not (
        torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, dA, dB, dC, u, D))
    ):
        if torch.compiler.is_compiling():
            from sashimi.kernels._library import ops

            return ops().diag_step(x, dA, dB, dC, u.to(x.real.dtype), D, bool(two_re))
        from sashimi.kernels.triton.step import diag_step_fwd

        return diag_step_fwd(x, dA, dB, dC, u, D, two_re=bool(two_re))
    return _diag_step_torch(x, dA, dB, dC, u, D, two_re)
