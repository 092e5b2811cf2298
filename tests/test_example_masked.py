"""examples/masked_decoding.py runs (with this checkout's package) and reports its three methods."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_masked_decoding_example_runs() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(REPO / "examples" / "masked_decoding.py"), "--steps", "5"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "masked model: 5 steps" in r.stdout
    rows = [line.split() for line in r.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["masked", "masked", "hybrid"]
    bits = [float(row[-1]) for row in rows]
    assert all(0 < b < 12 for b in bits)  # finite NLL of every sample under the bundled AR model
