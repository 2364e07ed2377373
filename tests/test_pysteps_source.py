"""The pysteps importer: every unit/transform against pySTEPS' own to_rainrate, file-name
times (pySTEPS data source patterns, metadata, symlinks), importer_kwargs errors, and the
real BOM / RMI / KNMI files."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from data_factories_io import MCH_SHAPE, write_fmi_pgm_gz, write_mch_gif
from nowcast_infill.io.convert import convert
from nowcast_infill.io.importers import ConversionError
from nowcast_infill.io.pysteps_source import PystepsOptionError
from nowcast_infill.registry import get_method

pysteps_conversion = pytest.importorskip("pysteps.utils.conversion")
from pysteps.utils import transformation  # noqa: E402

UNITS = ("dBZ", "dBR", "mm/h", "mm")
TRANSFORMS = (None, "dB", "log")
ACCUTIME_MIN = 5.0
ZR = (223.0, 1.53)  # FMI's, to show the metadata's Z-R is used
GRID_META = {"x1": 0.0, "x2": 40_000.0, "y1": 0.0, "y2": 30_000.0, "xpixelsize": 1000.0, "ypixelsize": 1000.0,
             "cartesian_unit": "m", "yorigin": "upper", "projection": "+proj=stere +lat_0=90 +lon_0=10 +lat_ts=60 +ellps=WGS84"}
MCH_KWARGS = {"product": "AQC", "unit": "mm", "accutime": 5}
MCH_PATTERN = {"fn_pattern": "AQC%y%j%H%M?_00005.801", "fn_ext": "gif"}  # pySTEPS' data source table (pystepsrc)
RMI_DIR = Path("pysteps/radar/rmi/radqpe/20210704")
BOM_DIR = Path("pysteps/radar/bom/prcp-cscn/2/2018/06/16")


def _rain_rate(rng: np.random.Generator, shape=(30, 40)) -> np.ndarray:
    """(H, W) mm/h: half dry, gamma-distributed rain up to ~100 mm/h, a NaN no-data block."""
    rate = rng.gamma(0.6, 4.0, size=shape) * (rng.random(shape) > 0.5)
    rate[:5, :7] = np.nan
    return rate


def _field_in(unit: str, transform, rate: np.ndarray) -> tuple[np.ndarray, dict, dict]:
    """(values, metadata as an importer returns them, the same in pySTEPS' to_rainrate terms).

    Built with pySTEPS' own forward transforms from a rain rate; `dBR` is pySTEPS'
    mm/h with a dB transform.
    """
    meta = {"unit": unit, "transform": None, "accutime": ACCUTIME_MIN, "threshold": 0.1, "zerovalue": 0.0,
            "zr_a": ZR[0], "zr_b": ZR[1], **GRID_META}
    if unit == "mm":
        linear = rate * ACCUTIME_MIN / 60.0
        meta["threshold"] = 0.1 * ACCUTIME_MIN / 60.0
    elif unit == "dBZ":
        linear = ZR[0] * rate ** ZR[1]
        meta["threshold"] = ZR[0] * 0.1 ** ZR[1]
    else:
        linear = rate
    if unit == "dBR":
        values, meta = transformation.dB_transform(linear, {**meta, "unit": "mm/h"})
        meta = {**meta, "unit": "dBR", "transform": transform}
        return values, meta, {**meta, "unit": "mm/h", "transform": "dB"}
    if transform == "dB":
        values, meta = transformation.dB_transform(linear, meta)
    elif transform == "log":
        values, meta = transformation.boxcox_transform(linear, meta, Lambda=0.0)
        meta["transform"] = "log"
    else:
        values = linear
    return values, meta, dict(meta)


def _fake_importer(monkeypatch, tmp_path, values, meta, name="FAKE_201608261200.h5"):
    path = tmp_path / name
    path.write_bytes(b"stand-in: the importer is replaced")
    importer = get_method("source", "pysteps", pysteps_importer="knmi_hdf5")
    monkeypatch.setattr(importer, "_read", lambda filename, **kwargs: (values.copy(), None, dict(meta)))
    return importer, path


@pytest.mark.parametrize(("unit", "transform"), list(itertools.product(UNITS, TRANSFORMS)))
def test_every_unit_and_transform_matches_pysteps_to_rainrate(monkeypatch, tmp_path, unit, transform):
    rate = _rain_rate(np.random.default_rng(7))
    values, meta, pysteps_meta = _field_in(unit, transform, rate)
    importer, path = _fake_importer(monkeypatch, tmp_path, values, meta)
    if unit == "dBR" and transform == "log":
        with pytest.raises(ConversionError, match="contradictory") as err:
            importer.read(path)
        assert str(err.value).startswith(str(path))
        return
    (frame,) = importer.read(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected, _ = pysteps_conversion.to_rainrate(values, pysteps_meta)
    assert frame.precip.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(frame.precip), np.isnan(rate))  # no-data stays NaN, nothing else
    np.testing.assert_allclose(frame.precip, expected.astype(np.float32), rtol=2e-6, atol=0, equal_nan=True)
    # And it is the rain rate the field was made from; through a dB / log scale pySTEPS'
    # threshold (0.1 mm/h here) makes the rates below it 0.
    scaled = transform is not None or unit == "dBR"
    np.testing.assert_allclose(frame.precip, np.where(scaled & (rate < 0.1), 0.0, rate), rtol=1e-4, atol=1e-6,
                               equal_nan=True)
    assert frame.accumulation_interval_s == (300 if unit == "mm" else 0)
    assert frame.zr == (ZR if unit == "dBZ" else None)


def test_non_finite_value_after_conversion_names_the_file(monkeypatch, tmp_path):
    rate = _rain_rate(np.random.default_rng(1))
    values, meta, _ = _field_in("dBZ", None, rate)  # linear Z
    values[10, 12] = -5.0  # a negative Z has no rain rate
    importer, path = _fake_importer(monkeypatch, tmp_path, values, meta)
    with pytest.raises(ConversionError, match=r"1 pixel\(s\) are not finite.*row 10, column 12") as err:
        importer.read(path)
    assert str(err.value).startswith(str(path))
    values, meta, _ = _field_in("mm/h", "dB", rate)
    values[3, 30] = np.inf
    importer, path = _fake_importer(monkeypatch, tmp_path, values, meta)
    with pytest.raises(ConversionError, match="not finite"):
        importer.read(path)


def test_fmi_pgm_dbz_is_converted_not_taken_for_linear_z(tmp_path):
    """The FMI composite (dBZ with transform dB) gave inf and 1e35 mm/h; now pySTEPS' rate."""
    rng = np.random.default_rng(3)
    numbers = rng.integers(0, 150, size=(60, 40)).astype(np.uint8)  # dBZ = n / 2 - 32: -32 .. 42.5 dBZ
    numbers[:6, :9] = 255  # no data
    name = "201609281600_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz"  # pySTEPS' FMI fn_pattern + fn_ext
    path = write_fmi_pgm_gz(tmp_path / name, numbers)
    options = {"pysteps_importer": "fmi_pgm", "importer_kwargs": {"gzipped": True}}
    (frame,) = get_method("source", "pysteps", **options).read(path)
    import pysteps.io

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        field, _, meta = pysteps.io.get_method("fmi_pgm", "importer")(str(path), gzipped=True)
        expected, _ = pysteps_conversion.to_rainrate(field, meta)
    assert meta["unit"] == "dBZ" and meta["transform"] == "dB"
    np.testing.assert_allclose(frame.precip, expected.astype(np.float32), rtol=2e-6, equal_nan=True)
    dbz = numbers / 2.0 - 32.0
    wet = (numbers != 255) & (dbz > -31.9)
    np.testing.assert_allclose(frame.precip[wet], ((10 ** (dbz[wet] / 10)) / 223.0) ** (1 / 1.53), rtol=1e-5)
    assert frame.zr == (223.0, 1.53) and frame.conversion == "Z=223*R^1.53 from dBZ"
    assert frame.time == np.datetime64("2016-09-28T16:00", "ns")
    summary = convert([path], tmp_path / "fmi.zarr", "pysteps", progress=False, workers=1, **options)
    stored = xr.open_zarr(summary["output"])["precip"].values[0]
    assert np.isnan(stored).sum() == 54 and np.isfinite(stored).sum() == stored.size - 54
    assert 0 <= np.nanmin(stored) and np.nanmax(stored) < 20  # 42.5 dBZ is 17.5 mm/h with FMI's Z-R
    # Without gzipped=true pysteps cannot open it: the message says which keyword to pass.
    with pytest.raises(ConversionError, match=r"keyword 'gzipped'.*\+\+importer\.importer_kwargs\.gzipped=") as err:
        get_method("source", "pysteps", pysteps_importer="fmi_pgm").read(path)
    assert str(err.value).startswith(str(path))


def _mch_numbers(seed=0) -> np.ndarray:
    numbers = np.random.default_rng(seed).integers(0, 140, size=MCH_SHAPE).astype(np.uint8)  # up to ~46 mm/h
    numbers[:50, :80] = 255  # no data
    return numbers


def test_meteoswiss_names_of_pysteps_data_source_table(tmp_path):
    path = write_mch_gif(tmp_path / "AQC161932100V_00005.801.gif", _mch_numbers())
    importer = get_method("source", "pysteps", pysteps_importer="mch_gif", importer_kwargs=MCH_KWARGS, **MCH_PATTERN)
    (frame,) = importer.read(path)
    assert frame.time == np.datetime64("2016-07-11T21:00", "ns")  # 2016, day 193, 21:00
    assert frame.product == "AQC" and frame.accumulation_interval_s == 300
    import pysteps.io

    field, _, meta = pysteps.io.get_method("mch_gif", "importer")(str(path), **MCH_KWARGS)
    expected, _ = pysteps_conversion.to_rainrate(field, meta)
    np.testing.assert_allclose(frame.precip, expected.astype(np.float32), rtol=2e-6, equal_nan=True)
    assert np.isnan(frame.precip).sum() == 50 * 80 and 0 <= np.nanmin(frame.precip) and np.nanmax(frame.precip) < 60
    # The YYYYMMDDHHMM default cannot read this name; it says how to give the pattern.
    with pytest.raises(ConversionError, match="importer.fn_pattern") as err:
        get_method("source", "pysteps", pysteps_importer="mch_gif", importer_kwargs=MCH_KWARGS).read(path)
    assert str(err.value).startswith(str(path))
    # A name the pattern does not fit is refused with the pattern.
    other = shutil.copy(path, tmp_path / "AQC16193210_00005.801.gif")
    with pytest.raises(ConversionError, match="does not match importer.fn_pattern"):
        importer.read(other)
    with pytest.raises(PystepsOptionError, match="%Q"):
        get_method("source", "pysteps", pysteps_importer="mch_gif", fn_pattern="AQC%Q")


def test_missing_importer_kwargs_name_the_keyword_and_how_to_pass_it(tmp_path):
    path = write_mch_gif(tmp_path / "AQC161932100V_00005.801.gif", _mch_numbers())
    with pytest.raises(ConversionError) as err:
        get_method("source", "pysteps", pysteps_importer="mch_gif", **MCH_PATTERN).read(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "'product'" in message
    assert "++importer.importer_kwargs.product=" in message and "'product': 'AQC'" in message
    with pytest.raises(ConversionError, match=r"keyword 'product' \(given: XYZ") as err:
        get_method("source", "pysteps", pysteps_importer="mch_gif", importer_kwargs={**MCH_KWARGS, "product": "XYZ"},
                     **MCH_PATTERN).read(path)


@pytest.mark.parametrize(("error", "expected"), [
    (KeyError("accutime"), "failed on keyword 'accutime' (given: <not given>; KeyError"),
    (KeyError("dataset1"), "cannot read it (KeyError: 'dataset1'); check importer.pysteps_importer"),
])
def test_key_errors_name_a_keyword_only_when_it_is_one(monkeypatch, tmp_path, error, expected):
    path = tmp_path / "RAD_NL25_RAP_5min_201008260000.h5"
    path.write_bytes(b"stand-in")
    importer = get_method("source", "pysteps", pysteps_importer="knmi_hdf5")

    def failing(filename, **kwargs):
        raise error

    monkeypatch.setattr(importer, "_read", failing)
    with pytest.raises(ConversionError) as err:
        importer.read(path)
    assert str(err.value).startswith(str(path)) and expected in str(err.value)


def test_symlinked_inputs_keep_the_name_given(tmp_path):
    """A link named as the archive names files gives its time; messages and the store show the link."""
    data = tmp_path / "blobs"
    data.mkdir()
    links = tmp_path / "links"
    links.mkdir()
    for i, minute in enumerate(("00", "05", "10")):
        target = write_mch_gif(data / f"blob{i}.gif", _mch_numbers(i))
        os.symlink(target, links / f"AQC1619321{minute}V_00005.801.gif")
    options = {"pysteps_importer": "mch_gif", "importer_kwargs": MCH_KWARGS, **MCH_PATTERN}
    summary = convert(str(links / "AQC*.gif"), tmp_path / "mch.zarr", "pysteps", progress=False, workers=1, **options)
    ds = xr.open_zarr(summary["output"])
    assert [f["name"] for f in ds.attrs["source_files"]] == sorted(p.name for p in links.iterdir())
    np.testing.assert_array_equal(ds["time"].values, np.array(["2016-07-11T21:00", "2016-07-11T21:05",
                                                               "2016-07-11T21:10"], dtype="datetime64[ns]"))
    broken = links / "AQC161932115V_00005.801.gif"
    os.symlink(data / "absent.gif", broken)
    with pytest.raises(FileNotFoundError) as err:
        convert([str(broken)], tmp_path / "other.zarr", "pysteps", progress=False, workers=1, **options)
    assert str(err.value).startswith(str(broken)) and "blobs" not in str(err.value)
    with pytest.raises(ConversionError, match="missing or empty") as err:
        get_method("source", "pysteps", **options).read(broken)
    assert str(err.value).startswith(str(broken)) and "blobs" not in str(err.value)


def test_time_from_importer_metadata_and_contradiction(monkeypatch, tmp_path):
    values, meta, _ = _field_in("mm/h", None, _rain_rate(np.random.default_rng(2)))
    from datetime import datetime, timedelta, timezone

    meta["timestamp"] = datetime(2021, 7, 4, 19, 50, tzinfo=timezone(timedelta(hours=2)))
    importer, path = _fake_importer(monkeypatch, tmp_path, values, meta, name="radar_field.h5")
    assert importer.read(path)[0].time == np.datetime64("2021-07-04T17:50", "ns")  # UTC
    importer, path = _fake_importer(monkeypatch, tmp_path, values, meta, name="radar_202107041755.h5")
    with pytest.raises(ConversionError, match="2021-07-04T17:50.*2021-07-04T17:55"):
        importer.read(path)


@pytest.mark.parametrize("kwargs", [["importer.importer_kwargs={product: AQC, unit: mm, accutime: 5}"],
                                    [f"++importer.importer_kwargs.{k}={v}" for k, v in MCH_KWARGS.items()]],
                         ids=["dict", "one_by_one"])
def test_cli_converts_meteoswiss_with_importer_kwargs(tmp_path, kwargs):
    """The two ways conf/convert.yaml documents (and error messages suggest) to pass importer_kwargs."""
    write_mch_gif(tmp_path / "AQC161932100V_00005.801.gif", _mch_numbers())
    run = subprocess.run(
        [sys.executable, "-m", "nowcast_infill.cli.convert", "source=pysteps", "importer.pysteps_importer=mch_gif",
         *kwargs, "importer.fn_pattern=AQC%y%j%H%M?_00005.801",
         "importer.fn_ext=gif", f"inputs={tmp_path}/AQC*.gif", f"output={tmp_path}/cli.zarr", "progress=false"],
        capture_output=True, text=True, cwd=tmp_path, timeout=180,
    )
    assert run.returncode == 0, run.stderr
    assert xr.open_zarr(tmp_path / "cli.zarr")["time"].values[0] == np.datetime64("2016-07-11T21:00", "ns")


# ---------------------------------------------------------------------------- real files

@pytest.mark.shared_data
def test_bom_rf3_depth_per_six_minutes(shared_data, tmp_path):
    import netCDF4

    files = sorted((shared_data / BOM_DIR).glob("*.nc"))
    assert len(files) == 61
    out = convert(files[::6], tmp_path / "bom.zarr", "pysteps", progress=False, workers=1, pysteps_importer="bom_rf3")
    ds = xr.open_zarr(out["output"])
    assert ds.attrs["accumulation_interval_s"] == 360 and ds.attrs["time_step_s"] == 36 * 60
    assert ds.attrs["conversion"] == "mm per 360 s * 10"
    assert ds["time"].values[0] == np.datetime64("2018-06-16T10:00", "ns")
    assert ds["time"].values[-1] == np.datetime64("2018-06-16T16:00", "ns")
    for i, path in enumerate(files[::6]):
        with netCDF4.Dataset(path) as nc:
            depth_mm = np.ma.filled(nc["precipitation"][:].astype(np.float64), np.nan)
            valid_time = np.datetime64(int(nc["valid_time"][:]), "s")
            x_km, y_km = np.asarray(nc["x"][:], np.float64), np.asarray(nc["y"][:], np.float64)
        assert ds["time"].values[i] == valid_time
        np.testing.assert_allclose(ds["precip"].values[i], depth_mm * 10.0, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(ds["x"].values, x_km)  # the file's own pixel centres, row 0 north
    np.testing.assert_allclose(ds["y"].values, y_km)
    assert 0 <= float(ds["precip"].min()) and float(ds["precip"].max()) < 100


@pytest.mark.shared_data
def test_bom_fill_values_become_nan(shared_data, tmp_path):
    import netCDF4

    source = sorted((shared_data / BOM_DIR).glob("*.nc"))[20]
    path = Path(shutil.copy(source, tmp_path / source.name))
    path.chmod(0o644)
    with netCDF4.Dataset(path, "a") as nc:
        nc["precipitation"][100:120, 200:230] = np.ma.masked
    (frame,) = get_method("source", "pysteps", pysteps_importer="bom_rf3").read(path)
    assert np.isnan(frame.precip).sum() == 20 * 30 and np.isnan(frame.precip[100:120, 200:230]).all()


@pytest.mark.shared_data
def test_rmi_odim_rate_in_mm_per_hour(shared_data, tmp_path):
    import pysteps.io

    files = sorted((shared_data / RMI_DIR).glob("*.hdf"))
    assert len(files) == 39
    out = convert(files[:3], tmp_path / "rmi.zarr", "pysteps", progress=False, workers=1, pysteps_importer="odim_hdf5")
    ds = xr.open_zarr(out["output"])
    assert ds.attrs["accumulation_interval_s"] == 0 and ds.attrs["time_step_s"] == 300
    np.testing.assert_array_equal(ds["time"].values, np.array(["2021-07-04T15:50", "2021-07-04T15:55",
                                                               "2021-07-04T16:00"], dtype="datetime64[ns]"))
    for i, path in enumerate(files[:3]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            field, _, meta = pysteps.io.get_method("odim_hdf5", "importer")(str(path))
        assert meta["unit"] == "mm/h"
        np.testing.assert_array_equal(ds["precip"].values[i], field.astype(np.float32))
        assert 0.30 < np.isnan(ds["precip"].values[i]).mean() < 0.36
    assert 0 <= float(ds["precip"].min()) and float(ds["precip"].max()) < 200


@pytest.mark.shared_data
def test_knmi_through_a_symlinked_folder(shared_data, tmp_path):
    link = tmp_path / "knmi_link"
    os.symlink(shared_data / "knmi", link)
    out = convert(str(link / "*_20100826000[05].h5"), tmp_path / "knmi.zarr", "pysteps", progress=False, workers=1,
                  pysteps_importer="knmi_hdf5")
    assert out["n_frames_written"] == 2
    assert [f["name"] for f in xr.open_zarr(out["output"]).attrs["source_files"]] == [
        "RAD_NL25_RAP_5min_201008260000.h5", "RAD_NL25_RAP_5min_201008260005.h5"]
