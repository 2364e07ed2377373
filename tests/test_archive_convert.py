"""The archive path: tar bundles as inputs, and conversion by many region writers (plan / write / finalise)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from data_factories_io import rain_field, write_radolan_ascii
from nowcast_infill.errors import UserError
from nowcast_infill.io import frame_stats, region_writer
from nowcast_infill.io.convert import convert
from nowcast_infill.io.importers import ConversionError
from nowcast_infill.io.region_writer import (IncompleteConversionError, conversion_dir, convert_parallel, finalise_store,
                                             plan_store, write_region)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))
from bench_archive import write_synthetic_archive  # noqa: E402

TINY = (460, 460)  # rows, columns of the tiny synthetic YW archive: a RADOLAN size wradlib knows, not YW's (allow_nonstandard_grid)
TINY_OPTIONS = {"allow_nonstandard_grid": True}


def assert_same_store(a: Path, b: Path, same_sources: bool = True) -> None:
    """Same arrays and attributes (but history; and provenance unless `same_sources`), every `precip` chunk file the same bytes."""
    ignored = {"history"} if same_sources else {"history", "source_files"}
    with xr.open_zarr(a) as da, xr.open_zarr(b) as db:
        xr.testing.assert_identical(da.drop_attrs(), db.drop_attrs())
        assert {k: v for k, v in da.attrs.items() if k not in ignored} == {k: v for k, v in db.attrs.items() if k not in ignored}
        times = [[r["time"] for r in d.attrs["source_files"]] for d in (da, db)]
        assert times[0] == times[1]
    chunks_a = sorted(p.relative_to(a) for p in (a / "precip" / "c").rglob("*") if p.is_file())
    chunks_b = sorted(p.relative_to(b) for p in (b / "precip" / "c").rglob("*") if p.is_file())
    assert chunks_a == chunks_b
    for rel in chunks_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def _tar(path: Path, members: list[Path], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for m in members:
            tar.add(m, arcname=m.name)
    return path


# ------------------------------------------------------------------ bundles

@pytest.mark.shared_data
def test_bundles_of_rw_binary_files_convert_to_the_same_store_as_the_files(shared_data, tmp_path):
    files = sorted((shared_data / "radolan" / "rw").glob("raa01-rw_*"))[:6]
    plain = convert(files, tmp_path / "plain.zarr", source="radolan", workers=1, progress=False)
    # Two daily .tar.gz (members still .gz, as DWD ships them) inside a monthly .tar: a bundle of bundles.
    days = [_tar(tmp_path / "day1.tar.gz", files[:3]), _tar(tmp_path / "day2.tar.bz2", files[3:], "w:bz2")]
    month = _tar(tmp_path / "month.tar", days, "w")
    nested = convert([month], tmp_path / "nested.zarr", source="radolan", workers=2, progress=False)
    assert nested["n_frames_written"] == plain["n_frames_written"] == 6
    assert_same_store(tmp_path / "plain.zarr", tmp_path / "nested.zarr", same_sources=False)
    with xr.open_zarr(tmp_path / "nested.zarr") as ds:
        record = ds.attrs["source_files"][0]
    import hashlib

    month_sha = hashlib.sha256(month.read_bytes()).hexdigest()
    assert record["name"] == f"month.tar!day1.tar.gz!{files[0].name}"
    assert record["sha256"] == f"{month_sha}:day1.tar.gz!{files[0].name}"


def test_a_bundle_of_rw_ascii_grids_converts_like_its_files(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "asc"
    folder.mkdir()
    files = [write_radolan_ascii(folder, rain_field(rng, (30, 20)), f"20221018-{h:02d}50", "RW") for h in range(4)]
    convert(files, tmp_path / "plain.zarr", source="radolan_ascii", workers=1, progress=False)
    bundle = _tar(tmp_path / "asc.tar", files, "w")
    convert([bundle], tmp_path / "bundle.zarr", source="radolan_ascii", workers=1, progress=False)
    assert_same_store(tmp_path / "plain.zarr", tmp_path / "bundle.zarr", same_sources=False)


def test_a_corrupt_member_is_named_bundle_bang_member(tmp_path):
    bundles = write_synthetic_archive(tmp_path / "a", n_frames=3, shape=TINY)
    good = tarfile.open(bundles[0])
    members = [(m, good.extractfile(m).read()) for m in good.getmembers()]
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        for k, (m, blob) in enumerate(members):
            blob = blob[: len(blob) // 2] if k == 1 else blob  # the second file cut in half
            m.size = len(blob)
            tar.addfile(m, io.BytesIO(blob))
    with pytest.raises(ConversionError) as err:
        convert([bad], tmp_path / "s.zarr", source="radolan", workers=1, progress=False, **TINY_OPTIONS)
    assert str(err.value).startswith(f"{bad}!{members[1][0].name}: file is truncated")
    # skip_bad: the two good members are stored, the bad one listed by its bundle!member name
    done = convert([bad], tmp_path / "s.zarr", source="radolan", workers=1, progress=False, skip_bad=True, **TINY_OPTIONS)
    assert done["n_frames_written"] == 2 and done["skipped_files"][0]["name"] == f"bad.tar.gz!{members[1][0].name}"


def test_a_cut_short_bundle_is_named(tmp_path):
    bundle = write_synthetic_archive(tmp_path / "a", n_frames=4, shape=TINY)[0]
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    with pytest.raises(ConversionError, match=rf"^{cut}!raa01-yw.*: the tar bundle is damaged or cut short"):
        convert([cut], tmp_path / "s.zarr", source="radolan", workers=1, progress=False, **TINY_OPTIONS)


# ------------------------------------------------------------------ region writers

def _ni_convert(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "nowcast_infill.cli.convert", *args, "progress=false"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_region_writer_processes_equal_one_process_and_gaps_are_explicit(tmp_path):
    # 10 steps in 3 bundles, step 4 missing (a file absent from the archive)
    bundles = write_synthetic_archive(tmp_path / "a", n_frames=10, shape=TINY, frames_per_bundle=4, skip_steps=[4])
    inputs = f"inputs=[{','.join(map(str, bundles))}]"
    # max_gap_s=None: a pre-sized store fills every gap of its range, so the reference does too
    one = convert(bundles, tmp_path / "one.zarr", source="radolan", workers=1, progress=False, max_gap_s=None,
                  **TINY_OPTIONS)
    out = tmp_path / "two.zarr"
    _ni_convert("step=plan", "tasks=2", inputs, f"output={out}", "importer.allow_nonstandard_grid=true")
    writers = [subprocess.Popen([sys.executable, "-m", "nowcast_infill.cli.convert", "step=write", f"output={out}", f"task_id={k}"],
                                env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for k in range(2)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    done = finalise_store(out)
    assert one["missing_times"] == done["missing_times"] == ["2017-08-16T00:25:00"]
    assert_same_store(tmp_path / "one.zarr", out)
    with xr.open_zarr(out) as ds:
        assert ds["missing_frame"].values.tolist() == [i == 4 for i in range(10)]
        assert np.isnan(ds["precip"][4].values).all()
        assert "conversion_incomplete" not in ds.attrs
    assert not conversion_dir(out).exists()


def test_an_unfinished_task_is_named_by_time_range_and_a_rerun_completes_the_store(tmp_path):
    bundles = write_synthetic_archive(tmp_path / "a", n_frames=8, shape=TINY, frames_per_bundle=4)
    out = tmp_path / "s.zarr"
    plan = plan_store(bundles, out, "radolan", tasks=2, **TINY_OPTIONS)
    assert [(t["first"], t["last"]) for t in plan["tasks"]] == [("2017-08-16T00:05:00", "2017-08-16T00:20:00"),
                                                                ("2017-08-16T00:25:00", "2017-08-16T00:40:00")]
    write_region(out, 0)
    # task 1 is killed after writing some chunks: no record, so finalise names its range
    proc = _ni_convert("step=finalise", f"output={out}", check=False)
    assert proc.returncode != 0
    assert "task 1: 2017-08-16T00:25:00 to 2017-08-16T00:40:00 not finished" in proc.stderr
    assert "sbatch --array=1 slurm/convert_array.sbatch" in proc.stderr
    with xr.open_zarr(out) as ds:  # still reads as all missing until finalised
        assert ds["missing_frame"].values.all() and "conversion_incomplete" in ds.attrs
    write_region(out, 1)
    done = finalise_store(out)
    assert done["n_frames_written"] == 8 and done["missing_times"] == []
    # max_gap_s=None: a pre-sized store fills every gap of its range, so the reference does too
    one = convert(bundles, tmp_path / "one.zarr", source="radolan", workers=1, progress=False, max_gap_s=None,
                  **TINY_OPTIONS)
    assert one["n_frames_written"] == 8
    assert_same_store(tmp_path / "one.zarr", out)


def test_a_time_range_wider_than_the_inputs_gives_explicit_gaps_at_its_ends(tmp_path):
    bundles = write_synthetic_archive(tmp_path / "a", n_frames=4, shape=TINY)
    out = tmp_path / "s.zarr"
    done = convert_parallel(bundles, out, "radolan", processes=1, time_range=["2017-08-16T00:00", "2017-08-16T00:30"],
                            **TINY_OPTIONS)
    assert done["missing_times"] == ["2017-08-16T00:00:00", "2017-08-16T00:25:00", "2017-08-16T00:30:00"]
    with xr.open_zarr(out) as ds:
        assert ds.sizes["time"] == 7 and int(ds["missing_frame"].sum()) == 3


def test_a_frame_outside_its_task_range_is_refused_naming_the_member(tmp_path):
    bundles = write_synthetic_archive(tmp_path / "a", n_frames=4, shape=TINY)
    out = tmp_path / "s.zarr"
    plan_store(bundles, out, "radolan", time_range=["2017-08-16T00:05", "2017-08-16T00:15"], **TINY_OPTIONS)
    with pytest.raises(ConversionError, match=r"!raa01-yw2017.002_10000-1708160020-dwd---bin: time 2017-08-16T00:20:00 "
                                              r"is not a step of task 0's range"):
        write_region(out, 0)
    with pytest.raises(IncompleteConversionError) as err:
        finalise_store(out)
    assert err.value.incomplete == [(0, "2017-08-16T00:05:00", "2017-08-16T00:15:00", "not finished (killed, failed or never run)")]


def test_a_deleted_planned_store_with_its_plan_left_is_a_user_error_naming_the_store_and_the_fix(tmp_path):
    bundles = write_synthetic_archive(tmp_path / "a", n_frames=2, shape=TINY)
    out = tmp_path / "s.zarr"
    plan_store(bundles, out, "radolan", **TINY_OPTIONS)
    shutil.rmtree(out)  # the store is deleted, its s.zarr.conversion folder stays
    fix = (re.escape(f"{out}: ") + r"the store is absent but its conversion plan .*s\.zarr\.conversion remains"
           r".*re-run `ni-convert step=plan")
    with pytest.raises(UserError, match=fix):
        write_region(out, 0)
    with pytest.raises(UserError, match=fix):
        finalise_store(out)
    plan_store(bundles, out, "radolan", **TINY_OPTIONS)  # the fix: plan again (the old plan is replaced)
    write_region(out, 0)
    assert finalise_store(out)["n_frames_written"] == 2


def test_one_bundle_is_split_between_several_tasks_by_time(tmp_path, monkeypatch):
    # a day in one bundle on 3 tasks: each streams the bundle and decodes only its own steps' members
    bundles = write_synthetic_archive(tmp_path / "a", n_frames=9, shape=TINY, skip_steps=[3])
    plan = plan_store(bundles, tmp_path / "three.zarr", "radolan", tasks=3, **TINY_OPTIONS)
    assert [(t["first"][11:16], t["last"][11:16], t["select_by_time"]) for t in plan["tasks"]] == [
        ("00:05", "00:15", True), ("00:20", "00:30", True), ("00:35", "00:45", True)]
    decoded = []
    read_items = region_writer.read_items
    monkeypatch.setattr(region_writer, "read_items",
                        lambda items, *a, **k: read_items((decoded.append(i.path) or i for i in items), *a, **k))
    for k in range(3):
        write_region(tmp_path / "three.zarr", k)
    assert len(decoded) == 8  # each member once (by its DWD name), not each task every member
    assert finalise_store(tmp_path / "three.zarr")["missing_times"] == ["2017-08-16T00:20:00"]
    convert(bundles, tmp_path / "one.zarr", source="radolan", workers=1, progress=False, max_gap_s=None, **TINY_OPTIONS)
    assert_same_store(tmp_path / "one.zarr", tmp_path / "three.zarr")


def test_finalise_merges_the_tasks_statistics_and_reads_precip_only_where_they_are_missing(tmp_path, monkeypatch, caplog):
    from test_archive_data import _CountingGet  # counts precip chunk reads through zarr's local store

    bundles = write_synthetic_archive(tmp_path / "a", n_frames=10, shape=TINY, frames_per_bundle=4, skip_steps=[4])
    one = tmp_path / "one.zarr"
    convert(bundles, one, source="radolan", workers=1, progress=False, max_gap_s=None, **TINY_OPTIONS)
    stores = {}
    for name in ("merged", "partly_read"):
        stores[name] = tmp_path / f"{name}.zarr"
        plan_store(bundles, stores[name], "radolan", tasks=2, **TINY_OPTIONS)
        for k in range(2):
            write_region(stores[name], k)
    counter = _CountingGet(monkeypatch)
    done = finalise_store(stores["merged"])
    assert counter.keys == []  # every frame's statistics came from its task
    assert done["frame_stats"] == {"frames_from_tasks": 9, "frames_read": 0, "tasks_without_statistics": []}
    assert_same_store(one, stores["merged"])  # the statistics arrays included, as the one-process writer stores them
    a, b = frame_stats.load_frame_stats(one), frame_stats.load_frame_stats(stores["merged"])
    for field in ("valid_count", "wet_count", "log1p_mean", "log1p_m2", "implausible_count", "done", "pixel_valid_count"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)

    # a task whose statistics file is gone: only its frames are read, and finalise says so
    (conversion_dir(stores["partly_read"]) / "task-1.stats.npz").unlink()
    counter.keys.clear()  # assert_same_store read chunks
    with caplog.at_level("WARNING"):
        done = finalise_store(stores["partly_read"])
    assert done["frame_stats"] == {"frames_from_tasks": 7, "frames_read": 2, "tasks_without_statistics": [1]}
    assert len(counter.keys) == 2 and "2 frame(s) had no task statistics (task(s) 1)" in caplog.text
    assert_same_store(one, stores["partly_read"])


def test_split_by_time_tasks_find_their_inputs_by_name_and_a_missing_bundle_is_a_gap(tmp_path):
    # 12 steps in 3 bundles (00:05-00:20, 00:25-00:40, 00:45-01:00); the middle one is missing from the archive
    bundles = write_synthetic_archive(tmp_path / "a", n_frames=12, shape=TINY, frames_per_bundle=4)
    bundles[1].unlink()
    one = tmp_path / "one.zarr"
    convert([bundles[0], bundles[2]], one, source="radolan", workers=1, progress=False, max_gap_s=None, **TINY_OPTIONS)
    out = tmp_path / "five.zarr"
    pattern = str(tmp_path / "a" / "YW-*.tar.gz")
    _ni_convert("step=plan", "split=time", "tasks=5", f"inputs={pattern}", f"output={out}",
                "time_range=['2017-08-16T00:05','2017-08-16T01:00']", "importer.allow_nonstandard_grid=true")
    plan = json.loads((conversion_dir(out) / "plan.json").read_text())
    assert plan["inputs"] == [pattern] and all(t["inputs"] is None for t in plan["tasks"])  # no file list in the plan
    assert [(t["first"][11:16], t["last"][11:16]) for t in plan["tasks"]] == [
        ("00:05", "00:15"), ("00:20", "00:30"), ("00:35", "00:40"), ("00:45", "00:50"), ("00:55", "01:00")]
    records = [write_region(out, k) for k in range(5)]
    assert [[Path(p).name for p in r["inputs"]] for r in records] == [
        ["YW-201708160005.tar.gz"], ["YW-201708160005.tar.gz"], ["YW-201708160005.tar.gz"],
        ["YW-201708160005.tar.gz", "YW-201708160045.tar.gz"], ["YW-201708160045.tar.gz"]]
    done = finalise_store(out)
    assert done["missing_times"] == [f"2017-08-16T00:{m}:00" for m in (25, 30, 35, 40)]
    assert_same_store(one, out)


def test_split_by_time_refuses_undated_inputs_and_a_frame_outside_its_inputs_span(tmp_path):
    bundles = write_synthetic_archive(tmp_path / "a", n_frames=8, shape=TINY, frames_per_bundle=4)
    time_range = ["2017-08-16T00:05", "2017-08-16T00:40"]
    undated = bundles[1].rename(tmp_path / "a" / "YW-latest.tar.gz")
    with pytest.raises(UserError, match=r"YW-latest.tar.gz: no date stamp in the name"):
        plan_store(tmp_path / "a" / "*.tar.gz", tmp_path / "s.zarr", "radolan", split="time", time_range=time_range,
                   **TINY_OPTIONS)
    with pytest.raises(UserError, match=r"split=time: needs time_range"):
        plan_store(bundles[0], tmp_path / "s.zarr", "radolan", split="time", **TINY_OPTIONS)
    # named as if it started at 00:15: the first bundle's 00:20 frame lies past its span
    undated.rename(tmp_path / "a" / "YW-201708160015.tar.gz")
    out = tmp_path / "s.zarr"
    plan_store(tmp_path / "a" / "*.tar.gz", out, "radolan", split="time", time_range=time_range, **TINY_OPTIONS)
    with pytest.raises(ConversionError, match=r"YW-201708160005.tar.gz!raa01-yw2017.002_10000-1708160020-dwd---bin: "
                                              r"time 2017-08-16T00:20:00 lies outside 2017-08-16T00:05:00 to "
                                              r"2017-08-16T00:15:00.*plan again with split=inputs"):
        write_region(out, 0)


@pytest.mark.parametrize("name, stamp", [
    ("raa01-yw2017.002_10000-1708160055-dwd---bin", "2017-08-16T00:55"),
    ("/archive/YW2017.002_201708.tar", "2017-08-01T00:00"),
    ("YW2017.002_20170816.tar.gz", "2017-08-16T00:00"),
    ("month.tar!YW-201708160005.tar.gz", "2017-08-16T00:05"),
    ("YW-latest.tar.gz", None),
])
def test_name_time_reads_dwd_names_and_bundle_stamps(name, stamp):
    from nowcast_infill.io.dated_inputs import name_time

    assert name_time(name) == (np.datetime64(stamp, "ns") if stamp else None)
