"""Where sashimi-audio keeps files it makes for itself (converted checkpoints, compiled kernels)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root"]


def cache_root() -> Path:
    """``$SASHIMI_CACHE``, else ``$XDG_CACHE_HOME/sashimi-audio``, else ``~/.cache/sashimi-audio``."""
    root = os.environ.get("SASHIMI_CACHE")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "sashimi-audio")
    return Path(root)
