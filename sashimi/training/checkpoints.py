"""The run folder on disk: atomic writes, checkpoints, the writer's lock, stale temporaries, resume candidates.

Layout (``RUN/``): ``config.json`` + ``model.safetensors`` (+ ``README.md``) of the latest checkpoint, so a run
folder is a model folder; ``train_config.json``; ``log.csv``; ``train_summary.json``;
``checkpoints/step_XXXXXXXX/`` (model files + ``trainer_state.pt``). While a trainer writes the folder it
holds ``RUN/.lock`` (an advisory ``flock``: released by the kernel when the process dies, even by SIGKILL).
Every file is written to a temporary name and renamed into place; a checkpoint folder is written as
``checkpoints/.tmp-step_XXXXXXXX-<id>`` and renamed, so a reader sees complete files or none.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CHECKPOINTS_DIR",
    "LOCK_NAME",
    "STATE_FORMAT",
    "TRAINER_STATE_NAME",
    "RunBusyError",
    "RunLock",
    "atomic_write_text",
    "checkpoint_dirs",
    "clean_stale_temporaries",
    "load_trainer_state",
    "publish_model_files",
    "save_checkpoint",
    "weights_digest",
]

STATE_FORMAT = 1
TRAINER_STATE_NAME = "trainer_state.pt"
CHECKPOINTS_DIR = "checkpoints"
LOCK_NAME = ".lock"


class RunBusyError(ValueError):
    """Another process is writing the run folder."""


class RunLock:
    """Exclusive ownership of a run folder by one writer: an ``flock`` on ``RUN/.lock``.

    The kernel drops the lock when the holder exits, however it exits, so a crashed run never blocks a later
    one. :meth:`release` deletes the file (checking on :meth:`acquire` that the locked file is still the one
    at the path, so a lock taken on a file being deleted is retried).

    Args:
        run: the run folder (must exist when acquiring).
    """

    def __init__(self, run: Path) -> None:
        self.path = Path(run) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunBusyError` naming the holder; never waits."""
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "unknown"
                os.close(fd)
                raise RunBusyError(
                    f"--out {self.path.parent} is being written by another `sashimi train` ({holder}); wait for it "
                    "to finish or choose another --out folder. Nothing was written"
                ) from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
                self.fd = fd
                return
            os.close(fd)  # the holder deleted the file while we waited for it: lock the new one
        raise RunBusyError(f"could not lock {self.path}: it keeps being replaced by another process")

    def release(self) -> None:
        """Delete the lock file and drop the lock (no-op when not held)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling renamed into place (removed on failure)."""
    tmp = _tmp_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_copy(src: Path, dst: Path) -> None:
    tmp = _tmp_name(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names and bytes, sorted by name)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def checkpoint_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders of a run (both files present), oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if d.is_dir() and d.name.startswith("step_")
            and (d / TRAINER_STATE_NAME).is_file() and (d / "model.safetensors").is_file()]
    return sorted(dirs, key=lambda d: d.name)


def save_checkpoint(run: Path, save_model: Callable[[Path], None], state: dict[str, Any], keep: int) -> Path:
    """Write ``RUN/checkpoints/step_XXXXXXXX`` (model files by ``save_model(folder)`` + the trainer state),
    copy its model files to ``RUN/``, and keep the newest ``keep`` step folders.

    Atomic: on any failure (a full disk included) no temporary is left and the previous checkpoint and run
    model files are untouched; the error propagates.
    """
    root = run / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{state['step']:08d}"
    tmp = root / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        save_model(tmp)
        torch.save(state, tmp / TRAINER_STATE_NAME)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    publish_model_files(run, final)
    for old in checkpoint_dirs(run)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def publish_model_files(run: Path, ckpt: Path) -> None:
    """Copy a checkpoint's model files (every file but the trainer state; model files first, ``config.json``
    last) to ``RUN/``, atomically file by file: the run folder loads as that model."""
    files = sorted((p for p in ckpt.iterdir() if p.is_file() and p.name != TRAINER_STATE_NAME),
                   key=lambda p: (p.name == "config.json", p.name))
    for src in files:
        _atomic_copy(src, run / src.name)


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint folder (``torch.load(weights_only=True)``).

    Raises:
        ValueError: unreadable, truncated, or not a sashimi training state; naming the file.
    """
    path = ckpt / TRAINER_STATE_NAME
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read the training state {path} (truncated or not written by sashimi train): "
                         f"{err}") from err
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a sashimi training state (format {STATE_FORMAT})")
    return state


def clean_stale_temporaries(run: Path) -> list[Path]:
    """Remove what interrupted writers of this run left behind (call only while holding :class:`RunLock`):
    ``checkpoints/.tmp-step_*`` folders and ``.*.tmp`` files in ``RUN/`` and ``RUN/checkpoints/``.
    Returns the removed paths."""
    removed = []
    for folder in (run, run / CHECKPOINTS_DIR):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.is_dir() and p.name.startswith(".tmp-step_"):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
            elif p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed

