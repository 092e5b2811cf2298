"""The saved-model format shared by every model family: a folder (or Hub repo) holding

    config.json         the flat model config (``Config.to_dict()``: ``model_type``, ``config_version``, fields)
    model.safetensors   the weights (``state_dict()`` keys)
    README.md           a model card (written by ``save_pretrained``; optional for loading)
    generation.json     optional: default generation settings (e.g. ``{"temperature": 0.7}``)

This module reads and writes those files and knows no model class. Writes are atomic: files are
written to temporaries beside their destination, flushed, then renamed over it, so a failure (a full
disk, an interrupt) leaves the previous model intact. Only safetensors weights are read: a pickle is
never unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CARD_NAME",
    "GENERATION_NAME",
    "read_generation_defaults",
    "CONFIG_NAME",
    "PICKLE_NAMES",
    "WEIGHTS_NAME",
    "atomic_write_bytes",
    "describe_file",
    "local_files",
    "read_config",
    "read_weights",
    "write_model_folder",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
GENERATION_NAME = "generation.json"
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")


def describe_file(path: str | os.PathLike) -> str:
    """What a file looks like from its first bytes: 'a zip archive (a torch.save checkpoint?)', 'a pickle',
    'a WAV audio file', ... (for error messages)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (a torch.save checkpoint?)"
    if head[:1] == b"\x80":
        return "a pickle (a torch.save checkpoint in the legacy format?)"
    if head[:1] in (b"(", b"}", b"]", b"c", b"l", b"d"):
        return "a protocol-0/1 pickle (an old-style pickle, not a torch.save checkpoint)"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "a WAV audio file"
    if head.startswith((b"fLaC", b"OggS", b"ID3")):
        return "an audio file"
    if head.lstrip().startswith((b"{", b"[")):
        return "a JSON file"
    return "not a safetensors file"


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object of a ``config.json``.

    Raises:
        ValueError: not UTF-8, not valid JSON, or not a JSON object (the message names the file).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err}): not a config.json written by sashimi-audio") from err
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw


def read_weights(path: str | os.PathLike, *, check_finite: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a ``model.safetensors`` on the CPU.

    Args:
        check_finite: refuse NaN or infinite values (naming the tensors).

    Raises:
        ValueError: unreadable or not safetensors (saying what the file is), or non-finite values.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(
            f"{path} is not a readable safetensors file: it is {describe_file(path)} ({err})"
        ) from err
    if check_finite:
        bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
        if bad:
            more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
            raise ValueError(
                f"{path} holds non-finite values (NaN or inf) in {len(bad)} tensor(s): {bad[:10]}{more}; "
                "refusing to load them (pass check_finite=False to load anyway)"
            )
    return tensors


def read_generation_defaults(path: str | os.PathLike) -> dict[str, Any]:
    """The default generation settings of a ``generation.json`` ({} when the file does not exist).

    Raises:
        ValueError: not a JSON object of settings (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        return {}
    raw = read_config(path)
    bad = sorted(k for k, v in raw.items() if not isinstance(v, (int, float, str, bool)) or isinstance(v, bool))
    if bad:
        raise ValueError(f"{path}: generation settings must be numbers or strings, not {bad}")
    return raw


def local_files(folder: str | os.PathLike) -> tuple[Path, Path]:
    """``(config.json, model.safetensors)`` of a saved model folder.

    Raises:
        FileNotFoundError: either file is missing (a folder with only a pickle is named as such).
    """
    folder = Path(folder)
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_beside(dest: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # the permissions of a normally created file
    return Path(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a flushed temporary beside it (the old file survives a failure)."""
    dest = Path(path)
    tmp = _temp_beside(dest)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def write_model_folder(
    folder: str | os.PathLike, config: dict[str, Any], tensors: dict[str, torch.Tensor], card: str | None = None,
    generation: dict[str, Any] | None = None,
) -> None:
    """Write a saved-model folder atomically.

    Every file is first written completely to a temporary beside its destination; only then are the
    temporaries renamed over the old files (weights, card, config last). A failure while writing (a full
    disk, an interrupt) leaves the old files untouched and removes the temporaries.
    """
    from safetensors.torch import save

    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    payload = [(WEIGHTS_NAME, save(cpu, metadata={"format": "pt", "library": "sashimi-audio"}))]
    if card is not None:
        payload.append((CARD_NAME, card.encode("utf-8")))
    if generation:
        payload.append((GENERATION_NAME, (json.dumps(generation, indent=2, sort_keys=True) + "\n").encode("utf-8")))
    payload.append((CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8")))
    temps: list[tuple[Path, Path]] = []
    try:
        for name, data in payload:
            tmp = _temp_beside(d / name)
            temps.append((tmp, d / name))
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, dest in temps:
            os.replace(tmp, dest)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
