"""The commit protocol of a radar store: a staging directory published atomically, recovered after a kill.

A writer (`StoreWriter`, nowcast_infill/io/store/writer.py) fills a staging directory
`NAME.zarr.tmp-<pid>` and publishes it in one commit (`mark_and_publish`):

* new store: the staging directory is a complete store, renamed to `NAME.zarr`.
* append: staging holds only copies of the small `zarr.json` metadata files and the
  chunk files the append writes (new frames; `time` / `missing_frame`, which are
  small). Publishing moves chunk files into the store with `os.replace`, then the
  arrays' `zarr.json`, and the root `zarr.json` last. Nothing of the existing store
  is copied, so an append costs what it writes, not the size of the store.

Why readers never see a partial frame: new frames land in chunks beyond the shape
recorded in the old metadata, so they are invisible until the metadata changes; a
chunk that holds old and new time steps (`time`, `missing_frame`, or `precip` with a
time chunk > 1) is replaced whole by `os.replace` (atomic on POSIX) and keeps the old
values in the old range. The root `zarr.json` carries the consolidated metadata that
`xarray.open_zarr` reads, so replacing that one file switches readers from the old
shape to the new one at once; chunk files are all in place before it.

A killed conversion: before any file of the store is touched, a marker file is
written into staging (atomically). `recover_store` (run by every writer) finishes a
marked commit by repeating the moves (idempotent), and deletes an unmarked staging
directory, leaving the store as it was. Files already listed in `source_files` with
the same SHA-256 are recognised on the next run, so a killed conversion resumes
with no frame lost or doubled.

One writer at a time: a `StoreWriter` holds the store's `StoreLock` (the file
`NAME.zarr.lock`, nowcast_infill/io/store_lock.py) from before it reads the store's
state until its commit is published, and `convert` holds it across all its commits; a
second writer waits `lock_timeout` seconds or fails naming the holder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from nowcast_infill.io.store_lock import StoreLock

log = logging.getLogger(__name__)

# Written into staging, atomically, once staging is complete; from then on the commit
# is finished (rolled forward) even when the writing process dies.
COMMIT_MARKER = "nowcast_infill_commit"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _suffix_pid(p: Path) -> int | None:
    try:
        return int(p.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def recover_store(path: str | Path) -> None:
    """Finish or undo what a killed commit left next to `path`.

    A staging directory `NAME.zarr.tmp-<pid>` of a dead process is rolled forward into
    the store when it carries the commit marker, and deleted otherwise. Runs under the
    store's lock (re-entrant: a writer that holds it calls this), so no live writer's
    staging is touched.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        return
    with StoreLock(path):
        _recover_unlocked(path, parent)


def _recover_unlocked(path: Path, parent: Path) -> None:
    for staging in sorted(parent.glob(path.name + ".tmp-*")):
        pid = _suffix_pid(staging)
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            continue
        if (staging / COMMIT_MARKER).exists():
            log.warning("finishing the commit %s -> %s (a previous conversion was killed mid-commit)", staging, path)
            _publish(staging, path)
        else:
            log.warning("removing %s left by an interrupted conversion", staging)
            shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, path: Path) -> None:
    """Move a marked staging directory into the store; idempotent, so it can be repeated."""
    if not path.exists():
        (staging / COMMIT_MARKER).unlink(missing_ok=True)
        staging.rename(path)
        return
    arrays = sorted(p.parent for p in staging.glob("*/zarr.json"))
    for array in arrays:  # chunks first: invisible to readers until the metadata changes
        for root, _dirs, files in os.walk(array):
            rel = Path(root).relative_to(staging)
            for name in files:
                if rel == array.relative_to(staging) and name == "zarr.json":
                    continue
                target = path / rel / name
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(Path(root) / name, target)
    for array in arrays:
        # An array new in this commit (e.g. the frame statistics added to a schema 1 store)
        # whose chunks all equal its fill value has no chunk file, so no directory yet.
        (path / array.relative_to(staging)).mkdir(parents=True, exist_ok=True)
        os.replace(array / "zarr.json", path / array.relative_to(staging) / "zarr.json")
    if (staging / "zarr.json").exists():
        os.replace(staging / "zarr.json", path / "zarr.json")  # the switch for readers
    shutil.rmtree(staging, ignore_errors=True)


def mark_and_publish(staging: Path, path: Path) -> None:
    """Mark the complete staging directory `staging` as committed (atomically), then publish it into `path`."""
    part = staging / (COMMIT_MARKER + ".part")
    part.write_text(json.dumps({"store": str(path), "pid": os.getpid()}))
    os.replace(part, staging / COMMIT_MARKER)
    _publish(staging, path)
