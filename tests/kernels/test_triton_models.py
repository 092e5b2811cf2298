"""Whole models with the Triton backend forced: the golden outputs of the official implementation.

In a subprocess with ``TRITON_INTERPRET=1 SASHIMI_BACKEND=triton`` (compiled kernels on CUDA where a
GPU is present), every S4 kernel of the models below runs through the Triton Cauchy /
log-Vandermonde kernels, and the recurrent S4D steps through the fused ``diag_step`` kernel:

* ``s4_block_H8_N64_L128``: the reference's standalone S4 block (DPLR, HiPPO-LegS), loaded as
  ``tests/layers/test_s4block.py`` does: convolution output ``y_conv`` and step output ``y_step``
  (linear step mode, which does not use Triton), plus the gradients of the convolution through the
  Triton Cauchy backward against the PyTorch backend's;
* ``sashimi_standalone_d16_nl2``: the reference's standalone SaShiMi (6 S4 layers on 3 tiers),
  converted with :func:`sashimi.convert.convert_standalone_state_dict`: ``y_forward`` and ``y_step``;
* an S4D SaShiMi (no golden file: S4D is not in the reference's Sashimi), stepped with
  :func:`sashimi.kernels.diag_step` substituted for the diagonal step of every S4 block (the wiring
  the block will get), against its own Triton convolution output, and streamed in chunks (the
  chunked state update uses the Triton Vandermonde and transposed Vandermonde kernels).

Tolerance (relative max error): 1e-8 in float64, 1e-4 in float32. A check also fails when the Triton
kernels were not actually called. Run directly, printing the errors::

    TRITON_INTERPRET=1 SASHIMI_BACKEND=triton python tests/kernels/test_triton_models.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"
TOL = {torch.float64: 1e-8, torch.float32: 1e-4}
CHECKS: dict = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().cpu().double(), b.detach().cpu().double()
    return float((a - b).abs().max() / b.abs().max())


def _tag(dtype):
    return "f32" if dtype == torch.float32 else "f64"


class KernelCalls:
    """Counts calls of the Triton launchers (patched on :mod:`sashimi.kernels.triton`, where the
    autograd wrappers and ``diag_step`` import them from at call time)."""

    NAMES = ("cauchy_fwd", "cauchy_bwd", "vandermonde_fwd", "vandermonde_bwd",
             "vandermonde_transpose_fwd", "vandermonde_transpose_bwd")

    def __init__(self):
        import sashimi.kernels.triton as kt
        import sashimi.kernels.triton.step as ks

        self.counts: Counter = Counter()
        self._saved = []
        for mod, names in ((kt, self.NAMES), (ks, ("diag_step_fwd",))):
            for name in names:
                fn = getattr(mod, name)
                self._saved.append((mod, name, fn))
                setattr(mod, name, self._wrap(name, fn))

    def _wrap(self, name, fn):
        def wrapper(*args, **kwargs):
            self.counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    def restore(self):
        for mod, name, fn in self._saved:
            setattr(mod, name, fn)


def _load(case: str):
    import sys as _sys

    _sys.path.insert(0, str(REPO_ROOT / "tests"))
    from conftest import load_reference_case

    return load_reference_case(REFERENCE_DIR, case)


# ----------------------------------------------------------------------------------------------
# the golden S4 block


def _golden_block(dtype, device):
    from sashimi import S4Block

    t, meta = _load("s4_block_H8_N64_L128")
    # the reference's raw (canonical) C is in state_dict_init.*; the loader merged X_real / X_imag into X
    sd = {k[len("state_dict_init."):]: v for k, v in t.items() if k.startswith("state_dict_init.")}
    assert int(sd["layer.kernel.l_kernel"]) == 0
    blk = S4Block(meta["H"], meta["N"], transposed=True).to(dtype)

    def cplx(x):
        return torch.view_as_complex(x.contiguous())

    blk.kernel.load_canonical(
        dt=torch.exp(sd["layer.kernel.inv_dt"][:, 0]),  # dt = exp(inv_dt)
        A=torch.complex(-torch.exp(sd["layer.kernel.A"].real), -sd["layer.kernel.A"].imag),  # -exp(A_real) - i A_imag
        B=cplx(sd["layer.kernel.B"][0]),
        C=cplx(sd["layer.kernel.C"]),
        P=cplx(sd["layer.kernel.P"]),
    )
    with torch.no_grad():
        blk.D.copy_(sd["layer.D"])
        blk.output_linear.weight.copy_(sd["output_linear.0.weight"])
        blk.output_linear.bias.copy_(sd["output_linear.0.bias"])
    return blk.to(device), t


def _make_block_check(dtype):
    def fn(device):
        blk, t = _golden_block(dtype, device)
        x = t["x"].to(dtype).to(device)  # (B, H, L)
        calls = KernelCalls()
        try:
            with torch.no_grad():
                y = blk(x)
            n_fwd = calls.counts["cauchy_fwd"]
            state = blk.init_state(x.shape[0], mode="linear")
            with torch.no_grad():
                ys = torch.stack([blk.step(x[:, :, i], state)[0] for i in range(x.shape[-1])], dim=-1)
            # gradients of the convolution through the Triton Cauchy backward, against the torch backend's
            cot = torch.randn(
                y.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
            ).to(dtype).to(device)
            grads = {}
            for be in ("triton", "torch"):
                os.environ["SASHIMI_BACKEND"] = be
                blk.zero_grad()
                (blk(x) * cot).sum().backward()
                grads[be] = {n: p.grad.clone() for n, p in blk.named_parameters() if p.grad is not None}
            os.environ["SASHIMI_BACKEND"] = "triton"
        finally:
            calls.restore()
        metrics = {"y_conv": rel_err(y, t["y_conv"]), "y_step": rel_err(ys, t["y_step"])}
        metrics["grads_vs_torch"] = max(rel_err(grads["triton"][n], grads["torch"][n]) for n in grads["torch"])
        metrics["calls"] = dict(calls.counts)
        assert n_fwd >= 1 and calls.counts["cauchy_bwd"] >= 1, calls.counts
        assert metrics["y_conv"] < TOL[dtype], metrics
        assert metrics["y_step"] < TOL[dtype], metrics
        assert metrics["grads_vs_torch"] < TOL[dtype], metrics
        return metrics

    fn.__name__ = f"golden_s4_block_{_tag(dtype)}"
    return check(fn)


for _dt in (torch.float64, torch.float32):
    _make_block_check(_dt)


# ----------------------------------------------------------------------------------------------
# the golden standalone SaShiMi


def _golden_sashimi(case, dtype, device):
    from safetensors.torch import load_file

    from sashimi.convert import convert_standalone_state_dict, standalone_config
    from sashimi.models import SaShiMi

    tensors = load_file(str(REFERENCE_DIR / f"{case}.safetensors"))  # the reference's own keys
    meta = json.loads((REFERENCE_DIR / f"{case}.json").read_text())
    after = {k[len("state_dict."):]: v for k, v in tensors.items() if k.startswith("state_dict.")}
    cfg = standalone_config(meta["sashimi_args"])
    model = SaShiMi(cfg).to(dtype).eval()
    model.load_state_dict(convert_standalone_state_dict(after), strict=True)
    assert sum(p.numel() for p in model.parameters()) == meta["n_params"]
    return model.to(device), tensors


def _make_sashimi_check(dtype):
    def fn(device):
        model, t = _golden_sashimi("sashimi_standalone_d16_nl2", dtype, device)
        x = t["x"].to(dtype).to(device)  # (B, L, H)
        calls = KernelCalls()
        try:
            with torch.no_grad():
                y = model(x)
                state = model.init_state(x.shape[0], mode="linear")
                ys = torch.stack([model.step(x[:, i], state)[0] for i in range(x.shape[1])], dim=1)
        finally:
            calls.restore()
        metrics = {
            "y_forward": rel_err(y, t["y_forward"]), "y_step": rel_err(ys, t["y_step"]), "calls": dict(calls.counts)
        }
        assert calls.counts["cauchy_fwd"] >= 6, calls.counts  # one per S4 layer
        assert metrics["y_forward"] < TOL[dtype], metrics
        assert metrics["y_step"] < TOL[dtype], metrics
        return metrics

    fn.__name__ = f"golden_sashimi_standalone_{_tag(dtype)}"
    return check(fn)


for _dt in (torch.float64, torch.float32):
    _make_sashimi_check(_dt)


# ----------------------------------------------------------------------------------------------
# an S4D SaShiMi stepped with diag_step


def _patch_block_step():
    """S4Block.step with its diagonal branch (ssm_step + D skip) replaced by one diag_step call."""
    from sashimi.kernels import diag_step
    from sashimi.layers.s4block import S4Block

    original = S4Block.step

    def step(self, x, state):
        if state.consts.mode != "diagonal":
            return original(self, x, state)
        self._check_state(state, x.shape[0], x)
        c = state.consts
        u = x.to(state.x.real.dtype)
        y = diag_step(state.x, c["dA"], c["dB"], c["dC"], u, self.D, two_re=c.two_re)
        return self._output(y.reshape(x.shape[0], -1).to(x.dtype)), state

    S4Block.step = step
    return lambda: setattr(S4Block, "step", original)


def _make_s4d_check(dtype):
    def fn(device):
        from sashimi.models import SaShiMi, SaShiMiConfig

        torch.manual_seed(0)
        cfg = SaShiMiConfig(d_model=8, n_layers=2, pool=(2, 2), d_state=16, ssm_mode="diag", init="diag-lin", ff=2)
        model = SaShiMi(cfg).to(dtype).eval().to(device)
        x = torch.randn(2, 16, 8, dtype=dtype, generator=torch.Generator().manual_seed(1)).to(device)
        restore = _patch_block_step()
        calls = KernelCalls()
        try:
            with torch.no_grad():
                y = model(x)
                # training mode (dropout is 0): the module-by-module step, through S4Block.step and its
                # Triton diag-step kernel (in evaluation mode SaShiMi.step runs the flat step program)
                model.train()
                state = model.init_state(x.shape[0], mode="diagonal")
                ys = torch.stack([model.step(x[:, i], state)[0] for i in range(x.shape[1])], dim=1)
                state = model.init_state(x.shape[0], mode="diagonal")
                head = torch.stack([model.step(x[:, i], state)[0] for i in range(5)], dim=1)
                tail = model(x[:, 5:], state)[0]  # then a chunk: the state is carried by the Vandermonde kernels
                yc = torch.cat([head, tail], dim=1)
        finally:
            calls.restore()
            restore()
        metrics = {"step_vs_forward": rel_err(ys, y), "steps_then_chunk_vs_forward": rel_err(yc[:, 5:], y[:, 5:]),
                   "calls": dict(calls.counts)}
        assert calls.counts["diag_step_fwd"] >= 16 and calls.counts["vandermonde_fwd"] >= 1, calls.counts
        assert calls.counts["vandermonde_transpose_fwd"] >= 1, calls.counts
        assert metrics["step_vs_forward"] < TOL[dtype], metrics
        assert metrics["steps_then_chunk_vs_forward"] < TOL[dtype], metrics
        assert torch.equal(yc[:, :5], ys[:, :5])
        return metrics

    fn.__name__ = f"s4d_sashimi_diag_step_{_tag(dtype)}"
    return check(fn)


for _dt in (torch.float64, torch.float32):
    _make_s4d_check(_dt)


# ----------------------------------------------------------------------------------------------
# subprocess runner


def run_checks(device: str, names: list[str]) -> dict:
    import warnings

    warnings.filterwarnings("ignore", category=RuntimeWarning)  # the interpreter's numpy overflow chatter
    torch.set_num_threads(1)
    results = {}
    for name in names:
        t0 = time.perf_counter()
        try:
            results[name] = {"ok": True, "metrics": CHECKS[name](device)}
        except BaseException:
            results[name] = {"ok": False, "error": traceback.format_exc(limit=10)}
        results[name]["seconds"] = round(time.perf_counter() - t0, 3)
    return results


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    ap.add_argument("--shard", default="0/1", help="i/n: run every n-th check starting at i")
    ap.add_argument("-k", default=None)
    args = ap.parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    i, n = (int(s) for s in args.shard.split("/"))
    names = [k for k in CHECKS if args.k is None or args.k in k][i::n]
    results = run_checks(args.device, names)
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    else:
        for name, r in results.items():
            print(f"{'ok  ' if r['ok'] else 'FAIL'} {name} ({r['seconds']}s) {json.dumps(r.get('metrics', {}))}")
            if not r["ok"]:
                print(r["error"])
    return 0 if all(r["ok"] for r in results.values()) else 1


def _run_device(device: str, workdir: Path) -> dict:
    env = os.environ.copy()
    env["SASHIMI_BACKEND"] = "triton"
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("OMP_NUM_THREADS", "1")
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)
    shards = 2 if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    procs = []
    for i in range(shards):
        report = workdir / f"{device}-{i}.json"
        log = open(workdir / f"{device}-{i}.log", "w")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--device", device, "--json", str(report),
               "--shard", f"{i}/{shards}"]
        procs.append(
            (subprocess.Popen(cmd, env=env, cwd=str(REPO_ROOT), stdout=log, stderr=subprocess.STDOUT), report, log)
        )
    results = {}
    for proc, report, log in procs:
        try:
            proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if report.is_file():
            results.update(json.loads(report.read_text()))
        else:
            tail = Path(log.name).read_text()[-4000:]
            results.setdefault(
                "__crash__", {"ok": False, "error": f"check subprocess died (rc={proc.returncode}):\n{tail}"}
            )
    return results


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module", params=DEVICES)
def models_report(request, tmp_path_factory, reference_dir):
    pytest.importorskip("triton")
    pytest.importorskip("safetensors")
    return _run_device(request.param, tmp_path_factory.mktemp(f"triton-models-{request.param}"))


@pytest.mark.parametrize("name", list(CHECKS))
def test_triton_model(models_report, name):
    if name not in models_report:
        crash = models_report.get("__crash__", {}).get("error", "no result")
        pytest.fail(f"{name}: no result from the check subprocess\n{crash}")
    r = models_report[name]
    assert r["ok"], r["error"]


if __name__ == "__main__":
    sys.exit(_main())
