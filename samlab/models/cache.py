"""An image-embedding cache, in memory and on disk.

Why: a prompt sweep (oracle / nnU-Net / expanded / per-component / point
prompts) and decoder-only training all reuse the same image embedding; the
encoder is ~20x the decoder's cost. The key covers the model, its weights, the
preprocessing and the exact pixels, so a stale hit is impossible.
"""
from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..io import atomic_path


class EmbeddingCache:
    """LRU memory cache of embeddings with an optional on-disk store (``.pt``, weights_only)."""

    def __init__(self, directory: str | os.PathLike | None = None, max_items_in_memory: int = 512):
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items_in_memory
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(namespace: str, image: np.ndarray) -> str:
        array = np.ascontiguousarray(image)
        digest = hashlib.sha256()
        digest.update(namespace.encode())
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(array.tobytes())
        return digest.hexdigest()

    def _path(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / key[:2] / f"{key}.pt"

    def get(self, key: str) -> torch.Tensor | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                value = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # a corrupt cache entry is a miss, and is rewritten
                path.unlink(missing_ok=True)
            else:
                self.hits += 1
                self._remember(key, value)
                return value
        self.misses += 1
        return None

    def put(self, key: str, value: torch.Tensor) -> None:
        value = value.detach().cpu()
        self._remember(key, value)
        path = self._path(key)
        if path is not None:
            with atomic_path(path) as tmp:
                torch.save(value, tmp)

    def _remember(self, key: str, value: torch.Tensor) -> None:
        self._memory[key] = value
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_items:
            self._memory.popitem(last=False)

    def clear_memory(self) -> None:
        self._memory.clear()

    def __len__(self) -> int:
        return len(self._memory)
