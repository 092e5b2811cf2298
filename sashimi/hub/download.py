"""Downloading the files of a Hub model repo (``huggingface_hub``), with errors that say what to do."""

from __future__ import annotations

from typing import Any

__all__ = ["hub_download"]


def hub_download(repo_id: str, filename: str, what: str, **kw: Any) -> str:
    """``hf_hub_download(repo_id, filename, **kw)``; failures become FileNotFoundError (absent, gated, offline,
    not cached) or OSError (network), each prefixed with ``what``."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rev = kw.get("revision") or "main"
    try:
        return hf_hub_download(repo_id=repo_id, filename=filename, **kw)
    except LocalEntryNotFoundError as err:
        raise FileNotFoundError(
            f"{what}: {repo_id}/{filename} (revision {rev}) is not in the local Hugging Face cache and the Hub "
            f"cannot be reached (offline mode, local_files_only=True, or no network): {err}"
        ) from err
    except GatedRepoError as err:
        raise FileNotFoundError(f"{what}: {repo_id} is gated: accept its terms on the Hub and log in ({err})") from err
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(
            f"{what}: no Hub repo {repo_id!r} (or it is private: log in with `hf auth login`), and no local "
            f"folder of that name; or a known pretrained name"
        ) from err
    except RevisionNotFoundError as err:
        raise FileNotFoundError(f"{what}: repo {repo_id} has no revision {rev!r}") from err
    except EntryNotFoundError as err:
        raise FileNotFoundError(f"{what}: repo {repo_id} (revision {rev}) has no file {filename!r}") from err
    except OfflineModeIsEnabled as err:
        raise FileNotFoundError(f"{what}: {repo_id}/{filename} is not cached and HF_HUB_OFFLINE is set") from err
    except HfHubHTTPError as err:
        raise OSError(f"{what}: downloading {repo_id}/{filename} failed: {err}") from err
