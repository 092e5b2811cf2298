"""Where models come from: the bundled model, the registry of known pretrained weights (official
release checkpoints, converted on first use and cached), Hub repo ids and local folders.

:func:`resolve_files` turns any of those into the ``config.json`` and ``model.safetensors`` to load;
it knows no model class (``sashimi.load_model`` picks the class from ``config.json``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sashimi._paths import cache_root
from sashimi.convert.state_spaces import VARIANTS, convert_state_spaces_state_dict, detect_layout, read_checkpoint
from sashimi.hub.cards import render_card
from sashimi.hub.download import hub_download
from sashimi.hub.format import CONFIG_NAME, GENERATION_NAME, WEIGHTS_NAME, local_files, write_model_folder

__all__ = [
    "BUNDLED_NAME",
    "CONVERTER_VERSION",
    "PRETRAINED",
    "PretrainedCheckpoint",
    "bundled_model_path",
    "converted_cache_root",
    "list_pretrained",
    "resolve_files",
    "resolve_pretrained",
]

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
    folder = Path(__file__).resolve().parents[1] / "pretrained" / "default"
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
    """Names accepted by ``sashimi.load_model`` / ``from_pretrained`` besides folders and Hub ids."""
    return sorted([*PRETRAINED, BUNDLED_NAME])


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
    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained name {name!r}; known: {list_pretrained()}")
    entry = PRETRAINED[name]
    raw = hub_download(
        entry.repo_id, entry.filename, f"pretrained {name!r}", revision=revision or entry.revision,
        cache_dir=cache_dir, force_download=force_download, local_files_only=local_files_only, token=token,
    )
    digest = _sha256(raw)[:16]
    root = converted_cache_root() / name
    folder = root / f"{digest}-c{CONVERTER_VERSION}"
    if (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file() and not force_download:
        return folder
    root.mkdir(parents=True, exist_ok=True)
    sd = read_checkpoint(raw)
    tensors, lm_config = convert_state_spaces_state_dict(sd, entry.variant)
    config = lm_config.to_dict()
    card = _release_card(name, entry, detect_layout(sd), config, sum(t.numel() for t in tensors.values()))
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=root))
    try:
        write_model_folder(tmp, config, tensors, card)
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


def _release_card(name: str, entry: PretrainedCheckpoint, layout: str, config: dict, n_params: int) -> str:
    v = VARIANTS[entry.variant]
    return render_card(
        title=f"SaShiMi: {entry.description}",
        description=(
            f"The official SaShiMi release checkpoint `{entry.repo_id}/{entry.filename}` (Goel et al., \"It's Raw! "
            "Audio Generation with State-Space Models\", ICML 2022), converted for sashimi-audio with "
            f"`sashimi convert state-spaces` (variant `{entry.variant}`, Hydra experiment `{v.experiment}`, "
            f"{layout} key layout). The weights are the released ones; the truncation-corrected C~ was solved "
            "back to the canonical C, which is exact. It predicts "
            f"{2 ** config['bits']}-way {config['quantization']} samples at {config['sample_rate']} Hz."
        ),
        usage=f"```python\nimport sashimi\n\nmodel = sashimi.load_model({name!r})\n"
              f"out = model.generate(batch_size=4, num_samples={config['sample_rate']})\n```",
        config=config, n_params=n_params, tags=["audio", "raw-waveform", "sashimi", "s4", "state-space-model"],
    )


def resolve_files(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> tuple[Path, Path]:
    """The ``config.json`` and ``model.safetensors`` of a local folder, the bundled name
    (:data:`BUNDLED_NAME`; never downloads), a registry name (:data:`PRETRAINED`: the release file is
    downloaded with ``hf_hub_download``, converted once and cached under :func:`converted_cache_root`)
    or a Hub repo id (both files at ``revision``), tried in that order.

    ``cache_dir``, ``force_download``, ``local_files_only`` and ``token`` go to ``hf_hub_download``;
    ``HF_HUB_OFFLINE`` is honoured.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a folder, Hub repo id or pretrained name, got {type(name_or_path).__name__}")
    spec = os.fspath(name_or_path)
    hub = dict(revision=revision, cache_dir=cache_dir, force_download=force_download,
               local_files_only=local_files_only, token=token)
    path = Path(spec).expanduser()
    if path.is_dir():
        return local_files(path)
    if spec == BUNDLED_NAME:
        return local_files(bundled_model_path())
    if spec in PRETRAINED:
        return local_files(resolve_pretrained(spec, **hub))
    if path.exists():
        raise ValueError(
            f"{spec} is a file, not a model folder: for an official release checkpoint use "
            "SaShiMiLM.from_state_spaces(path, variant=...) or `sashimi convert state-spaces`"
        )
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        raise FileNotFoundError(
            f"{spec!r} is neither an existing folder, nor a Hub repo id, nor a known pretrained name "
            f"({list_pretrained()})"
        ) from None
    what = f"loading {spec!r}"
    try:
        cfg = hub_download(spec, CONFIG_NAME, what, **hub)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (known pretrained names: {list_pretrained()})") from err
    try:
        weights = hub_download(spec, WEIGHTS_NAME, what, **hub)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err}. sashimi-audio loads model.safetensors only (it never unpickles pytorch_model.bin); "
            "for an official release repo use a pretrained name or SaShiMiLM.from_state_spaces"
        ) from err
    try:  # optional default generation settings, beside config.json in the same snapshot
        hub_download(spec, GENERATION_NAME, what, **hub)
    except FileNotFoundError:
        pass
    return Path(cfg), Path(weights)
