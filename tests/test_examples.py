"""The examples in examples/ run and check what they claim (each asserts its own agreement)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_runs() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py")], capture_output=True, text=True,
                       cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "max |step - conv|" in r.stdout


def test_train_tiny_runs() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(REPO / "examples" / "train_tiny.py"), "--steps", "10"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained 10 steps" in r.stdout and "generated (2, 2000) samples" in r.stdout


def test_diffusion_vocoder_runs() -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(REPO / "examples" / "diffusion_vocoder.py")], capture_output=True,
                       text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "vocoded (1, 4096) samples" in r.stdout
    assert "saved and reloaded folder vocodes identically: True" in r.stdout
