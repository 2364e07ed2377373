"""convert(): round trip, append rules, gaps, bad inputs, skip_bad, interruption, CLI."""

from __future__ import annotations

import hashlib
import json
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
import zarr

from data_factories_io import rain_field, write_radolan_ascii
from process_watch import LoadScaledBudget
from nowcast_infill.io.convert import convert
from nowcast_infill.io.importers import ConversionError
from nowcast_infill.io.store import precip_layout
from nowcast_infill.registry import get_method
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
    importer = get_method("source", "radolan")
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


@pytest.mark.filterwarnings("ignore:Consolidated metadata:UserWarning")
@pytest.mark.parametrize("layout", [{}, {"chunks": {"time": 2, "y": 16, "x": 16}, "shards": {"time": 4, "y": 32}}],
                         ids=["whole-frame-chunks", "sharded"])
def test_store_files_are_those_xarray_writes(tmp_path, layout):
    # The writer creates the store with zarr directly and writes whole-frame chunks
    # without zarr's async pipeline: xarray, writing back what it reads from the store,
    # must give the same files, metadata and chunk bytes alike.
    stamps = ["20221018-0005", "20221018-0010", "20221018-0020", "20221018-0025", "20221018-0030"]
    paths = _ascii_series(tmp_path, stamps, shape=(40, 30))
    ours = tmp_path / "ours.zarr"
    convert(paths[:3], ours, "radolan_ascii", progress=False, workers=1, **layout)
    convert(paths[3:], ours, "radolan_ascii", progress=False, workers=1)  # an append as well
    theirs = tmp_path / "xarray.zarr"
    with xr.open_zarr(ours) as ds:
        assert ds["missing_frame"].values.tolist() == [False, False, True, False, False, False]
        ds.load().to_zarr(theirs, zarr_format=3, consolidated=True)
    files = sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
    for rel in files:
        if rel.name == "zarr.json":
            assert json.loads((ours / rel).read_text()) == json.loads((theirs / rel).read_text()), rel
        else:
            assert (ours / rel).read_bytes() == (theirs / rel).read_bytes(), rel


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
    frame = get_method("source", "radolan_ascii").read(paths[2])[0]
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


@pytest.mark.shared_data
def test_implausible_radolan_values_and_headers_fail_or_are_skipped_and_listed(shared_data, tmp_path):
    import gzip

    rw = sorted((shared_data / "radolan" / "rw").iterdir())
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    edits = {rw[2]: (b"PR E-01", b"PR E+99"), rw[3]: (b"INT  60", b"INT   1"), rw[4]: (b"GP 900x 900", b"GP 450x1800")}
    bad = []
    for source, (old, new) in edits.items():
        data = gzip.decompress(source.read_bytes())
        end = data.index(b"\x03")
        bad.append(bad_dir / source.name.removesuffix(".gz"))
        bad[-1].write_bytes(data[:end].replace(old, new) + data[end:])
    for path, match in zip(bad, ["PR gives a value unit of 1e\\+99", "INT gives an interval of 60 s", "GP 450x1800"]):
        with pytest.raises(ConversionError, match=match) as err:
            convert([rw[0], path], tmp_path / "x.zarr", "radolan", progress=False, workers=1)
        assert str(err.value).startswith(str(path)), err.value
        assert not (tmp_path / "x.zarr").exists()
    summary = convert([rw[0], rw[1], *bad], tmp_path / "skip.zarr", "radolan", skip_bad=True, progress=False, workers=1)
    assert summary["n_frames_written"] == 2 and [d["name"] for d in summary["skipped_files"]] == [p.name for p in bad]
    ds = _open(tmp_path / "skip.zarr")
    assert [d["name"] for d in ds.attrs["skipped_files"]] == [p.name for p in bad]
    assert np.nanmax(ds["precip"].values) < 500


_KILL_SCRIPT = """
import sys
from nowcast_infill.io.convert import convert
convert(sys.argv[1:-1], sys.argv[-1], "radolan_ascii", progress=False, workers=1, commit_every=1)
"""


@pytest.mark.parametrize("shards", [None, {"time": 1}], ids=["chunk-files", "sharded"])
def test_killed_conversion_resumes_without_loss_or_doubling(tmp_path, shards):
    src = tmp_path / "src"
    src.mkdir()
    stamps = [f"20221018-{h:02d}{m:02d}" for h in (0, 1) for m in range(0, 60, 5)]
    paths = _ascii_series(src, stamps, shape=(120, 100))
    out = tmp_path / "kill.zarr"
    # The layout is fixed when the store is created; the appends below keep it.
    convert(paths[:3], out, "radolan_ascii", progress=False, workers=1, chunks={"time": 1, "y": 32, "x": 32}, shards=shards)
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, *map(str, paths), str(out)], cwd=tmp_path)
    budget = LoadScaledBudget(15)  # starting Python + zarr and writing 5 frames: ~5 s idle
    while not budget.expired() and proc.poll() is None:
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
    last = get_method("source", "radolan_ascii").read(paths[-1])[0]
    np.testing.assert_array_equal(ds["precip"].isel(time=-1).values, last.precip)
    assert ds["precip"].encoding.get("shards") == (None if shards is None else (1, 128, 128))
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


@pytest.mark.parametrize(("time_chunk", "side", "shards"),
                         [(1, 16, None), (4, 16, None), (1, 16, {"time": 1}), (2, 16, {"time": 4, "y": 20}), (1, None, None),
                          (4, None, None)],
                         ids=["chunk1", "chunk4", "shard1", "shard4x2", "frame1", "frame4"])
def test_append_out_of_order_with_gap_keeps_every_value(tmp_path, time_chunk, side, shards):
    # One file per time step (time chunk 1, or shards of 1 frame) re-indexes directories
    # in staging; otherwise the partly filled last chunk / shard of the store is rewritten
    # through the scratch array; whole-frame chunks (side None) are encoded and written
    # without zarr's async pipeline, in place or into the scratch array: every layout
    # must give the same store.
    stamps = ["20221018-0005", "20221018-0010", "20221018-0015", "20221018-0020", "20221018-0030", "20221018-0035"]
    paths = _ascii_series(tmp_path, stamps, shape=(40, 30))
    out = tmp_path / "ooo.zarr"
    chunks = {"time": time_chunk, "y": side, "x": side}
    convert(paths[:3], out, "radolan_ascii", progress=False, workers=1, chunks=chunks, shards=shards)
    # newest first; the append keeps the store's layout whatever is passed
    summary = convert(paths[:2:-1], out, "radolan_ascii", progress=False, workers=1, shards=None)
    assert summary["n_frames_written"] == 3 and summary["missing_times"] == ["2022-10-18T00:25:00"]
    ds = _open(out)
    assert ds["precip"].encoding["chunks"][0] == time_chunk and ds.sizes["time"] == 7
    want_shards = None if shards is None else precip_layout((40, 30), chunks, shards)[1]
    assert ds["precip"].encoding.get("shards") == want_shards
    np.testing.assert_array_equal(ds["missing_frame"].values, [False] * 4 + [True] + [False] * 2)
    importer = get_method("source", "radolan_ascii")
    stored = ds["precip"].values
    for index, path in zip([0, 1, 2, 3, 5, 6], paths):
        np.testing.assert_array_equal(stored[index], importer.read(path)[0].precip)
    assert np.isnan(stored[4]).all()
    assert [d["name"] for d in ds.attrs["source_files"]] == [p.name for p in paths]
    assert not list(tmp_path.glob("ooo.zarr.*"))


def test_precip_layout_rounds_shards_and_names_bad_options():
    assert precip_layout((1100, 900), None, None) == ((1, 1100, 900), None)  # the default: one chunk per frame
    assert precip_layout((1100, 900), {"time": 1, "y": 256, "x": None}, None) == ((1, 256, 900), None)
    # Zarr needs shards that are multiples of the inner chunk: the whole grid rounded up.
    assert precip_layout((1100, 900), {"time": 1, "y": 256, "x": 256}, {"time": 1}) == ((1, 256, 256), (1, 1280, 1024))
    assert precip_layout((900, 900), {"y": 10_000, "x": 10_000}, None) == ((1, 900, 900), None)
    assert precip_layout((40, 30), {"time": 2, "y": 16, "x": 16}, {"time": 3, "y": 20}) == ((2, 16, 16), (4, 32, 32))
    with pytest.raises(ValueError, match=r"shards\.z: unknown dimension"):
        precip_layout((40, 30), None, {"z": 1})
    with pytest.raises(ValueError, match=r"shards\.time=0: must be a positive integer or null"):
        precip_layout((40, 30), None, {"time": 0})
    with pytest.raises(ValueError, match=r"chunks\.y=-3: must be a positive integer or null"):
        precip_layout((40, 30), {"y": -3}, None)
    with pytest.raises(ValueError, match=r"chunks\.time=None: must be a positive integer\."):
        precip_layout((40, 30), {"time": None}, None)


def test_bad_layout_option_fails_before_any_file_is_read(tmp_path):
    paths = _ascii_series(tmp_path, ["20221018-0005"])
    with pytest.raises(ValueError, match=r"shards\.y='full'"):
        convert(paths, tmp_path / "bad.zarr", "radolan_ascii", progress=False, workers=1, shards={"y": "full"})
    assert not list(tmp_path.glob("bad.zarr*"))


def test_sharded_store_reads_the_same_through_xarray_zarr_and_datamodule(tmp_path):
    from nowcast_infill.data.datamodule import RadarDataModule

    stamps = [f"20221018-{h:02d}{m:02d}" for h in (0, 1) for m in range(0, 60, 5)][:16]
    paths = _ascii_series(tmp_path, stamps, shape=(70, 50))
    layouts = {
        "chunk-files": dict(chunks={"time": 1, "y": 16, "x": 16}, shards=None),
        "frame-shards": dict(chunks={"time": 1, "y": 16, "x": 16}, shards={"time": 1}),
        "multi-frame-shards": dict(chunks={"time": 2, "y": 16, "x": 16}, shards={"time": 4, "y": 32, "x": 32}),
    }
    importer = get_method("source", "radolan_ascii")
    truth = np.stack([importer.read(p)[0].precip for p in paths])
    samples = {}
    for name, layout in layouts.items():
        out = tmp_path / f"{name}.zarr"
        convert(paths[:5], out, "radolan_ascii", progress=False, workers=1, **layout)
        convert(paths[5:], out, "radolan_ascii", progress=False, workers=1)  # append into the same layout
        np.testing.assert_array_equal(_open(out)["precip"].values, truth)
        precip = zarr.open_array(out / "precip", mode="r")
        assert precip.shards == (None if layout["shards"] is None else precip_layout((70, 50), **layout)[1])
        np.testing.assert_array_equal(precip[3:6, 10:40, 7:29], truth[3:6, 10:40, 7:29])  # crosses inner chunks
        dm = RadarDataModule(out, task="nowcast", past=2, future=1, crop_size=24, batch_size=4, seed=3,
                             split={"fractions": [0.5, 0.25, 0.25], "gap": 0}, min_valid_fraction=0.0,
                             stats_path=tmp_path / f"{name}.normalization.json")
        dm.setup()
        samples[name] = [dm.datasets["train"][i] for i in range(3)]
    reference = samples.pop("chunk-files")
    for name, got in samples.items():
        for a, b in zip(reference, got):
            assert a.keys() == b.keys()
            for key in a:
                torch_equal = (a[key] == b[key]) | (a[key].isnan() & b[key].isnan()) if a[key].is_floating_point() else a[key] == b[key]
                assert bool(torch_equal.all()), (name, key)
