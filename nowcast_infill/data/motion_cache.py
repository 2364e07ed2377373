"""Sidecar store of per-window prior data: computed once per (store, window, method), reused
across epochs and runs.

Layout: ``<root>/<store key>/<method key>/w<start>.npz``, one file per window, holding named
arrays: for the `extrapolation` prior ``velocity`` ``(2, H, W)`` float32 pixels per time step
(pysteps' order: x then y) and ``last_index`` (the input frame the extrapolation advects); for
the `sprog` prior ``forecast`` ``(T_out, H, W)`` float32 mm/h of the whole grid (S-PROG's
cascade is global, so a crop cannot be forecast on its own). ``store key`` is a hash of the
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


Entry = dict[str, np.ndarray]


class MotionCache:
    """Per-window arrays (motion fields, whole-grid forecasts) of one store and method, on disk
    and in memory.

    ``computed`` counts the entries this process computed (cache misses); tests use it to
    check that a second epoch computes none.
    """

    def __init__(self, root: str | Path, store: str, method: str):
        self.folder = Path(root) / store / method
        self.computed = 0
        self._memory: dict[int, Entry] = {}

    def __getstate__(self):
        # DataLoader workers get a copy without the in-memory entries (they read the files).
        return {**self.__dict__, "_memory": {}}

    def path(self, start: int) -> Path:
        return self.folder / f"w{int(start):09d}.npz"

    def get(self, start: int, compute: Callable[[], Entry]) -> Entry:
        """The named arrays of window `start`; `compute()` only on a miss."""
        start = int(start)
        if start in self._memory:
            return self._memory[start]
        path = self.path(start)
        if path.exists():
            with np.load(path) as data:
                entry = {name: data[name] for name in data.files}
        else:
            entry = {name: np.asarray(value) for name, value in compute().items()}
            self.computed += 1
            self._write(path, entry)
        self._memory[start] = entry
        return entry

    def _write(self, path: Path, entry: Entry) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp.npz")
        try:
            np.savez(tmp, allow_pickle=False, **entry)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
