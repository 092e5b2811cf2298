"""Shared pytest fixtures and helpers: access to the golden reference data in ``../shared/reference``.

The golden data lives next to the repository (``<repo>/../shared/reference``) and was produced by the
official state-spaces implementation; see its README for the conventions. Tests that need it take the
``reference_dir`` fixture, which skips them when the folder is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

# Tiny matrix ops dominate these tests; with several OpenMP threads on a small (or busy) machine
# they run far slower than on one.
torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]
REFERENCE_DIR = REPO_ROOT.parent / "shared" / "reference"


def reference_cases(prefix: str) -> list[str]:
    """Case names (file stems) in the reference folder whose name starts with ``prefix``.

    Meant for ``pytest.mark.parametrize`` at collection time; returns [] when the folder is absent
    (the parametrized test then reports as skipped for an empty parameter set).
    """
    if not REFERENCE_DIR.is_dir():
        return []
    return sorted(p.stem for p in REFERENCE_DIR.glob(f"{prefix}*.safetensors"))


def merge_complex(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merge ``X_real`` / ``X_imag`` pairs into one complex tensor ``X``; other tensors pass through."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if key.endswith("_real") and key[:-5] + "_imag" in tensors:
            out[key[:-5]] = torch.complex(value, tensors[key[:-5] + "_imag"])
        elif key.endswith("_imag") and key[:-5] + "_real" in tensors:
            continue
        else:
            out[key] = value
    return out


def load_reference_case(reference_dir: Path, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Load ``<name>.safetensors`` (complex pairs merged) and its ``<name>.json`` sidecar (or {})."""
    from safetensors.torch import load_file

    path = Path(reference_dir) / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no reference case {name!r} at {path}")
    tensors = merge_complex(load_file(str(path)))
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    return tensors, meta


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """Path to the golden reference folder; skips the test when the folder is absent."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"golden reference data not found at {REFERENCE_DIR}: it is expected next to the repository")
    return REFERENCE_DIR


@pytest.fixture(scope="session")
def load_case(reference_dir):
    """``load_case(name) -> (tensors, meta)`` for a case in the reference folder."""

    def _load(name: str) -> tuple[dict[str, torch.Tensor], dict]:
        return load_reference_case(reference_dir, name)

    return _load
