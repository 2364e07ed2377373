"""experiments/verify_nowcast_pysteps.py: a ni-nowcast product issued at every time,
verified with pySTEPS' scores and plotted with its precipitation colours (tiny size)."""

from __future__ import annotations

import sys

import numpy as np
import xarray as xr

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "experiments"))
import verify_nowcast_pysteps  # noqa: E402


def test_verifies_every_lead_on_the_pixels_both_observed(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    rows = verify_nowcast_pysteps.main(["--out", str(tmp_path), "--model", "persistence", "--n-leads", "2"])
    product, observed = xr.open_zarr(tmp_path / "nowcast.zarr"), xr.open_zarr(tmp_path / "synthetic.zarr")
    assert [r["lead_min"] for r in rows] == [5, 10]
    # Recompute lead 1 by hand: persistence forecasts frame t for t+1, scored where both exist.
    obs = observed["precip"].values
    issues = np.searchsorted(observed["time"].values, product["forecast_reference_time"].values)
    errors, pairs = [], 0
    for t in issues:
        if t + 1 < len(obs):
            both = np.isfinite(obs[t]) & np.isfinite(obs[t + 1])
            errors.append((obs[t][both] - obs[t + 1][both]) ** 2)
            pairs += int(both.sum())
    assert rows[0]["issue_times"] == len(errors) and rows[0]["pixel_pairs"] == pairs
    assert np.isclose(rows[0]["RMSE"], np.sqrt(np.concatenate(errors).mean()), rtol=1e-5)
    assert 0 < rows[0]["CSI@1mmh"] <= 1 and rows[1]["RMSE"] >= rows[0]["RMSE"]
    assert (tmp_path / "verification.md").read_text().startswith("# persistence on")
    assert (tmp_path / "nowcast_vs_observed.png").stat().st_size > 10_000
