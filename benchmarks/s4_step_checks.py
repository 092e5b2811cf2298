"""Cost of the input and state checks of ``S4Block.step`` (issue 15: ownership, NaN, dtype checks).

Times one S4 layer step of the SC09 SaShiMi LM's shape (d_model 64, d_state 64, float32, the 'auto'
step state) at batch 1 and 32, three ways over the same block and inputs:

* ``unchecked core`` (the baseline) -- the step's arithmetic alone (``ssm_step``, the D skip, the
  activation / output linear / GLU), with no validation at all;
* ``step, check_finite=False`` -- ``S4Block.step`` with every check but the NaN/Inf reduction;
* ``step (default)`` -- ``S4Block.step`` as users call it (all checks).

With ``--model``, also ``SaShiMi.step`` of the SC09 backbone (random weights, 24 S4 layers) in train
mode (dropout 0), where it steps module by module through ``S4Block.step``, with the S4 states' NaN check
on (default) and off (``S4State.check_finite = False`` on every layer state). (In eval mode
``SaShiMi.step`` runs the flat step program of ``sashimi.generation.step_program`` instead.)

The generation hot path (``SaShiMiLM.generate``'s flat step program in ``sashimi.generation.step_program``)
does not call ``S4Block.step``, so these checks do not reach it; this script measures what a caller of
the module-level step pays. Reported: microseconds per step (median of ``--repeats`` runs of
``--steps`` steps, process CPU time, which is steadier than wall time on a shared machine) and the
ratio to the baseline.

Usage::

    python benchmarks/s4_step_checks.py [--steps 2000] [--repeats 5] [--threads 1] [--model]
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import os
import statistics
import sys
import time

import torch
from _common import machine_description

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sashimi.layers import S4Block  # noqa: E402
from sashimi.layers.s4block import S4State, ssm_step  # noqa: E402
from sashimi.models.config import SaShiMiConfig  # noqa: E402
from sashimi.models.sashimi import SaShiMi  # noqa: E402


def unchecked_step(blk: S4Block, x: torch.Tensor, state) -> torch.Tensor:
    """The arithmetic of ``S4Block.step`` without any validation: (B, H) -> (B, H)."""
    u = x.to(state.x.real.dtype)  # (B, H)
    y = ssm_step(state, u) + blk.D.to(u.dtype) * u.unsqueeze(1)  # (B, c, H)
    return blk._output(y.reshape(x.shape[0], -1).to(x.dtype))


def time_steps(fn, xs: torch.Tensor, repeats: int) -> float:
    """Median CPU microseconds per call of ``fn(x_t)`` over ``xs`` (T, B, H)."""
    runs = []
    for _ in range(repeats):
        t0 = time.process_time()
        for x in xs:
            fn(x)
        runs.append((time.process_time() - t0) / len(xs) * 1e6)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--model", action="store_true", help="also time SaShiMi.step (SC09 backbone)")
    ap.add_argument("--model-steps", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    blk = S4Block(64, 64).eval()
    has_opt_out = "check_finite" in inspect.signature(blk.init_state).parameters

    print(f"# S4Block.step check overhead -- {datetime.date.today()}, {machine_description('cpu', args.threads)}")
    print(f"# {args.steps} steps x {args.repeats} repeats, CPU us/step (median)")
    print(f"| {'batch':>5} | {'variant':<30} | {'us/step':>8} | {'vs baseline':>11} |")
    print(f"|{'-' * 7}|{'-' * 32}|{'-' * 10}|{'-' * 13}|")
    with torch.no_grad():
        for B in args.batches:
            xs = torch.randn(args.steps, B, 64)
            state = blk.init_state(B)
            variants = [("unchecked core (baseline)", lambda x, s=state: unchecked_step(blk, x, s))]
            if has_opt_out:
                quiet = blk.init_state(B, check_finite=False)
                variants.append(("step, check_finite=False", lambda x, s=quiet: blk.step(x, s)))
            checked = blk.init_state(B)
            variants.append(("step (default)", lambda x, s=checked: blk.step(x, s)))
            for _, fn in variants:  # warm-up
                time_steps(fn, xs[:200], 1)
            base = None
            for name, fn in variants:
                us = time_steps(fn, xs, args.repeats)
                base = base or us
                print(f"| {B:>5} | {name:<30} | {us:>8.1f} | {us / base:>10.2f}x |")
        if args.model:
            # train mode (dropout is 0): the module-by-module step through S4Block.step; in eval mode
            # SaShiMi.step runs the flat step program, which does not call S4Block.step
            model = SaShiMi(SaShiMiConfig()).train()
            for B in args.batches:
                xs = torch.randn(args.model_steps, B, 64)
                checked = model.init_state(B)
                quiet = model.init_state(B)
                s4_states = [s for s in _walk(quiet) if isinstance(s, S4State)]
                if has_opt_out:
                    for st in s4_states:
                        st.check_finite = False
                variants = [("SaShiMi.step (default)", lambda x, s=checked: model.step(x, s))]
                if has_opt_out:
                    name = f"SaShiMi.step, {len(s4_states)} S4 unchecked"
                    variants.append((name, lambda x, s=quiet: model.step(x, s)))
                for _, fn in variants:
                    time_steps(fn, xs[:16], 1)
                base = None
                for name, fn in variants:
                    us = time_steps(fn, xs, args.repeats)
                    base = base or us
                    print(f"| {B:>5} | {name:<30} | {us:>8.1f} | {us / base:>10.2f}x |")


def _walk(state) -> list:
    """Every layer state inside a SaShiMiState."""
    out = list(state.center)
    for tier in (*state.down, *state.up):
        out += tier.blocks
    return out


if __name__ == "__main__":
    main()
