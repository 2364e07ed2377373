"""The archive case (issue 13): segments instead of materialised gaps, start-up from stored
per-frame statistics (no `precip` chunk read), wet importance sampling."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import xarray as xr
import zarr

from data_factories_io import rain_field, write_radolan_ascii
from factories import make_test_dataset, write_dataset, write_test_store
from nowcast_infill import schema
from nowcast_infill.data.datamodule import RadarDataModule
from nowcast_infill.data.normalization import Normalizer
from nowcast_infill.io import frame_stats
from nowcast_infill.io.convert import convert

SPLIT = {"fractions": [0.6, 0.2, 0.2], "gap": 2}


def _event(folder, start: str, n: int, rng, skip=()):
    """`n` RY files every 5 min from `start` (YYYY-MM-DDTHH:MM), leaving out the indices in `skip`."""
    times = np.datetime64(start) + np.arange(n) * np.timedelta64(5, "m")
    for k, t in enumerate(times):
        if k not in skip:
            stamp = str(t.astype("datetime64[m]")).replace("-", "").replace("T", "-").replace(":", "")
            write_radolan_ascii(folder, rain_field(rng, (30, 20)), stamp, "RY")
    return times


@pytest.fixture(scope="module")
def three_events(tmp_path_factory):
    """Three 40-frame events 2015 / 2016 / 2017 (one with a 15-min hole) in one store."""
    folder = tmp_path_factory.mktemp("events")
    rng = np.random.default_rng(3)
    times = [_event(folder, "2015-07-01T12:00", 40, rng),
             _event(folder, "2016-06-13T03:00", 40, rng, skip=(10, 11, 12)),
             _event(folder, "2017-08-02T20:00", 40, rng)]
    out = folder / "events.zarr"
    summary = convert(str(folder / "RY_*.asc"), out, "radolan_ascii", progress=False, workers=1, commit_every=50)
    return out, summary, times


def _open(path):
    ds = xr.open_zarr(path)
    schema.validate_store(ds, path)
    return ds


def test_three_events_years_apart_make_one_small_store(three_events):
    out, summary, times = three_events
    ds = _open(out)
    # 120 frames, the 3 of the short gap explicit; not the ~230,000 5-min steps of 2015-2017.
    assert ds.sizes["time"] == 120
    assert summary["segment_starts"] == ["2016-06-13T03:00:00", "2017-08-02T20:00:00"]
    assert summary["missing_times"] == [str(t.astype("datetime64[s]")) for t in times[1][10:13]]
    np.testing.assert_array_equal(np.nonzero(ds[schema.MISSING_FRAME].values)[0], [50, 51, 52])
    segment = schema.segment_ids(ds["time"].values, ds.attrs["time_step_s"])
    np.testing.assert_array_equal(np.bincount(segment), [40, 40, 40])
    assert ds.attrs["nowcast_infill_schema"] == schema.SCHEMA_VERSION and ds.attrs["max_gap_s"] == 3600
    # The statistics written while converting equal those computed afterwards from the frames.
    stored = frame_stats.load_frame_stats(out)
    assert stored.complete
    fresh = frame_stats.stats_in_memory(out)
    np.testing.assert_array_equal(stored.valid_count, fresh.valid_count)
    np.testing.assert_array_equal(stored.wet_count, fresh.wet_count)
    np.testing.assert_array_equal(stored.pixel_valid_count, fresh.pixel_valid_count)
    np.testing.assert_allclose(stored.log1p_mean, fresh.log1p_mean, rtol=1e-12)
    np.testing.assert_allclose(stored.log1p_m2, fresh.log1p_m2, rtol=1e-9, atol=1e-12)


def test_max_gap_null_fills_every_gap(tmp_path):
    rng = np.random.default_rng(0)
    _event(tmp_path, "2020-01-01T00:00", 2, rng)
    _event(tmp_path, "2020-01-01T03:00", 2, rng)  # 2 h 50 min later
    out = tmp_path / "filled.zarr"
    summary = convert(str(tmp_path / "RY_*.asc"), out, "radolan_ascii", progress=False, workers=1, max_gap_s=None)
    assert summary["segment_starts"] == [] and _open(out).sizes["time"] == 38


@pytest.mark.parametrize("task", ["infill", "nowcast"])
def test_windows_never_straddle_a_segment(three_events, task):
    out, _, _ = three_events
    dm = RadarDataModule(store=out, task=task, past=3, future=3, context=2, crop_size=8, split=SPLIT,
                         masks={"name": "freeform"}, min_valid_fraction=0.0, batch_size=2)
    dm.setup()
    segment = schema.segment_ids(dm.datasets["train"].times_ns.astype("datetime64[ns]"), 300)
    crossing = 0
    for ds in dm.datasets.values():
        last = ds.starts + ds.window_length - 1
        assert (segment[ds.starts] == segment[last]).all()
    for name, report in dm.window_report.items():
        crossing += report["across_segments"]
    assert crossing > 0  # the splits do hold windows that would cross a boundary


class _CountingGet:
    """Counts reads of `precip` chunk files through zarr's local store (its async and sync reads
    both go through `zarr.storage._local._get`)."""

    def __init__(self, monkeypatch):
        import zarr.storage._local as local

        self.keys: list[str] = []
        original = local._get

        def get(path, *args, **kwargs):
            parts = path.parts
            if schema.PRECIP in parts and parts[parts.index(schema.PRECIP) + 1:][:1] == ("c",):
                self.keys.append(str(path))
            return original(path, *args, **kwargs)

        monkeypatch.setattr(local, "_get", get)


def test_setup_reads_no_precip_chunk_and_fits_the_normaliser_exactly(three_events, monkeypatch, tmp_path):
    out, _, _ = three_events
    counter = _CountingGet(monkeypatch)
    stats_path = tmp_path / "norm.json"
    dm = RadarDataModule(store=out, task="nowcast", past=2, future=2, crop_size=8, split=SPLIT,
                         stats_path=stats_path, min_valid_fraction=0.0)
    dm.setup()
    assert counter.keys == []
    # The same numbers as streaming every train frame (the pre-statistics way), within rounding.
    start, stop = 0, int(np.floor(0.6 * (120 - 4)))
    frames = zarr.open_array(str(out / schema.PRECIP), mode="r")[start:stop]
    streamed = Normalizer("log1p_scaled").fit(frames)
    assert counter.keys  # the counter does see chunk reads
    assert dm.normalizer.count == streamed.count
    np.testing.assert_allclose([dm.normalizer.mean, dm.normalizer.std], [streamed.mean, streamed.std], rtol=1e-10)
    assert Normalizer.load(stats_path).state_dict() == dm.normalizer.state_dict()
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (dm.batch_size, 2, 1, 8, 8)


def test_old_store_gets_statistics_once_rank0_computes_others_wait(tmp_path, monkeypatch):
    path = write_test_store(tmp_path / "old.zarr", n_time=30, missing=[5])  # written without statistics
    assert frame_stats.load_frame_stats(path) is None
    done = {}

    def setup(rank: int):
        dm = RadarDataModule(store=path, task="nowcast", past=2, future=2, crop_size=8, split=SPLIT,
                             min_valid_fraction=0.0)
        dm._world = lambda: (2, rank)
        dm.setup()
        done[rank] = dm

    computed = []
    original = frame_stats.compute_frame_stats
    monkeypatch.setattr(frame_stats, "compute_frame_stats",
                        lambda *a, **k: computed.append(threading.current_thread().name) or original(*a, **k))
    waiting = threading.Thread(target=setup, args=(1,), name="rank1")
    waiting.start()
    waiting.join(timeout=1.5)
    assert waiting.is_alive()  # rank 1 waits for rank 0's statistics
    setup(0)
    waiting.join(timeout=30)
    assert not waiting.is_alive() and set(done) == {0, 1}
    assert computed == [threading.current_thread().name]  # computed once, by rank 0
    stored = frame_stats.load_frame_stats(path)
    assert stored.complete and stored.valid_count[5] == 0
    np.testing.assert_array_equal(done[0].datasets["train"].starts, done[1].datasets["train"].starts)
    assert done[0].normalizer.state_dict() == done[1].normalizer.state_dict()
    # The statistics equal those of the frames, and the store is still a valid store.
    fresh = frame_stats.stats_in_memory(path)
    np.testing.assert_array_equal(stored.valid_count, fresh.valid_count)
    _open(path)
    # The next start reads no precip chunk.
    counter = _CountingGet(monkeypatch)
    RadarDataModule(store=path, task="nowcast", past=2, future=2, crop_size=8, split=SPLIT,
                    min_valid_fraction=0.0).setup()
    assert counter.keys == []


def test_compute_frame_stats_fills_what_is_missing_or_everything_on_request(tmp_path):
    path = write_test_store(tmp_path / "old.zarr", n_time=6)
    ds = _open(path)
    stats = frame_stats.compute_frame_stats(path)
    assert stats["frames_read"] == 6 and stats["created_arrays"]
    assert frame_stats.compute_frame_stats(path)["frames_read"] == 0  # missing_only: nothing left
    assert frame_stats.compute_frame_stats(path, missing_only=False)["frames_read"] == 6
    stored = frame_stats.load_frame_stats(path)
    np.testing.assert_array_equal(stored.pixel_valid_count, np.isfinite(ds[schema.PRECIP].values).sum(axis=0))


def test_wet_sampling_draws_wet_windows_more_often_and_logs_weights(tmp_path, caplog):
    ds = make_test_dataset(n_time=60)
    dry = np.arange(60) % 4 != 0  # three frames in four dry (0 mm/h, valid), as in most archives
    ds[schema.PRECIP].values[dry] = np.where(np.isnan(ds[schema.PRECIP].values[dry]), np.nan, 0.0)
    out = write_dataset(tmp_path / "mostly_dry.zarr", ds)
    args = dict(store=out, task="nowcast", past=2, future=1, crop_size=8, split=SPLIT, min_valid_fraction=0.0)
    uniform = RadarDataModule(**args)
    uniform.setup()
    assert uniform.train_weights is None
    with caplog.at_level("INFO"):
        wet = RadarDataModule(sampling="wet", sampling_threshold_mm_h=1.0, sampling_floor=0.05, **args)
        wet.setup()
    assert "effective sample size" in caplog.text
    report = wet.sampling_report
    assert 0 < report["effective_sample_size"] < report["windows"] and report["min_weight"] < 1 < report["max_weight"]
    stats = frame_stats.load_frame_stats(out)
    ds = wet.datasets["train"]
    wetness = stats.wet_fraction(1.0)[ds.starts[:, None] + ds.target_offsets[None, :]].mean(axis=1)
    assert (wetness == 0).mean() > 0.5
    sampler = wet.train_dataloader().sampler
    drawn = []
    for epoch in range(10):
        sampler.set_epoch(epoch)
        drawn += [i % len(ds) for i in sampler]
    dry_share = (wetness[drawn] == 0).mean()
    # Expected: 23 dry windows of weight 0.05 against 8 of ~0.3 wet fraction: ~1/3 dry, not 3/4.
    assert 0 < dry_share < 0.5  # wet windows favoured; the floor still draws dry ones
    sampler.set_epoch(0)
    assert [i % len(ds) for i in sampler] == drawn[:len(sampler)]  # seeded
    with pytest.raises(ValueError, match="sampling_threshold_mm_h.*stored thresholds"):
        RadarDataModule(sampling="wet", sampling_threshold_mm_h=2.0, **args).setup()
    with pytest.raises(ValueError, match="data.sampling='often'"):
        RadarDataModule(sampling="often", **args)


def test_inference_never_reads_across_a_segment(three_events, tmp_path):
    from nowcast_infill.errors import BadValueError
    from nowcast_infill.inference.frame_infiller import FrameCache
    from nowcast_infill.inference.nowcast_product import write_nowcast
    from nowcast_infill.inference.outputs import open_radar_store

    out, _, times = three_events
    src = open_radar_store(out)
    segment = schema.segment_ids(src["time"].values, src.attrs["time_step_s"])
    cache = FrameCache(src[schema.PRECIP], src[schema.MISSING_FRAME].values, segment)
    window = cache.window(40, 1)  # first frame of the 2016 event: its predecessor is from 2015
    assert np.isnan(window[0]).all() and np.isfinite(window[1]).any()
    np.testing.assert_array_equal(window[2], src[schema.PRECIP][41].values)
    persistence = lambda x, **_: np.repeat(x[-1:], 2, axis=0)  # noqa: E731
    with pytest.raises(BadValueError, match="segment began at 2016-06-13T03:00"):
        write_nowcast(persistence, out, tmp_path / "nc.zarr", past=3, n_leads=2, issue_time="2016-06-13T03:05")
    made = write_nowcast(persistence, out, tmp_path / "nc.zarr", past=3, n_leads=2, issue_time="2016-06-13T03:10")
    np.testing.assert_array_equal(made[schema.PRECIP][0].values, src[schema.PRECIP][42].values)


def test_append_to_a_store_without_statistics_adds_them_for_the_new_frames(tmp_path):
    from nowcast_infill.io.importers import Frame, make_grid
    from nowcast_infill.io.store import SourceRecord, StoreWriter

    path = write_test_store(tmp_path / "old.zarr", n_time=6)  # a schema 1 store: no statistics
    ds = _open(path)
    grid = make_grid(ds["x"].values, ds["y"].values, ds[schema.CRS].attrs["proj4"])
    writer = StoreWriter(path, source_name="synthetic")
    for k in range(2):
        when = ds["time"].values[-1] + np.timedelta64(300 * (k + 1), "s")
        precip = np.full(grid.shape, 2.0 * k, np.float32)
        precip[:3] = np.nan
        source = tmp_path / f"f{k}"
        writer.add(Frame(time=when, precip=precip, grid=grid, product="test", accumulation_interval_s=0,
                         conversion="none", source=source),
                   SourceRecord(name=source.name, sha256=f"{k:064x}", time=str(when)))
    writer.commit()
    stored = frame_stats.load_frame_stats(path)
    np.testing.assert_array_equal(stored.done, [False] * 6 + [True] * 2)
    assert stored.valid_count[6:].tolist() == [37 * 48] * 2 and stored.wet_count[7].tolist() == [37 * 48, 37 * 48, 0]
    assert _open(path).attrs["nowcast_infill_schema"] == schema.SCHEMA_VERSION
    assert frame_stats.compute_frame_stats(path)["frames_read"] == 6
    stored, fresh = frame_stats.load_frame_stats(path), frame_stats.stats_in_memory(path)
    assert stored.complete
    np.testing.assert_array_equal(stored.valid_count, fresh.valid_count)
    np.testing.assert_array_equal(stored.pixel_valid_count, fresh.pixel_valid_count)


def test_partial_statistics_of_separate_writers_are_merged_without_reading(tmp_path, monkeypatch):
    whole = write_test_store(tmp_path / "whole.zarr", n_time=10, missing=[4])
    split = write_test_store(tmp_path / "split.zarr", n_time=10, missing=[4])
    frame_stats.compute_frame_stats(whole)
    precip = zarr.open_array(str(split / schema.PRECIP), mode="r")
    partials = []
    for k, part in enumerate((np.arange(0, 6), np.arange(6, 10))):  # two "array tasks"
        values, pixels = frame_stats.compute_stats_arrays(precip, part)
        partials.append(frame_stats.save_partial_stats(tmp_path / f"part{k}.npz", part, values, pixels))
    counter = _CountingGet(monkeypatch)
    summary = frame_stats.compute_frame_stats(split, partials=partials)
    assert summary["frames_read"] == 0 and counter.keys == []
    a, b = frame_stats.load_frame_stats(whole), frame_stats.load_frame_stats(split)
    for name in ("valid_count", "wet_count", "implausible_count", "done", "pixel_valid_count"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_allclose(a.log1p_m2, b.log1p_m2)
    # A partial whose frames are done already is ignored: nothing counted twice.
    assert frame_stats.compute_frame_stats(split, partials=partials)["frames_read"] == 0
    np.testing.assert_array_equal(frame_stats.load_frame_stats(split).pixel_valid_count, a.pixel_valid_count)
