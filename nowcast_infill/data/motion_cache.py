"""Sidecar store of motion fields: computed once per (store, window, method), reused across
epochs and runs.

Layout: ``<root>/<store key>/<method key>/w<start>.npz``, one file per window, holding
``velocity`` ``(2, H, W)`` float32 pixels per time step (pysteps' order: x then y) and
``last_index`` (the input frame the extrapolation advects). ``store key`` is a hash of the
store's absolute path and a content id (its time axis and grid shape), so a rewritten store at the
same path gets new entries; ``method key`` names the motion method and hashes its options.

Concurrency (DataLoader workers, DDP ranks): an entry is written to a temporary file in the
same folder and renamed into place (``os.replace``, atomic on POSIX), so a reader sees a whole
entry or none. Two processes that miss the same window both compute it and the later rename
wins with identical content; nothing is ever half-written. Each process also keeps the
entries it has read in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

DEFAULT_ROOT_ENV = "NOWCAST_INFILL_MOTION_CACHE"


def default_cache_root() -> Path:
    """``$NOWCAST_INFILL_MOTION_CACHE``, else ``~/.cache/nowcast_infill/motion`` (never beside the
    store: shared data folders are often read-only)."""
    env = os.environ.get(DEFAULT_ROOT_ENV)
    return Path(env) if env else Path.home() / ".cache" / "nowcast_infill" / "motion"


def store_key(path: str | Path, content: dict) -> str:
    """Stable key of a store: its absolute path plus a JSON-able content id."""
    text = json.dumps({"path": str(Path(path).absolute()), "content": content}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def method_key(method: str, options: dict) -> str:
    """``<method>-<hash of options>``, e.g. ``lk-3f2a...``."""
    text = json.dumps(options, sort_keys=True, default=str)
    return f"{method}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


class MotionCache:
    """Per-window motion fields of one store and method, on disk and in memory.

    ``computed`` counts the motion fields this process computed (cache misses); tests use it
    to check that a second epoch computes none.
    """

    def __init__(self, root: str | Path, store: str, method: str):
        self.folder = Path(root) / store / method
        self.computed = 0
        self._memory: dict[int, tuple[np.ndarray, int]] = {}

    def __getstate__(self):
        # DataLoader workers get a copy without the in-memory entries (they read the files).
        return {**self.__dict__, "_memory": {}}

    def path(self, start: int) -> Path:
        return self.folder / f"w{int(start):09d}.npz"

    def get(self, start: int, compute: Callable[[], tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
        """(velocity (2, H, W) float32, last_index) of window `start`; `compute()` only on a miss."""
        start = int(start)
        if start in self._memory:
            return self._memory[start]
        path = self.path(start)
        entry = None
        if path.exists():
            with np.load(path) as data:
                entry = (data["velocity"].astype(np.float32), int(data["last_index"]))
        if entry is None:
            velocity, last_index = compute()
            entry = (np.asarray(velocity, np.float32), int(last_index))
            self.computed += 1
            self._write(path, *entry)
        self._memory[start] = entry
        return entry

    def _write(self, path: Path, velocity: np.ndarray, last_index: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp.npz")
        try:
            np.savez(tmp, velocity=velocity, last_index=np.int64(last_index))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
