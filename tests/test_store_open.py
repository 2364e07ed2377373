"""The io floor's one way to open a radar store (`open_store`) and a dataset by its name (`open_by_suffix`)."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from factories import make_test_dataset, write_test_store
from nowcast_infill.errors import MissingInputError
from nowcast_infill.io.files import file_sha256, open_by_suffix
from nowcast_infill.io.store import open_store
from nowcast_infill.schema import StoreSchemaError


def test_open_store_names_the_store_as_given_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingInputError, match=r"^nowhere\.zarr: radar store not found; .*ni-synth output=nowhere\.zarr"):
        open_store("nowhere.zarr")
    (tmp_path / "folder.zarr").mkdir()
    with pytest.raises(StoreSchemaError, match=r"^folder\.zarr: not a readable Zarr store"):
        open_store("folder.zarr")
    bad = make_test_dataset(n_time=3).rename({"precip": "rain"})
    bad.to_zarr(tmp_path / "bad.zarr", zarr_format=3)
    with pytest.raises(StoreSchemaError, match=r"^bad\.zarr: no variable 'precip'"):
        open_store("bad.zarr")


def test_open_store_returns_the_validated_store_lazily(tmp_path):
    path = write_test_store(tmp_path / "ok.zarr", n_time=4)
    with open_store(path) as ds, open_store(path, chunks=None) as plain:
        assert ds["precip"].chunks is not None and plain["precip"].chunks is None  # dask vs numpy-backed
        np.testing.assert_array_equal(ds["precip"].values, plain["precip"].values)


def test_open_by_suffix_reads_netcdf_and_zarr(tmp_path):
    data = xr.Dataset({"coverage": (("y", "x"), np.eye(3, dtype=bool))})
    data.to_netcdf(tmp_path / "c.nc")
    data.to_zarr(tmp_path / "c.zarr", zarr_format=3, consolidated=False)
    for name in ("c.nc", "c.zarr"):
        with open_by_suffix(tmp_path / name, consolidated=False) as ds:
            np.testing.assert_array_equal(ds["coverage"].values, np.eye(3, dtype=bool))
    (tmp_path / "c.nc").write_bytes(b"abc")
    assert file_sha256(tmp_path / "c.nc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 "abc"
