"""Sidecar store of per-window prior data (`model.prior`): computed once per (store, window,
method), reused across epochs and runs.

Layout: ``<root>/<store key>/<method key>/w<start>.npz``, one file per window, holding named
arrays: for the `extrapolation` and `sprog` priors ``forecast`` ``(T_out, H, W)`` float32 mm/h
of the whole grid (S-PROG's cascade is global, so a crop cannot be forecast on its own; a
cached forecast also spares the per-sample advection). ``store key`` is a hash of the
store's absolute path and a content id (its time axis and grid shape), so a rewritten store at the
same path gets new entries; ``method key`` names the prior method and hashes its options.

Concurrency (DataLoader workers, DDP ranks): an entry is written to a temporary file in the
same folder and renamed into place (``os.replace``, atomic on POSIX), so a reader sees a whole
entry or none. Two processes that miss the same window both compute it and the later rename
wins with identical content; nothing is ever half-written. Entries are written compressed
(a whole-grid rain forecast is mostly zeros: a 6 x 512 x 512 S-PROG forecast takes 0.5 MB
instead of 6.3 MB). Each process keeps the entries it used last in memory, up to `memory_mb`
(least recently used out first), so an archive of many windows never fills the RAM.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections import OrderedDict
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


def _nbytes(entry: Entry) -> int:
    return sum(int(value.nbytes) for value in entry.values())


class WindowCache:
    """Per-window named arrays (whole-grid forecasts) of one store and method, on disk
    and in memory.

    ``computed`` counts the entries this process computed (cache misses); tests use it to
    check that a second epoch computes none. ``memory_mb`` bounds the bytes of the entries
    kept in memory (a 6-lead S-PROG forecast of the KNMI grid is 4.3 MB, of RADOLAN's 24 MB;
    the default keeps about 240 KNMI windows); at least the entry in use is always kept.
    """

    def __init__(self, root: str | Path, store: str, method: str, memory_mb: float = 1024.0):
        self.folder = Path(root) / store / method
        self.computed = 0
        self.memory_bytes = int(memory_mb * 2**20)
        self._memory: OrderedDict[int, Entry] = OrderedDict()
        self._held = 0

    @property
    def in_memory(self) -> int:
        """Entries held in memory now."""
        return len(self._memory)

    def __getstate__(self):
        # DataLoader workers get a copy without the in-memory entries (they read the files).
        return {**self.__dict__, "_memory": OrderedDict(), "_held": 0}

    def path(self, start: int) -> Path:
        return self.folder / f"w{int(start):09d}.npz"

    def get(self, start: int, compute: Callable[[], Entry]) -> Entry:
        """The named arrays of window `start`; `compute()` only on a miss."""
        start = int(start)
        if start in self._memory:
            self._memory.move_to_end(start)
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
        self._held += _nbytes(entry)
        while self._held > self.memory_bytes and len(self._memory) > 1:
            self._held -= _nbytes(self._memory.popitem(last=False)[1])
        return entry

    def _write(self, path: Path, entry: Entry) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp.npz")
        try:
            np.savez_compressed(tmp, allow_pickle=False, **entry)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
