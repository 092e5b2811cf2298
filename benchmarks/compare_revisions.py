"""A/B timing of ``SaShiMiLM.generate`` between two revisions of this repository, in the same run.

Each revision is checked out into a temporary git worktree; the script then alternates fresh
subprocesses (old, new, old, new, ...) that import ``sashimi`` from their worktree and time one
generation of the paper's SC09 SaShiMiLM (random weights, float32) at the given batch sizes. CPU time per
sample (``time.process_time``) is the measure: it is steadier than wall time on a shared machine, and
alternation spreads the machine's drift over both revisions. Prints a table with the ratio new / old.

Usage::

    python benchmarks/compare_revisions.py --old 9341b77 --new HEAD --batches 1 32 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SNIPPET = r"""
import json, sys, time, torch
torch.set_num_threads(1)
from sashimi.models.lm import SaShiMiLM, SaShiMiLMConfig
torch.manual_seed(0)
lm = SaShiMiLM(SaShiMiLMConfig(d_model=64, n_layers=8, pool=(4, 4), expand=2, ff=2, d_state=64)).eval()
B, T = int(sys.argv[1]), int(sys.argv[2])
lm.generate(B, 64, progress=False)  # warm-up: compiles the C state pass if needed
c0 = time.process_time()
lm.generate(B, T, progress=False, generator=torch.Generator().manual_seed(0))
print(json.dumps({"cpu_ms_per_sample": (time.process_time() - c0) / (B * T) * 1e3}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="git revision of the baseline")
    ap.add_argument("--new", default="HEAD", help="git revision to compare (default HEAD)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--samples", type=int, default=1024, help="samples per stream")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per revision and batch")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for label, rev in (("old", args.old), ("new", args.new)):
            path = os.path.join(tmp, label)
            subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", path, rev], check=True)
            trees[label] = path
        try:
            print(f"# generate() CPU ms per sample, SC09 SaShiMiLM, 1 thread; old={args.old} new={args.new}; "
                  f"median of {args.rounds} alternating runs; load average {os.getloadavg()[0]:.2f}")
            print("| batch | old | new | new / old |")
            print("|---|---|---|---|")
            for B in args.batches:
                times: dict[str, list[float]] = {"old": [], "new": []}
                for _ in range(args.rounds):
                    for label in ("old", "new"):
                        env = {**os.environ, "PYTHONPATH": trees[label], "OMP_NUM_THREADS": "1"}
                        out = subprocess.run([sys.executable, "-c", SNIPPET, str(B), str(args.samples)], env=env,
                                             capture_output=True, text=True, check=True, cwd=trees[label])
                        times[label].append(json.loads(out.stdout.strip().splitlines()[-1])["cpu_ms_per_sample"])
                old, new = statistics.median(times["old"]), statistics.median(times["new"])
                print(f"| {B} | {old:.4f} | {new:.4f} | {new / old:.3f} |", flush=True)
        finally:
            for path in trees.values():
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", path], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
