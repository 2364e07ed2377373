"""One writer per store: concurrent ni-convert appends give the result of the same appends run one
after the other; a locked-out writer names the holder; a killed holder leaves no lock behind."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from data_factories_io import rain_field, write_radolan_ascii
from factories import write_test_store
from nowcast_infill.io.convert import convert
from nowcast_infill.io.importers import ConversionError
from nowcast_infill.io.store_lock import StoreLock, StoreLockedError, StoreLockError

# Minutes of 2022-10-18 00:xx: the initial store, and two disjoint later sets; the second
# leaves a gap (00:30) that becomes a missing frame.
INITIAL, FIRST_SET, SECOND_SET = (5, 10), (15, 20, 25), (35, 40)


def _files(folder: Path, minutes, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    return [write_radolan_ascii(folder, rain_field(rng, (30, 20)), f"20221018-00{m:02d}", "RY") for m in minutes]


@pytest.fixture
def sources(tmp_path) -> dict[str, list[Path]]:
    return {"initial": _files(tmp_path / "initial", INITIAL, 0), "early": _files(tmp_path / "early", FIRST_SET, 1),
            "late": _files(tmp_path / "late", SECOND_SET, 2)}


def _wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s: {what}")
        time.sleep(0.05)


def _holder_pid(store: Path) -> int | None:
    try:
        return json.loads(Path(f"{store}.lock").read_text() or "{}").get("pid")
    except (OSError, ValueError):
        return None


# ni-convert's own entry point with gates the test opens: `<name>.start` before it runs, and
# `<name>.commit0` / `<name>.commit1` before its first / every later commit (`StoreWriter`)
# starts, as if its disk were slow there.
_GATED_NI_CONVERT = """
import sys, time
from pathlib import Path
import nowcast_infill.io.convert as convert_module
from nowcast_infill.cli.convert import main

gates = Path(sys.argv[1])
def wait(gate):
    while not Path(f"{gates}.{gate}").exists():
        time.sleep(0.02)
class GatedStoreWriter(convert_module.StoreWriter):
    started = 0
    def __init__(self, *args, **kwargs):
        wait(f"commit{min(GatedStoreWriter.started, 1)}")
        GatedStoreWriter.started += 1
        super().__init__(*args, **kwargs)
convert_module.StoreWriter = GatedStoreWriter
wait("start")
sys.argv = ["ni-convert", *sys.argv[2:]]
main()
"""


def _committed_files(store: Path) -> int:
    return len(json.loads((store / "zarr.json").read_text())["attributes"]["source_files"])


def _concurrent_ni_convert(tmp_path: Path, store: Path, first: str, second: str) -> tuple[dict, dict]:
    """Run `ni-convert` of `first` and of `second` into `store` at once (one commit per file),
    `first` taking the lock first and `second` waiting for it while `first` is between two
    commits; returns ({name: exit code}, {name: output})."""
    procs, logs = {}, {}
    gates = {name: tmp_path / name for name in (first, second)}
    for gate in ("commit0", "commit1"):  # once started, the second writer is held only by the lock
        Path(f"{gates[second]}.{gate}").touch()
    Path(f"{gates[first]}.start").touch()
    before = _committed_files(store)
    try:
        for name in (first, second):
            logs[name] = tmp_path / f"{name}.log"
            with open(logs[name], "w") as log:
                procs[name] = subprocess.Popen(
                    [sys.executable, "-c", _GATED_NI_CONVERT, str(gates[name]), "source=radolan_ascii",
                     f"inputs={tmp_path / name}/RY_*.asc", f"output={store}", "progress=false", "workers=1",
                     "commit_every=1", "lock_timeout=120"], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        # 1. the first writer holds the lock before its first commit starts
        _wait_until(lambda: _holder_pid(store) == procs[first].pid, 120, f"ni-convert {first} never took the store lock")
        # 2. the second one starts and waits for it
        Path(f"{gates[second]}.start").touch()
        _wait_until(lambda: "waiting up to 120 s for the store lock" in logs[second].read_text(), 120,
                    f"ni-convert {second} did not wait for the lock held by {first}")
        # 3. the first one commits one file and stops before its next commit: the lock is still its own
        Path(f"{gates[first]}.commit0").touch()
        _wait_until(lambda: _committed_files(store) == before + 1, 120, f"ni-convert {first} did not commit")
        time.sleep(1.0)  # five lock polls of the waiting writer
        assert _committed_files(store) == before + 1 and procs[second].poll() is None, "a writer got in between commits"
        Path(f"{gates[first]}.commit1").touch()
        codes = {name: proc.wait(timeout=120) for name, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return codes, {name: path.read_text() for name, path in logs.items()}


def _sequential(store: Path, sources: dict, order: tuple[str, str]) -> dict:
    codes = {}
    for name in order:
        try:
            convert(sources[name], store, "radolan_ascii", progress=False, workers=1, commit_every=1)
            codes[name] = 0
        except ConversionError:
            codes[name] = 2
    return codes


def _assert_same_store(a: Path, b: Path) -> None:
    with xr.open_zarr(a) as da, xr.open_zarr(b) as db:
        np.testing.assert_array_equal(da["time"].values, db["time"].values)
        np.testing.assert_array_equal(da["missing_frame"].values, db["missing_frame"].values)
        np.testing.assert_array_equal(da["precip"].values, db["precip"].values)  # NaN == NaN here
        # history: one line per commit, with the command and the clock time of each run
        assert len(da.attrs["history"].splitlines()) == len(db.attrs["history"].splitlines())
        strip = lambda attrs: {k: v for k, v in attrs.items() if k != "history"}  # noqa: E731
        assert strip(da.attrs) == strip(db.attrs)


@pytest.mark.parametrize("order", [("early", "late"), ("late", "early")], ids=["early-first", "late-first"])
def test_concurrent_ni_convert_appends_equal_the_same_appends_one_after_the_other(order, sources, tmp_path):
    concurrent, sequential = tmp_path / "concurrent.zarr", tmp_path / "sequential.zarr"
    for store in (concurrent, sequential):
        convert(sources["initial"], store, "radolan_ascii", progress=False, workers=1)
    codes, logs = _concurrent_ni_convert(tmp_path, concurrent, *order)
    want_codes = _sequential(sequential, sources, order)
    assert codes == want_codes, logs
    # early then late: both append (00:30 a missing frame); late first: early's times are now in
    # the store, so it is refused with the message a sequential run gives, naming its file.
    assert want_codes == ({"early": 0, "late": 0} if order[0] == "early" else {"late": 0, "early": 2})
    if order[0] == "late":
        assert "RY_20221018-0015.asc" in logs["early"] and "duplicates a time already in" in logs["early"]
        assert "Traceback" not in logs["early"]
    _assert_same_store(concurrent, sequential)
    with xr.open_zarr(concurrent) as ds:  # no frame with data is flagged missing
        missing = ds["missing_frame"].values
        assert np.isnan(ds["precip"].values[missing]).all() and missing.sum() == (1 if order[0] == "early" else 4)
    assert not list(tmp_path.glob("concurrent.zarr.tmp-*"))


# A process holding a store's lock until it is killed.
_HOLD_LOCK = """
import sys, time
from nowcast_infill.io.store_lock import StoreLock
StoreLock(sys.argv[1], command="ni-convert holder-under-test").acquire()
print("held", flush=True)
time.sleep(600)
"""


def _hold_lock(store: str, cwd: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, store], stdout=subprocess.PIPE, text=True, cwd=cwd)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _writers(tmp_path: Path, sources: dict) -> dict:
    """Writers of a store at a relative path (as a user would type it), by command."""
    from nowcast_infill.inference.archive import infill_store
    from nowcast_infill.inference.nowcast_product import write_nowcast
    from nowcast_infill.inference.predictors import load_predictor

    radar = write_test_store(tmp_path / "radar.zarr", n_time=6, ny=20, nx=24)
    return {
        "ni-convert": lambda store, timeout: convert(sources["initial"], store, "radolan_ascii", progress=False,
                                                     workers=1, lock_timeout=timeout),
        "ni-infill": lambda store, timeout: infill_store(load_predictor("nearest", "infill")[0], radar, store,
                                                         progress=False, lock_timeout=timeout),
        "ni-nowcast": lambda store, timeout: write_nowcast(load_predictor("persistence", "nowcast", n_leads=2)[0], radar,
                                                           store, past=1, n_leads=2, lock_timeout=timeout),
    }


@pytest.mark.parametrize("command", ["ni-convert", "ni-infill", "ni-nowcast"])
def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock(command, sources, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = "out/product.zarr"  # as the user wrote it
    write = _writers(tmp_path, sources)[command]
    holder = _hold_lock(store, tmp_path)
    try:
        with pytest.raises(StoreLockedError) as err:
            write(store, 0)
        message = str(err.value)
        assert message.startswith(f"{store}: another writer is using this store"), message
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message, message
        assert re.search(r"since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: ni-convert holder-under-test", message), message
        assert "lock_timeout=<seconds>" in message and "\n" not in message
        assert not Path(store).exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads(Path(f"{store}.lock").read_text())["pid"] == holder.pid  # the dead holder's line is left
    write(store, 0)  # but its lock died with it: taken at once
    assert Path(store).is_dir() and not Path(f"{store}.lock").exists()


def test_lock_timeout_waits_then_names_how_long(tmp_path, sources):
    store = str(tmp_path / "out.zarr")
    holder = _hold_lock(store, tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(StoreLockedError, match=r"still held after lock_timeout=0.6 s by pid \d+"):
            convert(sources["initial"], store, "radolan_ascii", progress=False, workers=1, lock_timeout=0.6)
        assert time.monotonic() - started >= 0.6
    finally:
        holder.kill()
        holder.wait()


_TRY_LOCK = """
import sys
from nowcast_infill.io.store_lock import StoreLock, StoreLockedError
try:
    StoreLock(sys.argv[1]).acquire()
    print("free")
except StoreLockedError as err:
    print(err.holder["pid"])
"""


def _seen_from_another_process(store: Path) -> str:
    return subprocess.run([sys.executable, "-c", _TRY_LOCK, str(store)], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_lock_is_reentrant_in_one_process_and_checks_its_timeout(tmp_path):
    store = tmp_path / "s.zarr"
    with StoreLock(store) as outer:
        with StoreLock(str(store)):  # the same store: nested, not a second writer
            assert outer.path == f"{store}.lock"
        assert _seen_from_another_process(store) == str(os.getpid())  # still held by the outer one
    assert not Path(f"{store}.lock").exists()  # released and removed
    assert _seen_from_another_process(store) == "free"
    for bad in (-1, "soon", float("nan"), True):
        with pytest.raises(StoreLockError, match="lock_timeout="):
            StoreLock(store, timeout=bad)
