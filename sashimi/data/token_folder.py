"""TokenFolder: a dataset of pre-computed token streams (e.g. codec tokens made elsewhere), one file per clip.

Files: ``.npy`` (numpy, no pickles), ``.safetensors`` (one tensor, or the tensor named ``tokens``) or ``.pt``
(read with ``torch.load(weights_only=True)``: a tensor, or a dict with ``tokens``). Each holds integer tokens
(K, T) (or (T,) for one stream). Labels come from the first-level subfolder names (``labels="folders"``)
or a JSON file mapping relative paths (posix) to label names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

__all__ = ["TOKEN_EXTENSIONS", "TokenFolder", "load_tokens"]

TOKEN_EXTENSIONS = (".npy", ".safetensors", ".pt")


def load_tokens(path: str | Path) -> torch.Tensor:
    """Read one token file as a LongTensor (K, T) (a (T,) array becomes (1, T))."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext == ".npy":
        x = torch.from_numpy(np.load(path, allow_pickle=False))
    elif ext == ".safetensors":
        d = load_file(str(path))
        if "tokens" in d:
            x = d["tokens"]
        elif len(d) == 1:
            x = next(iter(d.values()))
        else:
            raise ValueError(
                f"{path}: a .safetensors token file needs one tensor or one named 'tokens', got {sorted(d)}"
            )
    elif ext == ".pt":
        obj = torch.load(path, map_location="cpu", weights_only=True)
        x = obj.get("tokens") if isinstance(obj, dict) else obj
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{path}: a .pt token file must hold a tensor or a dict with a 'tokens' tensor")
    else:
        raise ValueError(f"{path}: unsupported token file extension {ext!r} (expected one of {TOKEN_EXTENSIONS})")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ValueError(f"{path}: tokens must be integers, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{path}: tokens must have shape (K, T) or (T,) with T >= 1, got {tuple(x.shape)}")
    return x.long()


class TokenFolder(Dataset):
    """Token clips under ``root`` (recursively), sorted by path.

    Args:
        root: folder.
        labels: None (no labels), 'folders' (label = index of the first-level subfolder name among the
            sorted names) or the path of a JSON file ``{"relative/path.npy": "name", ...}`` (label = index
            of the name among the sorted distinct names; every file must be listed).
        n_codebooks: expected K (None: taken from the first file; all files must agree).
        card: if given, every token must lie in [0, card).
        segment: if given, items are random crops of this many tokens (clips must be at least as long).
        generator: for the crops (default: torch's global generator).

    Items: ``tokens`` (K, T) int64, or ``(tokens, label)`` with a 0-dim int64 label when labels are on.
    Attributes: ``files``, ``classes`` (label names, [] without labels).
    """

    def __init__(
        self,
        root: str | Path,
        labels: str | Path | None = None,
        n_codebooks: int | None = None,
        card: int | None = None,
        segment: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root {self.root} is not a folder")
        for name, v in (("n_codebooks", n_codebooks), ("card", card), ("segment", segment)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{name} must be None or a positive int, got {v!r}")
        self.files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in TOKEN_EXTENSIONS)
        if not self.files:
            raise ValueError(f"no token files ({', '.join(TOKEN_EXTENSIONS)}) under {self.root}")
        self.n_codebooks, self.card, self.segment, self.generator = n_codebooks, card, segment, generator
        self.classes: list[str] = []
        self.labels: list[int] | None = None
        rel = [p.relative_to(self.root).as_posix() for p in self.files]
        if labels == "folders":
            names = [r.split("/")[0] if "/" in r else None for r in rel]
            if any(n is None for n in names):
                bad = rel[names.index(None)]
                raise ValueError(f"labels='folders' needs every file in a subfolder, got {bad!r} at the top level")
            self.classes = sorted(set(names))
            self.labels = [self.classes.index(n) for n in names]
        elif labels is not None:
            path = Path(labels)
            if not path.is_file():
                raise FileNotFoundError(f"labels must be None, 'folders' or a JSON file; {path} does not exist")
            table = json.loads(path.read_text())
            if not isinstance(table, dict):
                raise ValueError(f"{path}: the labels JSON must map relative paths to label names")
            missing = [r for r in rel if r not in table]
            if missing:
                raise ValueError(f"{path}: no label for {len(missing)} file(s), e.g. {missing[0]!r}")
            self.classes = sorted({str(table[r]) for r in rel})
            self.labels = [self.classes.index(str(table[r])) for r in rel]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        path = self.files[i]
        x = load_tokens(path)  # (K, T)
        if self.n_codebooks is None:
            self.n_codebooks = x.shape[0]
        if x.shape[0] != self.n_codebooks:
            raise ValueError(f"{path}: {x.shape[0]} streams, expected n_codebooks={self.n_codebooks}")
        if self.card is not None and (int(x.min()) < 0 or int(x.max()) >= self.card):
            raise ValueError(f"{path}: tokens out of range [0, {self.card}): got [{int(x.min())}, {int(x.max())}]")
        if self.segment is not None:
            T = x.shape[1]
            if T < self.segment:
                raise ValueError(f"{path}: {T} tokens, shorter than segment={self.segment}")
            start = int(torch.randint(T - self.segment + 1, (1,), generator=self.generator))
            x = x[:, start : start + self.segment]
        if self.labels is None:
            return x
        return x, torch.tensor(self.labels[i])
