"""Model cards (``README.md`` with Hub metadata) for saved models of any family: the text comes from
the caller (a model's :meth:`~sashimi.models.base.PretrainedModel.card_description`, or a converter)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

__all__ = ["render_card"]


def render_card(
    *,
    title: str,
    description: str,
    usage: str,
    config: dict[str, Any],
    n_params: int,
    tags: Iterable[str] = (),
    sections: str = "",
) -> str:
    """The markdown of a model card: YAML metadata (library ``sashimi-audio``, ``tags``), the title,
    description, parameter count, usage, extra ``sections`` and the config as a table."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(library_name="sashimi-audio", tags=sorted(set(tags)) or None)
    rows = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in config.items())
    body = (
        f"# {title}\n\n{description.strip()}\n\nParameters: {n_params:,}.\n\n## Usage\n\n{usage.strip()}\n\n"
        "Loading reads `config.json` and `model.safetensors` only (no pickle) and is strict.\n"
        f"{sections}\n## Config\n\n| field | value |\n|---|---|\n{rows}\n"
    )
    return "---\n" + data.to_yaml() + "\n---\n" + body
