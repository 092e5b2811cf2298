"""Helpers shared by the benchmark scripts (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import os
import platform
import subprocess


def machine_description(device: str, threads: int | None = None) -> str:
    """CPU model, core count, torch version, the thread count (when given) and the GPU (on CUDA)."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"
    if threads is not None:
        desc += f" ({threads} threads)"
    if device.startswith("cuda") and torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name()}"
    return desc
