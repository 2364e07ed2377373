"""One writer per store: an exclusive lock held for a whole append or infill run.

Two `ni-convert` runs appending to one store would each read the store's time axis,
write their frames and publish metadata that knows only their own frames: frames with
data end up flagged `missing_frame` and the store refuses its own re-run. So every writer
(`ni-convert` / `convert`, `StoreWriter`, `ni-infill`'s output store, `ni-nowcast`'s
product) holds `StoreLock(store)` from before it reads the store until its last commit.

The lock is a POSIX record lock (`fcntl.lockf`, F_SETLK) on the file `NAME.zarr.lock`
beside the store. The kernel (or the NFS lock manager) owns it: it is released when the
holder exits in any way, SIGKILL included, so a killed writer never leaves a real lock
behind: the next writer takes it at once and overwrites the dead holder's line. While
the lock is held the file holds one line of JSON naming the holder (`pid`, `host`,
`started` UTC, `command`), which a locked-out writer quotes; the holder removes the file
when it is done (a writer that was waiting on the removed file sees so and locks the
current one). POSIX locks rather than `flock`: they are not inherited by the reader processes
`convert` forks, so a holder's death releases the lock even while its children linger,
and Linux NFS clients implement both through the same server-side locks.

A second writer waits up to `lock_timeout` seconds (default 0: it fails at once; a
positive number polls every 0.2 s; `inf` waits as long as it takes) and then raises
`StoreLockedError`, naming the store as the user wrote it, the holder and the fix.
Within one process the lock is re-entrant (`convert` holds it around the `StoreWriter`s
of its batches). Network file systems: see docs/schema.md § Concurrent writers.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from nowcast_infill.errors import UserError

log = logging.getLogger(__name__)

# Seconds a writer waits for a store held by another writer; 0 = fail at once.
DEFAULT_LOCK_TIMEOUT_S = 0.0
_POLL_S = 0.2
# errno values of a file system that cannot lock at all (NFS mounted `nolock`, Lustre
# without `-o flock` / `-o localflock`, some FUSE file systems).
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class StoreLockError(UserError):
    """The store lock cannot be taken at all (bad `lock_timeout`, no lock file, no locking on the file system)."""


class StoreLockedError(StoreLockError):
    """Another writer holds the store; `holder` is what it recorded (pid, host, started, command)."""

    def __init__(self, message: str, holder: dict):
        super().__init__(message)
        self.holder = holder


def lock_file_of(store: str | Path) -> str:
    """The lock file of `store`, spelt as the user wrote the store: `NAME.zarr` -> `NAME.zarr.lock`."""
    return str(store).rstrip("/") + ".lock"


def check_lock_timeout(timeout) -> float:
    """`timeout` as seconds >= 0 (inf allowed); StoreLockError naming `lock_timeout` otherwise."""
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(timeout, bool) or math.isnan(seconds) or seconds < 0:
        raise StoreLockError(
            f"lock_timeout={timeout!r}: must be seconds >= 0 (0 = fail at once when another writer "
            "holds the store, inf = wait for it as long as it takes)."
        )
    return seconds


def _describe(holder: dict) -> str:
    if not holder:
        return "a writer that has not yet recorded itself"
    command = f": {holder['command']}" if holder.get("command") else ""
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {holder.get('started', '?')}{command}"
    )


# Locks this process holds: realpath of the lock file -> [fd, depth]. POSIX locks belong to
# the process and closing *any* descriptor of the file drops them, so each lock file is
# opened once per process and nested holders share it.
_HELD: dict[str, list] = {}
_HELD_GUARD = threading.Lock()


class StoreLock:
    """Exclusive writer lock of the store at `store` (see the module docstring).

    Use as a context manager, or `acquire()` / `release()` (release is idempotent).
    `command` is recorded for a locked-out writer's message (default: this process's argv).
    """

    def __init__(self, store: str | Path, *, timeout: float = DEFAULT_LOCK_TIMEOUT_S, command: str | None = None):
        self.store = str(store)
        self.timeout = check_lock_timeout(timeout)
        self.command = " ".join(sys.argv) if command is None else str(command)
        self.path = lock_file_of(store)
        self._key: str | None = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> StoreLock:
        if self._key is not None:
            return self
        key = os.path.realpath(self.path)
        with _HELD_GUARD:
            if key in _HELD:
                _HELD[key][1] += 1
                self._key = key
                return self
        deadline = time.monotonic() + self.timeout
        waiting_logged = False
        while True:
            fd = self._open()
            try:
                waiting_logged = self._wait_for(fd, deadline, waiting_logged)
                if not self._still_the_lock_file(fd):
                    # Its holder finished and removed it while we waited: lock the current file instead.
                    os.close(fd)
                    continue
                holder = {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "command": self.command[:300],
                }
                os.ftruncate(fd, 0)  # a killed holder's line, if any
                os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
            except BaseException:
                os.close(fd)  # drops the lock if it was taken
                raise
            break
        with _HELD_GUARD:
            _HELD[key] = [fd, 1]
        self._key = key
        return self

    def release(self) -> None:
        key, self._key = self._key, None
        if key is None:
            return
        with _HELD_GUARD:
            entry = _HELD[key]
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _HELD[key]
        fd = entry[0]
        try:
            os.unlink(self.path)  # while still held; a waiter that then gets the old file sees it is gone
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)  # releases the lock

    # ------------------------------------------------------------------ internals
    def _open(self) -> int:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise StoreLockError(
                f"{self.store}: cannot create its lock file {self.path} ({err.strerror}); "
                "the folder of the store must be writable: choose another output."
            ) from None

    def _try_lock(self, fd: int) -> bool:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as err:
            if err.errno in (errno.EAGAIN, errno.EACCES):
                return False
            if err.errno in _NO_LOCKING:
                raise StoreLockError(
                    f"{self.store}: the file system of {self.path} does not support file locks ({err.strerror}), so "
                    "concurrent writers cannot be excluded; mount it with locking (NFS: without `nolock`; Lustre: "
                    "`-o flock`) or write the store on a local disk and copy it (docs/schema.md § Concurrent writers)."
                ) from None
            raise

    def _still_the_lock_file(self, fd: int) -> bool:
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)

    def _holder(self, fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (OSError, ValueError):
            return {}

    def _wait_for(self, fd: int, deadline: float, waiting_logged: bool) -> bool:
        """Lock `fd`, polling until `deadline` (time.monotonic); returns whether the wait was logged."""
        if self._try_lock(fd):
            return waiting_logged
        holder = self._holder(fd)
        if self.timeout > 0 and not waiting_logged:
            log.warning(
                "%s: waiting up to %g s for the store lock %s held by %s",
                self.store,
                self.timeout,
                self.path,
                _describe(holder),
            )
            waiting_logged = True
        while time.monotonic() < deadline:
            time.sleep(min(_POLL_S, max(0.0, deadline - time.monotonic())))
            if self._try_lock(fd):
                return waiting_logged
            holder = self._holder(fd) or holder
        waited = f"still held after lock_timeout={self.timeout:g} s" if self.timeout > 0 else "held"
        raise StoreLockedError(
            f"{self.store}: another writer is using this store ({waited} by {_describe(holder)}; lock file {self.path}); "
            "wait for it to finish and run again, or pass lock_timeout=<seconds> to wait for it.",
            holder,
        )
