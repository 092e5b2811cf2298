"""examples/sing_notes.py runs and checks its own claim (the spectral loss falls) on synthetic notes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_sing_notes_runs(tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, str(REPO / "examples" / "sing_notes.py"), "--steps", "60", "--out",
                        str(tmp_path)], check=False, capture_output=True, text=True, cwd=REPO,
                       env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "spectral loss" in r.stdout and "generated (4, 4096) samples" in r.stdout
    assert len(list(tmp_path.glob("*.wav"))) == 4
