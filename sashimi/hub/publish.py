"""Publishing a saved model folder of any family to a Hub model repo."""

from __future__ import annotations

import os
from pathlib import Path

from sashimi.hub.format import CARD_NAME, CONFIG_NAME, GENERATION_NAME, WEIGHTS_NAME, local_files
from sashimi.models.base import load_files

__all__ = ["push_folder"]


def push_folder(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    branch: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> str:
    """Validate a saved model folder (it must load strictly) and upload it to a Hub model repo.

    Uploads ``config.json``, ``model.safetensors`` and ``README.md`` (a model card is generated when the
    folder has none) in one commit. Returns the commit URL.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder at {folder}")
    model = load_files(*local_files(folder))  # validates config and weights (any family)
    card = folder / CARD_NAME
    card_bytes = card.read_bytes() if card.is_file() else model.model_card(repo_id).encode()
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True).repo_id
    if branch:
        api.create_branch(repo_id=repo_id, branch=branch, exist_ok=True)
    ops = [
        *([CommitOperationAdd(path_in_repo=GENERATION_NAME, path_or_fileobj=str(folder / GENERATION_NAME))]
          if (folder / GENERATION_NAME).is_file() else []),
        CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=str(folder / CONFIG_NAME)),
        CommitOperationAdd(path_in_repo=WEIGHTS_NAME, path_or_fileobj=str(folder / WEIGHTS_NAME)),
        CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card_bytes),
    ]
    info = api.create_commit(
        repo_id=repo_id, repo_type="model", operations=ops, revision=branch, create_pr=create_pr,
        commit_message=commit_message or f"Upload {type(model).__name__} (sashimi-audio)",
    )
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
