"""ni-nowcast at every time of a range (issue_times): one forecast per issue time, verifiable
against the observations that follow it."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from factories import write_test_store
from nowcast_infill.errors import BadValueError
from nowcast_infill.inference.nowcast_product import write_nowcast
from nowcast_infill.inference.outputs import open_radar_store
from nowcast_infill.inference.predictors import load_predictor


@pytest.fixture
def store(tmp_path):
    return write_test_store(tmp_path / "in.zarr", n_time=8)


def test_range_of_issue_times_gives_one_forecast_each(store, tmp_path):
    src = open_radar_store(store)
    issues = src["time"].values[2:6]
    predictor, info = load_predictor("persistence", "nowcast", n_leads=2)
    write_nowcast(predictor, store, tmp_path / "nc.zarr", past=3, n_leads=2, model_info=info,
                  issue_times=[str(issues[0]), str(issues[-1])])
    nc = xr.open_zarr(tmp_path / "nc.zarr")
    assert nc["precip"].dims == ("forecast_reference_time", "lead_time", "y", "x")
    assert np.array_equal(nc["forecast_reference_time"].values, issues)
    step = np.timedelta64(300, "s")
    assert np.array_equal(nc["time"].values, issues[:, None] + np.array([1, 2]) * step)
    for k, issue in enumerate(issues):  # persistence: every lead is the frame at the issue time
        last = src["precip"].sel(time=issue).values
        assert np.array_equal(nc["precip"].values[k, 1], last, equal_nan=True)
    assert nc.attrs["n_issue_times"] == 4 and nc.attrs["issue_times_without_data"] == 0
    assert nc.attrs["model"] == "persistence" and nc.attrs["product"] == "nowcast" and nc.attrs["past_frames"] == 3


def test_all_issue_times_start_where_past_frames_exist(store, tmp_path):
    predictor, info = load_predictor("persistence", "nowcast", n_leads=1)
    write_nowcast(predictor, store, tmp_path / "nc.zarr", past=3, n_leads=1, issue_times="all")
    nc = xr.open_zarr(tmp_path / "nc.zarr")
    assert np.array_equal(nc["forecast_reference_time"].values, open_radar_store(store)["time"].values[2:])


@pytest.mark.parametrize("issue_times,message", [
    (["2021-06-01T00:05", "2021-06-01T00:25"], "needs past=3 frames"),
    (["2021-06-01T00:25", "2021-06-01T00:15"], "before the start"),
    (["2030-01-01T00:00", "2030-01-02T00:00"], "no frame"),
    ("some", "give all"),
])
def test_bad_ranges_are_refused_with_the_fix(store, tmp_path, issue_times, message):
    predictor, _ = load_predictor("persistence", "nowcast", n_leads=1)
    with pytest.raises(BadValueError, match=message):
        write_nowcast(predictor, store, tmp_path / "nc.zarr", past=3, n_leads=1, issue_times=issue_times)
    assert not (tmp_path / "nc.zarr").exists()
