"""convert(): round trip, append rules, gaps, bad inputs, skip_bad, interruption, CLI."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from data_factories_io import rain_field, write_radolan_ascii
from nowcast_infill.io.convert import convert
from nowcast_infill.io.importers import ConversionError, get_importer
from nowcast_infill.schema import validate_store

REPO = Path(__file__).resolve().parents[1]


def _ascii_series(folder: Path, stamps, shape=(30, 20), product="RY", seed=0):
    rng = np.random.default_rng(seed)
    return [write_radolan_ascii(folder, rain_field(rng, shape), s, product) for s in stamps]


def _open(path):
    ds = xr.open_zarr(path)
    validate_store(ds, path)
    return ds


@pytest.mark.shared_data
def test_round_trip_yw_equals_importer_and_keeps_nodata(shared_data, tmp_path):
    files = sorted((shared_data / "radolan" / "yw").iterdir())[:4]
    out = tmp_path / "yw.zarr"
    summary = convert(files, out, "radolan", progress=False, workers=2)
    assert summary["n_frames_written"] == 4 and summary["product"] == "YW"
    ds = _open(out)
    importer = get_importer("radolan")
    for i, path in enumerate(files):
        (frame,) = importer.read(path)
        stored = ds["precip"].isel(time=i).values
        np.testing.assert_array_equal(np.isnan(stored), np.isnan(frame.precip))
        np.testing.assert_array_equal(stored, frame.precip)
        assert ds["time"].values[i] == frame.time
        assert ds.attrs["source_files"][i] == {
            "name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "time": str(np.datetime_as_string(frame.time, unit="s")),
        }
    assert ds["precip"].attrs["units"] == "mm h-1" and ds["precip"].attrs["grid_mapping"] == "crs"
    assert ds["crs"].attrs["grid_mapping_name"] == "polar_stereographic" and "+proj=stere" in ds["crs"].attrs["proj4"]
    assert ds.attrs["accumulation_interval_s"] == 300 and ds.attrs["time_step_s"] == 300
    assert ds.attrs["conversion"] == "mm per 300 s * 12" and "boo" in ds.attrs["radar_sites"]
    assert ds["lat"].shape == (1100, 900) and not ds["missing_frame"].values.any()
    assert 0.3 < float(np.isnan(ds["precip"].values).mean()) < 0.45


def test_ascii_round_trip_with_gap_made_explicit(tmp_path):
    paths = _ascii_series(tmp_path, ["20221018-0005", "20221018-0010", "20221018-0025"])
    out = tmp_path / "ry.zarr"
    summary = convert(str(tmp_path / "RY_*.asc"), out, "radolan_ascii", progress=False, workers=1)
    assert summary["missing_times"] == ["2022-10-18T00:15:00", "2022-10-18T00:20:00"]
    ds = _open(out)
    assert ds.sizes["time"] == 5
    np.testing.assert_array_equal(ds["missing_frame"].values, [False, False, True, True, False])
    assert np.isnan(ds["precip"].isel(time=2).values).all() and np.isnan(ds["precip"].isel(time=3).values).all()
    assert ds.attrs["missing_times"] == summary["missing_times"]
    frame = get_importer("radolan_ascii").read(paths[2])[0]
    np.testing.assert_array_equal(ds["precip"].isel(time=4).values, frame.precip)


def test_append_in_order_resume_and_conflicts(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    paths = _ascii_series(src, ["20221018-0005", "20221018-0010", "20221018-0015", "20221018-0020"])
    out = tmp_path / "ry.zarr"
    convert(paths[:2], out, "radolan_ascii", progress=False, workers=1)
    again = convert(paths, out, "radolan_ascii", progress=False, workers=1)  # resume: first two known
    assert again["n_frames_written"] == 2 and again["n_already_present"] == 2
    ds = _open(out)
    assert list(ds["time"].values) == [np.datetime64(f"2022-10-18T00:{m:02d}", "ns") for m in (5, 10, 15, 20)]
    assert len(ds.attrs["source_files"]) == 4

    other = tmp_path / "other"
    other.mkdir()
    (dup,) = _ascii_series(other, ["20221018-0010"], seed=9)  # same time, different content
    with pytest.raises(ConversionError, match="duplicates a time already in") as err:
        convert(dup, out, "radolan_ascii", progress=False, workers=1)
    assert str(dup) in str(err.value)
    (grid,) = _ascii_series(other, ["20221018-0030"], shape=(31, 20))
    with pytest.raises(ConversionError, match="grid .* does not match the store") as err:
        convert(grid, out, "radolan_ascii", progress=False, workers=1)
    assert str(grid) in str(err.value)
    (prod,) = _ascii_series(other, ["20221018-0100"], product="RW")
    with pytest.raises(ConversionError, match="product RW .* does not match"):
        convert(prod, out, "radolan_ascii", progress=False, workers=1)
    twins = tmp_path / "twins"
    twins.mkdir()
    a = _ascii_series(twins, ["20221018-0040"])[0]
    b = twins / "RY-20221018-0040.asc"
    shutil.copy(a, b)
    with pytest.raises(ConversionError, match="duplicate time"):
        convert([a, b], out, "radolan_ascii", progress=False, workers=1)
    assert _open(out).sizes["time"] == 4  # every refusal left the store untouched
    assert not list(tmp_path.glob("ry.zarr.*"))


@pytest.mark.shared_data
def test_corrupt_truncated_empty_unknown_files_and_skip_bad(shared_data, tmp_path):
    good = sorted((shared_data / "radolan" / "rw").iterdir())[:3]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    raw = __import__("gzip").open(good[0]).read()
    truncated = bad_dir / "raa01-rw_10000-1811220150-dwd---bin"
    truncated.write_bytes(raw[: len(raw) // 2])
    empty = bad_dir / "empty---bin"
    empty.write_bytes(b"")
    corrupt = bad_dir / "corrupt---bin.gz"
    corrupt.write_bytes(b"\x1f\x8b garbage that is not gzip")
    unknown = bad_dir / "notes.txt"
    unknown.write_text("hello radar")
    wrong_product = shared_data / "radolan" / "showcase" / "raa01-pg_10000-1408102045-dwd---bin.gz"
    cases = {truncated: "truncated", empty: "empty", corrupt: "not a readable RADOLAN", unknown: "not a readable RADOLAN",
             wrong_product: "not a precipitation amount"}
    for path, match in cases.items():
        with pytest.raises(ConversionError, match=match) as err:
            convert([good[0], path], tmp_path / "x.zarr", "radolan", progress=False, workers=1)
        assert str(err.value).startswith(str(path)), err.value
        assert not (tmp_path / "x.zarr").exists()
    out = tmp_path / "skip.zarr"
    summary = convert([*good, *cases], out, "radolan", skip_bad=True, progress=False, workers=2)
    assert summary["n_frames_written"] == 3 and len(summary["skipped_files"]) == 5
    ds = _open(out)
    assert {d["name"] for d in ds.attrs["skipped_files"]} == {p.name for p in cases}
    assert all(d["error"] for d in ds.attrs["skipped_files"])


_KILL_SCRIPT = """
import sys
from nowcast_infill.io.convert import convert
convert(sys.argv[1:-1], sys.argv[-1], "radolan_ascii", progress=False, workers=1, commit_every=1)
"""


def test_killed_conversion_resumes_without_loss_or_doubling(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    stamps = [f"20221018-{h:02d}{m:02d}" for h in (0, 1) for m in range(0, 60, 5)]
    paths = _ascii_series(src, stamps, shape=(120, 100))
    out = tmp_path / "kill.zarr"
    convert(paths[:3], out, "radolan_ascii", progress=False, workers=1)
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, *map(str, paths), str(out)], cwd=tmp_path)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if list(tmp_path.glob("kill.zarr.tmp-*")) and xr.open_zarr(out).sizes["time"] >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "conversion finished before it could be interrupted; use more or larger files"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ds = _open(out)  # opens, consistent, no partial frame
    n = ds.sizes["time"]
    assert 3 <= n < len(paths)
    times = ds["time"].values
    assert len(set(times)) == n and np.all(np.diff(times) > np.timedelta64(0))
    assert len(ds.attrs["source_files"]) == n
    ds.close()
    summary = convert(paths, out, "radolan_ascii", progress=False, workers=1)
    # A kill after the commit marker is finished (rolled forward) on resume: with
    # commit_every=1 that adds at most the one frame being published.
    assert n <= summary["n_already_present"] <= n + 1
    assert summary["n_already_present"] + summary["n_frames_written"] == len(paths)
    ds = _open(out)
    assert ds.sizes["time"] == len(paths) and not ds["missing_frame"].values.any()
    assert [d["name"] for d in ds.attrs["source_files"]] == [p.name for p in paths]
    last = get_importer("radolan_ascii").read(paths[-1])[0]
    np.testing.assert_array_equal(ds["precip"].isel(time=-1).values, last.precip)
    assert not list(tmp_path.glob("kill.zarr.*"))


def test_cli_converts_and_reports_bad_input_without_traceback(tmp_path):
    _ascii_series(tmp_path, ["20221018-0005", "20221018-0010"])
    exe = [sys.executable, "-m", "nowcast_infill.cli.convert"]
    ok = subprocess.run([*exe, "source=radolan_ascii", f"inputs={tmp_path}/RY_*.asc", f"output={tmp_path}/cli.zarr",
                         "progress=false"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert '"n_frames_written": 2' in ok.stdout
    (tmp_path / "RY_20221018-0015.asc").write_text("ncols 3\n")
    bad = subprocess.run([*exe, "source=radolan_ascii", f"inputs={tmp_path}/RY_*.asc", f"output={tmp_path}/cli.zarr",
                          "progress=false"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2
    assert "RY_20221018-0015.asc" in bad.stderr and "Traceback" not in bad.stderr
    unknown = subprocess.run([*exe, "source=nope", f"inputs={tmp_path}/RY_*.asc", "output=x.zarr"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert unknown.returncode == 2 and "radolan_ascii" in unknown.stderr and "Traceback" not in unknown.stderr


@pytest.mark.parametrize("time_chunk", [1, 4])
def test_append_out_of_order_with_gap_keeps_every_value(tmp_path, time_chunk):
    # time chunk 1 re-indexes chunk directories in staging; 4 rewrites the partly
    # filled last chunk of the store through the scratch array: both must give the same store.
    stamps = ["20221018-0005", "20221018-0010", "20221018-0015", "20221018-0020", "20221018-0030", "20221018-0035"]
    paths = _ascii_series(tmp_path, stamps, shape=(40, 30))
    out = tmp_path / "ooo.zarr"
    chunks = {"time": time_chunk, "y": 16, "x": 16}
    convert(paths[:3], out, "radolan_ascii", progress=False, workers=1, chunks=chunks)
    summary = convert(paths[:2:-1], out, "radolan_ascii", progress=False, workers=1, chunks=chunks)  # newest first
    assert summary["n_frames_written"] == 3 and summary["missing_times"] == ["2022-10-18T00:25:00"]
    ds = _open(out)
    assert ds["precip"].encoding["chunks"][0] == time_chunk and ds.sizes["time"] == 7
    np.testing.assert_array_equal(ds["missing_frame"].values, [False] * 4 + [True] + [False] * 2)
    importer = get_importer("radolan_ascii")
    stored = ds["precip"].values
    for index, path in zip([0, 1, 2, 3, 5, 6], paths):
        np.testing.assert_array_equal(stored[index], importer.read(path)[0].precip)
    assert np.isnan(stored[4]).all()
    assert [d["name"] for d in ds.attrs["source_files"]] == [p.name for p in paths]
    assert not list(tmp_path.glob("ooo.zarr.*"))
