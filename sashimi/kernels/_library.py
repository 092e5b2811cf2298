"""The Triton kernels as ``torch.library`` custom operators, so ``torch.compile`` can trace through them.

Importing this module (never done by ``import sashimi``; it imports Triton) registers, in the
``sashimi`` namespace, with :func:`torch.library.triton_op`:

==========================================  ==================================================  =========
op                                          computes (see the launchers in sashimi.kernels.triton)  autograd
==========================================  ==================================================  =========
``cauchy_fwd(v, z, w) -> out``              ``sum_n v/(z - w) + conj(v)/(z - conj w)``          v, w
``cauchy_bwd(v, z, w, grad) -> (dv, dw)``   its vector-Jacobian product                          -
``vandermonde_fwd(v, x, L) -> out``         ``2 Re sum_n v exp(x l)``                            v, x
``vandermonde_bwd(v, x, grad) -> (dv, dx)``                                                      -
``vandermonde_transpose_fwd(u, x) -> out``  ``sum_l u exp(x l)``                                 u, x
``vandermonde_transpose_bwd(u, x, grad)``   ``-> (du, dx)``                                      -
``diag_step(x!, dA, dB, dC, u, D?, two_re)``  fused diagonal SSM step, ``x`` updated in place  none
==========================================  ==================================================  =========

Each op has an explicit fake (meta) implementation (output shapes and dtypes, contiguous), and the
``*_fwd`` ops have ``register_autograd`` formulas calling the ``*_bwd`` ops (the same conjugate
Wirtinger convention as :class:`sashimi.kernels.CauchyFn` etc.; no gradient w.r.t. the Cauchy
nodes ``z``; no double backward). The bodies launch the same ``@triton.jit`` kernels as the eager
launchers, through :func:`torch.library.wrap_triton`, on freshly allocated real buffers.

The bodies never create lazily conjugated / negated views (``.conj()``; ``torch.conj_physical``
instead): inside a graph compiled by AOTAutograd (``aot_eager``, Inductor) a custom op's body runs
under a ``TorchDispatchMode`` with the Conjugate and Negative dispatch keys excluded, so a conj bit
made there is silently dropped (``2 * t.conj()`` returns ``2 * t``; seen with torch 2.13, cf.
pytorch/pytorch#198118). The ops' inputs arrive with such bits already resolved.

How ``torch.compile`` sees them:

* Dynamo puts the op in the graph as one node (its fake implementation gives the shapes): no graph
  break, whatever the backend.
* With compiled Triton (CUDA), ``triton_op`` decomposes the op during AOT tracing
  (functionalization) into ``triton_kernel_wrapper_functional`` nodes, so Inductor sees the kernels.
* Under ``TRITON_INTERPRET=1`` the kernels are ``InterpretedFunction`` objects, which
  ``wrap_triton`` hands back unwrapped (nothing to trace them with): here the ops are kept opaque
  during AOT tracing instead (a ``FunctionalTensorMode`` rule that does not decompose), so
  ``aot_eager`` graphs call the op, which runs the interpreter at run time.

Use: ``from sashimi.kernels._library import ops; ops().cauchy_fwd(v, z, w)`` (``ops()`` is
``torch.ops.sashimi`` once registered).
"""


import torch
import triton
from torch._subclasses.functional_tensor import FunctionalTensorMode
from torch.library import triton_op, wrap_triton

from sashimi.kernels.triton import cauchy as _tc
from sashimi.kernels.triton import step as _ts
from sashimi.kernels.triton import vandermonde as _tv
from sashimi.kernels.triton._common import as_real, complex_of, reduce_to, work_real_dtype

__all__ = ["INTERPRETED", "OP_NAMES", "ops"]

NAMESPACE = "sashimi"
OP_NAMES = (
    "cauchy_fwd",
    "cauchy_bwd",
    "vandermonde_fwd",
    "vandermonde_bwd",
    "vandermonde_transpose_fwd",
    "vandermonde_transpose_bwd",
    "diag_step",
)


def _interpreted(kernel) -> bool:
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover
        return False
    return isinstance(kernel, InterpretedFunction)


#: whether the kernels were decorated in Triton's interpreter (``TRITON_INTERPRET=1`` at import)
INTERPRETED = _interpreted(_tc._cauchy_fwd_kernel)


def ops():
    """``torch.ops.sashimi``, with the ops registered (importing this module registered them)."""
    return getattr(torch.ops, NAMESPACE)


def _complex_view(buf: torch.Tensor) -> torch.Tensor:
    return torch.view_as_complex(buf)


def _batch(a: torch.Tensor, b: torch.Tensor) -> tuple:
    return tuple(torch.broadcast_shapes(a.shape[:-1], b.shape[:-1]))


# ----------------------------------------------------------------------------------------------
# launch glue (mirrors the eager launchers, with wrap_triton and real output buffers)


def _launch_vand_fwd(v3: torch.Tensor, x2: torch.Tensor, L: int, complex_out: bool) -> torch.Tensor:
    """v3 (R, M, N2) complex, x2 (M, N2) complex128 -> (R, M, L) real, or complex when ``complex_out``."""
    R, M, n2 = v3.shape
    vr = as_real(v3)
    real = vr.dtype
    o = torch.empty((R, M, L, 2) if complex_out else (R, M, L), dtype=real, device=v3.device)
    if R * M > 0:
        xr = as_real(x2)
        T = _tv._tile(L)
        zj = _tv._small_powers(x2, T, real)
        br, bn = _tv._blocks(R, n2, T, real)
        grid = (M, triton.cdiv(L, T), triton.cdiv(R, br))
        wrap_triton(_tv._vand_fwd_kernel)[grid](
            vr, xr, zj, o,
            R, n2, L,
            vr.stride(0), vr.stride(1), vr.stride(2),
            xr.stride(0), xr.stride(1),
            zj.stride(0), zj.stride(1), zj.stride(2),
            o.stride(0), o.stride(1), o.stride(2),
            COMPLEX_OUT=complex_out, BLOCK_R=br, BLOCK_N=bn, T=T,
        )
    return _complex_view(o) if complex_out else o


def _launch_vand_t(u3: torch.Tensor, x2: torch.Tensor, with_s0: bool, with_s1: bool):
    """u3 (R, M, L) real or complex, x2 (M, N2) complex128 -> S0, S1 (R, M, N2) complex (or None)."""
    R, M, L = u3.shape
    n2 = x2.shape[-1]
    real = work_real_dtype(u3.dtype)
    o0 = torch.empty((R, M, n2, 2), dtype=real, device=u3.device) if with_s0 else None
    o1 = torch.empty((R, M, n2, 2), dtype=real, device=u3.device) if with_s1 else None
    if R * M > 0:
        ur = as_real(u3) if u3.is_complex() else u3
        xr = as_real(x2)
        T = _tv._tile(L)
        zj = _tv._small_powers(x2, T, real)
        p0 = o0 if o0 is not None else o1  # an unused output gets the other's pointer (never written)
        p1 = o1 if o1 is not None else o0
        br, bn = _tv._blocks(R, n2, T, real)
        grid = (M, triton.cdiv(n2, bn), triton.cdiv(R, br))
        wrap_triton(_tv._vand_t_kernel)[grid](
            ur, xr, zj, p0, p1,
            R, n2, L,
            ur.stride(0), ur.stride(1), ur.stride(2),
            xr.stride(0), xr.stride(1),
            zj.stride(0), zj.stride(1), zj.stride(2),
            p0.stride(0), p0.stride(1), p0.stride(2),
            p1.stride(0), p1.stride(1), p1.stride(2),
            U_COMPLEX=u3.is_complex(), WITH_S0=with_s0, WITH_S1=with_s1,
            BLOCK_R=br, BLOCK_N=bn, T=T,
        )
    s0 = _complex_view(o0) if o0 is not None else None
    s1 = _complex_view(o1) if o1 is not None else None
    return s0, s1


# ----------------------------------------------------------------------------------------------
# the ops


@triton_op(f"{NAMESPACE}::cauchy_fwd", mutates_args=())
def cauchy_fwd(v: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    batch, rows, v3, w2, zr = _tc._prepare(v, z, w)
    L = z.shape[0]
    n2 = v.shape[-1]
    o = torch.empty((rows.R, rows.M, L, 2), dtype=v3.dtype, device=v.device)
    if rows.R * rows.M > 0:
        br, bn, bl = _tc._blocks(rows.R, n2, L, v3.dtype, along_l=True)
        grid = (rows.M, triton.cdiv(L, bl), triton.cdiv(rows.R, br))
        wrap_triton(_tc._cauchy_fwd_kernel)[grid](
            v3, w2, zr, o,
            rows.R, n2, L,
            v3.stride(0), v3.stride(1), v3.stride(2),
            w2.stride(0), w2.stride(1),
            zr.stride(0),
            o.stride(0), o.stride(1), o.stride(2),
            BLOCK_R=br, BLOCK_N=bn, BLOCK_L=bl,
        )
    return rows.unrows(_complex_view(o)).contiguous()


@triton_op(f"{NAMESPACE}::cauchy_bwd", mutates_args=())
def cauchy_bwd(
    v: torch.Tensor, z: torch.Tensor, w: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, rows, v3, w2, zr = _tc._prepare(v, z, w)
    L = z.shape[0]
    n2 = v.shape[-1]
    g3 = as_real(rows.rows(grad.to(v.dtype).expand(*batch, L)))  # (R, M, L, 2)
    real = v3.dtype
    dvr = torch.empty((rows.R, rows.M, n2, 2), dtype=real, device=v.device)
    dwr = torch.empty((rows.R, rows.M, n2, 2), dtype=real, device=v.device)
    if rows.R * rows.M > 0:
        br, bn, bl = _tc._blocks(rows.R, n2, L, real, along_l=False)
        grid = (rows.M, triton.cdiv(n2, bn), triton.cdiv(rows.R, br))
        wrap_triton(_tc._cauchy_bwd_kernel)[grid](
            v3, w2, zr, g3, dvr, dwr,
            rows.R, n2, L,
            v3.stride(0), v3.stride(1), v3.stride(2),
            w2.stride(0), w2.stride(1),
            zr.stride(0),
            g3.stride(0), g3.stride(1), g3.stride(2),
            dvr.stride(0), dvr.stride(1), dvr.stride(2),
            dwr.stride(0), dwr.stride(1), dwr.stride(2),
            BLOCK_R=br, BLOCK_N=bn, BLOCK_L=bl,
        )
    dv = rows.unrows(_complex_view(dvr))
    dw = rows.unrows(_complex_view(dwr))
    return reduce_to(dv, v.shape).contiguous(), reduce_to(dw, w.shape).contiguous()


@triton_op(f"{NAMESPACE}::vandermonde_fwd", mutates_args=())
def vandermonde_fwd(v: torch.Tensor, x: torch.Tensor, L: int) -> torch.Tensor:
    batch, rows, v3, x2 = _tv._rows_v(v, x)
    out = _launch_vand_fwd(v3, x2, L, complex_out=False)
    return rows.unrows(out).contiguous()


@triton_op(f"{NAMESPACE}::vandermonde_bwd", mutates_args=())
def vandermonde_bwd(v: torch.Tensor, x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    batch, rows, v3, x2 = _tv._rows_v(v, x)
    L = grad.shape[-1]
    real = work_real_dtype(v.dtype)
    g3 = rows.rows(grad.to(real).expand(*batch, L))
    s0, s1 = _launch_vand_t(g3, x2, with_s0=True, with_s1=True)
    dv = rows.unrows(2 * torch.conj_physical(s0))
    dx = rows.unrows(2 * torch.conj_physical(v3 * s1)).to(x.dtype)
    return reduce_to(dv, v.shape).contiguous(), reduce_to(dx, x.shape).contiguous()


@triton_op(f"{NAMESPACE}::vandermonde_transpose_fwd", mutates_args=())
def vandermonde_transpose_fwd(u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    batch, rows, u3, x2 = _tv._rows_u(u, x)
    s0, _ = _launch_vand_t(u3, x2, with_s0=True, with_s1=False)
    return rows.unrows(s0).contiguous()


@triton_op(f"{NAMESPACE}::vandermonde_transpose_bwd", mutates_args=())
def vandermonde_transpose_bwd(
    u: torch.Tensor, x: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    batch, rows, u3, x2 = _tv._rows_u(u, x)
    L = u.shape[-1]
    n2 = x.shape[-1]
    cdt = complex_of(work_real_dtype(u.dtype))
    G3 = rows.rows(grad.to(cdt).expand(*batch, n2))  # (R, M, N2)
    s = _launch_vand_fwd(torch.conj_physical(G3), x2, L, complex_out=True)  # sum_n conj(G_n) z_n^l
    du = rows.unrows(torch.conj_physical(s) if u.is_complex() else s.real).to(u.dtype)
    _, s1 = _launch_vand_t(u3, x2, with_s0=False, with_s1=True)
    dx = rows.unrows(G3 * torch.conj_physical(s1)).to(x.dtype)
    return reduce_to(du, u.shape).contiguous(), reduce_to(dx, x.shape).contiguous()


@triton_op(f"{NAMESPACE}::diag_step", mutates_args={"x"})
def diag_step(
    x: torch.Tensor,
    dA: torch.Tensor,
    dB: torch.Tensor,
    dC: torch.Tensor,
    u: torch.Tensor,
    D: torch.Tensor | None,
    two_re: bool,
) -> torch.Tensor:
    return _ts.launch_diag_step(x, dA, dB, dC, u, D, two_re, None, wrap=wrap_triton)


# ----------------------------------------------------------------------------------------------
# fake (meta) implementations: shapes and dtypes only, never a kernel launch


@cauchy_fwd.register_fake
def _(v, z, w):
    return v.new_empty((*_batch(v, w), z.shape[0]))


@cauchy_bwd.register_fake
def _(v, z, w, grad):
    return v.new_empty(v.shape), v.new_empty(w.shape)


@vandermonde_fwd.register_fake
def _(v, x, L):
    return v.new_empty((*_batch(v, x), L), dtype=work_real_dtype(v.dtype))


@vandermonde_bwd.register_fake
def _(v, x, grad):
    return v.new_empty(v.shape), x.new_empty(x.shape)


@vandermonde_transpose_fwd.register_fake
def _(u, x):
    return x.new_empty((*_batch(u, x), x.shape[-1]), dtype=complex_of(work_real_dtype(u.dtype)))


@vandermonde_transpose_bwd.register_fake
def _(u, x, grad):
    return u.new_empty(u.shape), x.new_empty(x.shape)


@diag_step.register_fake
def _(x, dA, dB, dC, u, D, two_re):
    return x.new_empty((x.shape[0], dC.shape[0], x.shape[1]), dtype=work_real_dtype(x.dtype))


# ----------------------------------------------------------------------------------------------
# autograd


def _save_all(ctx, inputs, output):
    ctx.save_for_backward(*(t for t in inputs if isinstance(t, torch.Tensor)))


def _cauchy_backward(ctx, grad):
    v, z, w = ctx.saved_tensors
    dv, dw = ops().cauchy_bwd(v, z, w, grad)
    return dv, None, dw


def _vand_backward(ctx, grad):
    v, x = ctx.saved_tensors
    dv, dx = ops().vandermonde_bwd(v, x, grad)
    return dv, dx, None


def _vand_t_backward(ctx, grad):
    u, x = ctx.saved_tensors
    du, dx = ops().vandermonde_transpose_bwd(u, x, grad)
    return du, dx


cauchy_fwd.register_autograd(_cauchy_backward, setup_context=_save_all)
vandermonde_fwd.register_autograd(_vand_backward, setup_context=_save_all)
vandermonde_transpose_fwd.register_autograd(_vand_t_backward, setup_context=_save_all)


# ----------------------------------------------------------------------------------------------
# interpreter mode: keep the ops opaque in AOT graphs (wrap_triton cannot capture interpreted kernels)


def _opaque(mode, op, types, args, kwargs):
    return mode.__torch_dispatch__(op, types, args, kwargs)


if INTERPRETED:
    for _op in (cauchy_fwd, cauchy_bwd, vandermonde_fwd, vandermonde_bwd,
                vandermonde_transpose_fwd, vandermonde_transpose_bwd, diag_step):
        _op.register_torch_dispatch(FunctionalTensorMode, _opaque)
