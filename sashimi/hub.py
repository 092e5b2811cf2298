"""Hugging Face Hub integration: the saved-model format, strict loading, the registry of known pretrained
weights (converted on first use and cached), model cards, and publishing.

A saved model is a folder (or Hub repo) with exactly::

    config.json         the flat model config (``SaShiMiLMConfig.to_dict()``, with ``config_version``)
    model.safetensors   the weights (``state_dict()`` keys)
    README.md           a model card (written by ``save_pretrained``; optional for loading)

Loading rules (see ``docs/pretrained.md``):

* only safetensors weights are read; our own format never goes through pickle, and a repo that only has
  ``pytorch_model.bin`` is refused;
* loading is strict by default: missing, unexpected and wrongly shaped tensors are an error that lists
  them by name, and so is a config field this version does not know;
* release checkpoints of the official code (``.pt`` pickles) are only read by the converter, with
  ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sashimi._paths import cache_root

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "PRETRAINED",
    "PretrainedCheckpoint",
    "BUNDLED_NAME",
    "bundled_model_path",
    "list_pretrained",
    "save_model_files",
    "load_pretrained",
    "load_model_folder",
    "resolve_pretrained",
    "converted_cache_root",
    "model_card",
    "push_folder",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")
CONVERTER_VERSION = 1  # bump when a converter fix must invalidate the converted cache
RELEASE_REPO = "krandiash/sashimi-release"
#: name of the small model shipped inside the package (``sashimi generate`` with no ``--model``)
BUNDLED_NAME = "sashimi-default"


def bundled_model_path() -> Path:
    """The folder of the bundled model: a small SaShiMiLM trained on synthetic plucked strings by
    ``scripts/train_default.py`` (its ``training.json`` records the settings and held-out NLL).

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    folder = Path(__file__).resolve().parent / "pretrained" / "default"
    if not (folder / CONFIG_NAME).is_file() or not (folder / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"the bundled model is missing from {folder} (the package was installed without its data files); "
            "reinstall sashimi-audio or pass --model"
        )
    return folder


@dataclass(frozen=True)
class PretrainedCheckpoint:
    """A known pretrained checkpoint of the official release.

    Attributes:
        name: registry name (``SaShiMiLM.from_pretrained(name)``).
        repo_id, filename, revision: where the raw release file lives on the Hub.
        variant: the converter variant (:data:`sashimi.convert.state_spaces.VARIANTS`).
        description: one line.
    """

    name: str
    repo_id: str
    filename: str
    variant: str
    description: str
    revision: str | None = None


def _entries() -> dict[str, PretrainedCheckpoint]:
    rows = [
        ("sashimi-sc09", "checkpoints/sashimi_sc09.pt", "sc09", "SC09 spoken digits, v3 key layout (paper model)"),
        ("sashimi-sc09-v3", "checkpoints/sashimi_sc09_v3.pt", "sc09", "SC09, v3 key layout"),
        ("sashimi-sc09-v4", "checkpoints/sashimi_sc09_v4.pt", "sc09", "SC09, official v4 port (log dt kept)"),
        ("sashimi-youtubemix", "checkpoints/sashimi_youtubemix.pt", "youtubemix", "YouTubeMix piano, v3 key layout"),
        ("sashimi-youtubemix-v3", "checkpoints/sashimi_youtubemix_v3.pt", "youtubemix", "YouTubeMix, v3 key layout"),
        ("sashimi-youtubemix-v4", "checkpoints/sashimi_youtubemix_v4.pt", "youtubemix", "YouTubeMix, official v4 port"),
        ("sashimi-sc09-unet", "checkpoints/sashimi_sc09_unet.pt", "sc09-unet", "SC09, U-Net SaShiMi (6.8M parameters)"),
    ]
    return {n: PretrainedCheckpoint(n, RELEASE_REPO, f, v, d) for n, f, v, d in rows}


#: Registry of known pretrained weights: name -> where the release file is and how to convert it.
PRETRAINED: dict[str, PretrainedCheckpoint] = _entries()


def list_pretrained() -> list[str]:
    """Names accepted by ``SaShiMiLM.from_pretrained`` besides folders and Hub ids."""
    return sorted([*PRETRAINED, BUNDLED_NAME])


# ---- saving -----------------------------------------------------------------------------------------
def save_model_files(model: torch.nn.Module, save_directory: str | os.PathLike) -> None:
    """Write ``config.json`` and ``model.safetensors`` of ``model`` into ``save_directory``."""
    from safetensors.torch import save_file

    d = Path(save_directory)
    d.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(d / WEIGHTS_NAME), metadata={"format": "pt", "library": "sashimi-audio"})
    (d / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def model_card(model: torch.nn.Module, repo_id: str | None = None, **kwargs: Any):
    """A :class:`huggingface_hub.ModelCard` for ``model`` (metadata: library ``sashimi-audio`` and tags)."""
    from huggingface_hub import ModelCard, ModelCardData

    info = getattr(type(model), "_hub_mixin_info", None)
    data = ModelCardData(**info.model_card_data.to_dict()) if info is not None else ModelCardData()
    data.library_name = data.library_name or "sashimi-audio"
    cfg = model.config
    conv = getattr(model, "_conversion_info", None)
    model_id = repo_id or kwargs.get("model_id") or "<this-folder-or-repo>"
    n_params = sum(p.numel() for p in model.parameters())
    rows = "\n".join(f"| `{k}` | `{json.dumps(v)}` |" for k, v in cfg.to_dict().items())
    source = ""
    if conv:
        source = (
            "\n## Source\n\nConverted with `sashimi convert state-spaces` from the official state-spaces/s4 release "
            f"checkpoint `{conv['source']}` (variant `{conv['variant']}`, Hydra experiment `{conv['experiment']}`, "
            f"{conv['layout']} key layout, dt transform `{conv['dt_transform']}`). The weights are the released "
            "ones; the truncation-corrected C~ was solved back to the canonical C, which is exact.\n"
        )
    body = f"""
# SaShiMi raw-waveform model

An autoregressive [SaShiMi](https://arxiv.org/abs/2202.09729) model (Goel et al., "It's Raw! Audio Generation
with State-Space Models", ICML 2022) for the [`sashimi-audio`](https://pypi.org/project/sashimi-audio/) library.
It predicts {2 ** cfg.bits}-way {cfg.quantization} quantized samples ({cfg.bits} bits) at {cfg.sample_rate} Hz.
Parameters: {n_params:,}.

## Usage

```python
from sashimi.models.lm import SaShiMiLM

model = SaShiMiLM.from_pretrained("{model_id}")
out = model.generate(batch_size=4, num_samples={cfg.sample_rate})  # 1 s of audio per sample
out.waveform  # (4, {cfg.sample_rate}) float32 in [-1, 1]
```

or from the command line: `sashimi generate --model {model_id} --seconds 1 --out samples/`.

Loading reads `config.json` and `model.safetensors` only (no pickle) and is strict.
{source}
## Config

| field | value |
|---|---|
{rows}
"""
    return ModelCard("---\n" + data.to_yaml() + "\n---\n" + body)


# ---- loading ----------------------------------------------------------------------------------------
def _check_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype (e.g. torch.float32), got {dtype!r}")
    return dtype


def load_model_folder(
    cls: type,
    config_file: str | os.PathLike,
    weights_file: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    strict: bool = True,
):
    """Build ``cls`` from a ``config.json`` and a ``model.safetensors``.

    The model takes the dtype stored in the file (unless ``dtype`` is given) and lands on ``map_location``.

    Raises:
        ValueError: an unreadable config or one with unknown/invalid fields; an unreadable (e.g. truncated)
            safetensors file; missing, unexpected or wrongly shaped tensors (listed by name; with
            ``strict=False`` only wrong shapes raise, the rest is skipped with a warning).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    dtype = _check_dtype(dtype)
    config_file, weights_file = Path(config_file), Path(weights_file)
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{config_file} must hold a JSON object, got {type(raw).__name__}")
    try:
        model = cls(raw)
    except (ValueError, TypeError) as err:
        raise ValueError(f"invalid model config {config_file}: {err}") from err
    try:
        tensors = load_file(str(weights_file), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights_file} is not a readable safetensors file (truncated or corrupt?): {err}") from err

    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(tensors)
        if tuple(tensors[k].shape) != tuple(own[k].shape)
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" (and {len(items) - 10} more)" if len(items) > 10 else ""
            problems.append(f"{len(items)} {label}: {items[:10]}{more}")
    if shapes or (strict and problems):
        raise ValueError(
            f"{weights_file} does not match the model of {config_file.name}: " + "; ".join(problems)
        )
    if problems:
        import warnings

        warnings.warn(f"loading {weights_file} non-strictly: " + "; ".join(problems), stacklevel=3)
    floats = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if len(floats) == 1:
        model.to(next(iter(floats)))
    model.load_state_dict(tensors, strict=strict)
    if dtype is not None:
        model.to(dtype)
    model.to(map_location)
    model.eval()
    return model


def _local_files(folder: Path) -> tuple[Path, Path]:
    cfg, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not cfg.is_file():
        raise FileNotFoundError(f"{folder} has no {CONFIG_NAME}: not a saved sashimi-audio model folder")
    if not weights.is_file():
        pickles = [n for n in PICKLE_NAMES if (folder / n).is_file()]
        hint = (
            f" It has {pickles}, which sashimi-audio never unpickles: re-save the model with save_pretrained "
            "(safetensors)." if pickles else ""
        )
        raise FileNotFoundError(f"{folder} has no {WEIGHTS_NAME}.{hint}")
    return cfg, weights


def _hub_download(repo_id: str, filename: str, what: str, **kw: Any) -> str:
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
            f"folder of that name; known pretrained names: {list_pretrained()}"
        ) from err
    except RevisionNotFoundError as err:
        raise FileNotFoundError(f"{what}: repo {repo_id} has no revision {rev!r}") from err
    except EntryNotFoundError as err:
        raise FileNotFoundError(f"{what}: repo {repo_id} (revision {rev}) has no file {filename!r}") from err
    except OfflineModeIsEnabled as err:
        raise FileNotFoundError(f"{what}: {repo_id}/{filename} is not cached and HF_HUB_OFFLINE is set") from err
    except HfHubHTTPError as err:
        raise OSError(f"{what}: downloading {repo_id}/{filename} failed: {err}") from err


def load_pretrained(
    cls: type,
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    map_location: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    strict: bool = True,
):
    """Load ``cls`` from a local folder, a Hub repo id, a registry name (:data:`PRETRAINED`), or
    :data:`BUNDLED_NAME` (the model shipped inside the package; never downloads).

    Resolution order: an existing folder; the bundled name; a registry name (the release file is downloaded with
    ``hf_hub_download``, converted once and cached under :func:`converted_cache_root`); else a Hub repo
    id (``config.json`` and ``model.safetensors`` at ``revision``). ``cache_dir``, ``force_download``,
    ``local_files_only`` and ``token`` are passed to ``hf_hub_download``; the ``HF_HUB_OFFLINE``
    environment variable is honoured.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a folder, Hub repo id or pretrained name, got {type(name_or_path).__name__}")
    spec = os.fspath(name_or_path)
    load = dict(map_location=map_location, dtype=dtype, strict=strict)
    hub = dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
               local_files_only=local_files_only, token=token)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_model_folder(cls, *_local_files(path), **load)
    if spec == BUNDLED_NAME:
        return load_model_folder(cls, *_local_files(bundled_model_path()), **load)
    if spec in PRETRAINED:
        folder = resolve_pretrained(spec, **hub)
        return load_model_folder(cls, *_local_files(folder), **load)
    if path.exists():
        raise ValueError(
            f"{spec} is a file, not a model folder: for an official release checkpoint use "
            "SaShiMiLM.from_state_spaces(path, variant=...) or `sashimi convert state-spaces`"
        )
    from huggingface_hub.utils import validate_repo_id
    from huggingface_hub.errors import HFValidationError

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise FileNotFoundError(
            f"{spec!r} is neither an existing folder, nor a Hub repo id, nor a known pretrained name "
            f"({list_pretrained()})"
        ) from None
    what = f"loading {spec!r}"
    cfg = _hub_download(spec, CONFIG_NAME, what, **hub)
    try:
        weights = _hub_download(spec, WEIGHTS_NAME, what, **hub)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}. sashimi-audio loads model.safetensors only (it never unpickles pytorch_model.bin); "
            "for an official release repo use a pretrained name or SaShiMiLM.from_state_spaces"
        ) from err
    return load_model_folder(cls, cfg, weights, **load)


def converted_cache_root() -> Path:
    """Where converted release checkpoints are cached: the sub-folder ``converted`` of
    :func:`sashimi._paths.cache_root` (``$SASHIMI_CACHE``, else ``$XDG_CACHE_HOME/sashimi-audio``, else
    ``~/.cache/sashimi-audio``)."""
    return cache_root() / "converted"


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_pretrained(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """The converted, Hub-ready folder of a registry entry: download the release file, convert it on first
    use and cache the result (keyed by the file's sha256 and the converter version)."""
    from sashimi.convert.state_spaces import load_state_spaces
    from sashimi.models.lm import SaShiMiLM

    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained name {name!r}; known: {list_pretrained()}")
    entry = PRETRAINED[name]
    raw = _hub_download(
        entry.repo_id, entry.filename, f"pretrained {name!r}", revision=revision or entry.revision,
        cache_dir=cache_dir, force_download=force_download, local_files_only=local_files_only, token=token,
    )
    digest = _sha256(raw)[:16]
    root = converted_cache_root() / name
    folder = root / f"{digest}-c{CONVERTER_VERSION}"
    if (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file() and not force_download:
        return folder
    root.mkdir(parents=True, exist_ok=True)
    model = load_state_spaces(SaShiMiLM, raw, entry.variant)
    model._conversion_info["source"] = f"{entry.repo_id}/{entry.filename}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root))
    try:
        model.save_pretrained(tmp, model_card_kwargs={"repo_id": name})
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError:
        if not (folder / WEIGHTS_NAME).is_file():  # unless another process finished first
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


# ---- publishing -------------------------------------------------------------------------------------
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

    from sashimi.models.lm import SaShiMiLM

    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no model folder at {folder}")
    model = load_model_folder(SaShiMiLM, *_local_files(folder))  # validates config and weights
    card = folder / CARD_NAME
    card_bytes = card.read_bytes() if card.is_file() else str(model_card(model, repo_id=repo_id)).encode()
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True).repo_id
    if branch:
        api.create_branch(repo_id=repo_id, branch=branch, exist_ok=True)
    ops = [
        CommitOperationAdd(path_in_repo=CONFIG_NAME, path_or_fileobj=str(folder / CONFIG_NAME)),
        CommitOperationAdd(path_in_repo=WEIGHTS_NAME, path_or_fileobj=str(folder / WEIGHTS_NAME)),
        CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card_bytes),
    ]
    info = api.create_commit(
        repo_id=repo_id, repo_type="model", operations=ops, revision=branch, create_pr=create_pr,
        commit_message=commit_message or "Upload SaShiMi model (sashimi-audio)",
    )
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
