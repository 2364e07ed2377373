"""Importers: registry, real RADOLAN/KNMI files, RADOLAN ASCII and NetCDF on files written here."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from data_factories_io import rain_field, write_radolan_ascii
from nowcast_infill import registry
from nowcast_infill.errors import BadValueError
from nowcast_infill.io.convert import convert
from nowcast_infill.io.importers import ConversionError, Frame, accumulation_to_mm_h, dbz_to_mm_h, make_grid
from nowcast_infill.io.radolan import RADOLAN_PROJ4, radolan_grid
from nowcast_infill.registry import UnknownMethodError, get_method, method_names
from nowcast_infill.schema import validate_store

RADOLAN_SHAPES = {(900, 900), (1100, 900), (1500, 1400)}
NON_PRECIP = {"pg", "pc"}


def _radolan_files(shared_data):
    return sorted(p for p in (shared_data / "radolan").rglob("*") if p.is_file())


def _name_time(path) -> np.datetime64:
    stamp = re.search(r"-(\d{10})-dwd", path.name).group(1)
    return np.datetime64(datetime.strptime(stamp, "%y%m%d%H%M"), "ns")


def test_registry_lists_valid_names_on_unknown_name():
    assert method_names("source") == ["pysteps", "radolan", "radolan_ascii", "xarray"]
    with pytest.raises(UnknownMethodError, match="radolan_ascii") as err:
        get_method("source", "radolan_binary")
    assert "radolan_binary" in str(err.value)
    with pytest.raises(BadValueError, match="source 'radolan'.*no_such_option"):
        get_method("source", "radolan", no_such_option=1)
    with pytest.raises(ValueError, match="variable"):
        get_method("source", "xarray")


class TinyTextImporter:
    """A radar source written for this test: a text file whose first line is the time (UTC)
    and whose other lines are rows of rain rates in mm/h ('nan': no data), on a 1 km grid."""

    name = "tiny_text"

    def read(self, path):
        path = Path(path)
        first, *rows = path.read_text().splitlines()
        precip = np.array([[float(v) for v in row.split()] for row in rows], dtype=np.float32)
        grid = make_grid(np.arange(precip.shape[1], dtype=np.float64), -np.arange(precip.shape[0], dtype=np.float64),
                         RADOLAN_PROJ4)
        return [Frame(time=np.datetime64(first, "ns"), precip=precip, grid=grid, product="TINY", accumulation_interval_s=0,
                      conversion="mm/h as written", source=path)]


def test_a_source_added_by_one_registry_line_converts_into_a_valid_store(tmp_path, monkeypatch):
    """The recipe of docs/architecture.md: one importer class + one `register` line, and ni-convert reads it."""
    method_names("source")  # the package's own sources registered first, so the copy below holds them
    monkeypatch.setitem(registry._ENTRIES, "source", dict(registry._ENTRIES["source"]))  # undone after the test
    registry.register("source", "tiny_text", TinyTextImporter)
    for minute, rows in ((5, "1 2 nan\n0 0 3"), (10, "0 nan nan\n4 5 6")):
        (tmp_path / f"tiny_{minute:02d}.txt").write_text(f"2024-05-01T00:{minute:02d}\n{rows}\n")

    summary = convert(str(tmp_path / "tiny_*.txt"), tmp_path / "tiny.zarr", source="tiny_text", workers=1, progress=False)

    assert summary["n_frames_written"] == 2 and summary["product"] == "TINY"
    with xr.open_zarr(tmp_path / "tiny.zarr") as ds:
        validate_store(ds, "tiny.zarr")
        assert ds.attrs["source"] == "tiny_text" and ds.attrs["time_step_s"] == 300
        np.testing.assert_array_equal(ds["precip"].values, [[[1, 2, np.nan], [0, 0, 3]], [[0, np.nan, np.nan], [4, 5, 6]]])
        assert [f["name"] for f in ds.attrs["source_files"]] == ["tiny_05.txt", "tiny_10.txt"]


@pytest.mark.shared_data
@pytest.mark.slow
def test_every_radolan_file_reads_or_is_refused(shared_data):
    files = _radolan_files(shared_data)
    assert len(files) >= 60
    _check_radolan_files(files)


@pytest.mark.shared_data
def test_radolan_one_file_per_product_and_folder(shared_data):
    seen, files = set(), []
    for path in _radolan_files(shared_data):
        key = (path.parent.name, path.name.split("_")[0])
        wanted = path.name.startswith(("raa01-w3", "raa01-pg", "raa01-wx", "raa01-ey"))
        if key not in seen and (path.parent.name != "showcase" or wanted):
            seen.add(key)
            files.append(path)
    _check_radolan_files(files)


def _check_radolan_files(files):
    """Shape, time stamp, units, NaN fraction, value range and values against wradlib."""
    import wradlib

    importer = get_method("source", "radolan")
    for path in files:
        product = path.name.split("_")[0].split("-")[1][:2]
        if product in NON_PRECIP:
            with pytest.raises(ConversionError, match="not a precipitation amount") as err:
                importer.read(path)
            assert str(err.value).startswith(str(path))
            continue
        (frame,) = importer.read(path)
        assert frame.precip.dtype == np.float32, path
        assert frame.precip.shape in RADOLAN_SHAPES, path
        assert frame.grid.shape == frame.precip.shape
        assert frame.time == _name_time(path), path
        nan_fraction = float(np.isnan(frame.precip).mean())
        assert 0.1 < nan_fraction < 0.6, (path, nan_fraction)
        valid = frame.precip[np.isfinite(frame.precip)]
        assert valid.min() >= 0 and valid.max() < 1000, path
        assert frame.radar_sites and all(len(s) == 3 for s in frame.radar_sites), path
        # wradlib's values to the bit, with clutter-flagged pixels (wradlib keeps their
        # value) made NaN, and in mm/h.
        raw, attrs = wradlib.io.read_radolan_composite(str(path), missing=np.nan)
        values = np.array(raw, dtype=np.float64)
        values.reshape(-1)[np.asarray(attrs["cluttermask"], dtype=np.int64)] = np.nan
        if frame.product in {"RX", "EX", "WX"}:
            assert frame.accumulation_interval_s == 0 and frame.zr == (200.0, 1.6)
            expected = dbz_to_mm_h(values / 2 - 32.5, 200.0, 1.6)
            dbz = raw / 2 - 32.5
            np.testing.assert_allclose(frame.precip, ((10 ** (dbz / 10)) / 200.0) ** (1 / 1.6), rtol=1e-6, equal_nan=True)
        else:
            assert frame.accumulation_interval_s >= 300 and frame.zr is None
            expected = accumulation_to_mm_h(values, frame.accumulation_interval_s)
            np.testing.assert_allclose(frame.precip, values * 3600.0 / frame.accumulation_interval_s, rtol=1e-6)
        np.testing.assert_array_equal(frame.precip, expected, err_msg=str(path))


@pytest.mark.shared_data
def test_radolan_intervals_per_product(shared_data):
    importer = get_method("source", "radolan")
    expected = {"rw": 3600, "ry": 300, "yw": 300, "sf": 86400, "sh": 43200, "sq": 21600, "w1": 7 * 86400, "w4": 30 * 86400}
    seen = {}
    for path in _radolan_files(shared_data):
        code = path.name.split("_")[0].split("-")[1][:2]
        if code in expected and code not in seen:
            seen[code] = importer.read(path)[0].accumulation_interval_s
    assert seen == expected


@pytest.mark.shared_data
def test_radolan_grid_orientation_and_latlon(shared_data):
    (frame,) = get_method("source", "radolan").read(sorted((shared_data / "radolan" / "yw").iterdir())[0])
    g = frame.grid
    assert g.shape == (1100, 900) and np.all(np.diff(g.y) > 0)  # row 0 = south
    assert g.lat[0].mean() < g.lat[-1].mean()
    assert 45.5 < g.lat.min() < 47 and 55 < g.lat.max() < 56.5 and 3 < g.lon.min() < 5.5
    assert g.grid_mapping_name == "polar_stereographic" and g.proj4 == RADOLAN_PROJ4


def test_reflectivity_zr_is_configurable(shared_data):
    path = shared_data / "radolan" / "misc" / "raa01-rx_10000-1408102050-dwd---bin.gz"
    mp = get_method("source", "radolan").read(path)[0]
    other = get_method("source", "radolan", zr_a=300.0, zr_b=1.4).read(path)[0]
    assert other.zr == (300.0, 1.4) and "Z=300*R^1.4" in other.conversion
    wet = np.nanargmax(mp.precip)
    dbz = 10 * np.log10(200.0 * mp.precip.flat[wet] ** 1.6)
    assert other.precip.flat[wet] == pytest.approx((10 ** (dbz / 10) / 300.0) ** (1 / 1.4), rel=1e-4)


@pytest.mark.shared_data
def test_every_knmi_file(shared_data):
    importer = get_method("source", "pysteps", pysteps_importer="knmi_hdf5")
    files = sorted((shared_data / "knmi").glob("*.h5"))
    assert len(files) == 92
    for path in files[::7] + files[-1:]:
        (frame,) = importer.read(path)
        stamp = re.search(r"(\d{12})", path.name).group(1)
        assert frame.time == np.datetime64(datetime.strptime(stamp, "%Y%m%d%H%M"), "ns")
        assert frame.precip.shape == (765, 700) and frame.precip.dtype == np.float32
        assert frame.accumulation_interval_s == 300 and frame.conversion == "mm per 300 s * 12"
        assert 0.70 < np.isnan(frame.precip).mean() < 0.78, path
        valid = frame.precip[np.isfinite(frame.precip)]
        assert valid.min() >= 0 and valid.max() < 300
        assert frame.product == "RAD_NL25_RAP_5min"
        inside = np.isfinite(frame.precip)
        assert 50 < frame.grid.lat[inside].min() and frame.grid.lat[inside].max() < 55.5
        assert 2 < frame.grid.lon[inside].min() and frame.grid.lon[inside].max() < 8.5


def test_pysteps_unknown_importer_and_bad_file(tmp_path):
    with pytest.raises(ValueError, match="no_such"):
        get_method("source", "pysteps", pysteps_importer="no_such")
    bad = tmp_path / "RAD_NL25_RAP_5min_201008260000.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(ConversionError, match="knmi_hdf5") as err:
        get_method("source", "pysteps", pysteps_importer="knmi_hdf5").read(bad)
    assert str(err.value).startswith(str(bad))


def test_radolan_ascii_full_grid_matches_binary_orientation(tmp_path):
    rng = np.random.default_rng(0)
    depth = rain_field(rng, shape=(900, 900))
    path = write_radolan_ascii(tmp_path, depth, "20221018-0050", "RW")
    (frame,) = get_method("source", "radolan_ascii").read(path)
    assert frame.time == np.datetime64("2022-10-18T00:50", "ns") and frame.product == "RW"
    np.testing.assert_allclose(frame.precip, depth.astype(np.float32), rtol=1e-6, equal_nan=True)
    binary = radolan_grid(900, 900)
    assert frame.grid.same_as(binary.x, binary.y, binary.proj4)
    assert np.isnan(frame.precip[0, 0])  # no-data block written at the southern edge stays there


def test_radolan_ascii_ry_is_per_five_minutes(tmp_path):
    depth = rain_field(np.random.default_rng(1))
    (frame,) = get_method("source", "radolan_ascii").read(write_radolan_ascii(tmp_path, depth, "20221018-0055", "RY"))
    np.testing.assert_allclose(frame.precip, (depth * 12).astype(np.float32), rtol=1e-6, equal_nan=True)
    assert frame.accumulation_interval_s == 300


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("RW_20221018-0050.asc", "", "empty"),
        ("rain.asc", "ncols 2\n", "file name"),
        ("RW_20221018-0050.asc", "ncols 2\nnrows 2\nxllcorner 0\nyllcorner 0\ncellsize 1000\nNODATA_value -1\n1 2\n", "truncated"),
        ("RW_20221018-0050.asc", "ncols 2\nnrows 1\nxllcorner 0\nyllcorner 0\ncellsize 1000\nNODATA_value -1\n1 x\n", "non-numeric"),
        ("RW_20221018-0050.asc", "cols 2\nnrows 1\nxllcorner 0\nyllcorner 0\ncellsize 1000\nNODATA_value -1\n1 2\n", "header"),
        ("PG_20221018-0050.asc", "ncols 1\n", "not a precipitation amount"),
        ("RX_20221018-0050.asc", "ncols 1\n", "reflectivity"),
    ],
)
def test_radolan_ascii_bad_input(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ConversionError, match=match) as err:
        get_method("source", "radolan_ascii").read(path)
    assert str(err.value).startswith(str(path))


def test_xarray_source_netcdf_depth_and_units(tmp_path):
    import xarray as xr

    depth = np.stack([rain_field(np.random.default_rng(i), (6, 5)) for i in range(3)])
    ds = xr.Dataset(
        {"rain": (("time", "y", "x"), depth)},
        coords={"time": np.array(["2020-01-01T00:05", "2020-01-01T00:10", "2020-01-01T00:15"], dtype="datetime64[ns]"),
                "y": ("y", np.arange(6) * 1000.0, {"units": "m"}), "x": ("x", np.arange(5) * 1000.0, {"units": "m"})},
    )
    path = tmp_path / "rain.nc"
    ds.to_netcdf(path)
    with pytest.raises(ConversionError, match="units="):
        get_method("source", "xarray", variable="rain", proj4=RADOLAN_PROJ4).read(path)
    with pytest.raises(ConversionError, match="accumulation_interval_s"):
        get_method("source", "xarray", variable="rain", units="mm", proj4=RADOLAN_PROJ4).read(path)
    with pytest.raises(ConversionError, match="no variable 'precip'"):
        get_method("source", "xarray", variable="precip", proj4=RADOLAN_PROJ4).read(path)
    frames = get_method("source", "xarray", variable="rain", units="mm", accumulation_interval_s=300, proj4=RADOLAN_PROJ4).read(path)
    assert len(frames) == 3 and frames[1].time == np.datetime64("2020-01-01T00:10", "ns")
    np.testing.assert_allclose(frames[2].precip, (depth[2] * 12).astype(np.float32), rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(frames[0].grid.x, np.arange(5.0))


# ------------------------------------------------ damaged RADOLAN headers and values

_RW = "rw/raa01-rw_10000-1811220050-dwd---bin.gz"
_RY = "ry/raa01-ry_10000-2001011530-dwd---bin.gz"
_RX = "misc/raa01-rx_10000-1408102050-dwd---bin.gz"


def _radolan_bytes(shared_data, rel: str) -> bytes:
    import gzip

    return gzip.decompress((shared_data / "radolan" / rel).read_bytes())


def _write(folder, name: str, data: bytes):
    path = folder / name
    path.write_bytes(data)
    return path


def _edit_header(data: bytes, old: bytes, new: bytes) -> bytes:
    end = data.index(b"\x03")
    assert old in data[:end] and len(old) == len(new)
    return data[:end].replace(old, new, 1) + data[end:]


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "rel, old, new, match",
    [
        (_RW, b"PR E-01", b"PR E+99", r"PR gives a value unit of 1e\+99, product RW uses 0.1"),
        (_RW, b"PR E-01", b"PR E+20", r"PR gives a value unit of 1e\+20"),
        (_RW, b"INT  60", b"INT   1", r"INT gives an interval of 60 s, product RW is defined over 3600 s"),
        (_RY, b"INT   5", b"INT  60", r"INT gives an interval of 3600 s, product RY is defined over 300 s"),
        (_RW, b"RW220050", b"RW220150", r"header time 2018-11-22 01:50 UTC differs from the file name's 2018-11-22 00:50"),
        (_RW, b"RW220050", b"RH220050", "header product RH differs from the file name's RW"),
        (_RW, b"BY1620153", b"BY1620154", "header fields disagree: BY 1620154"),
        # GP and BY edited together: fewer rows leave 180000 bytes unread.
        (_RW, b"BY1620153VS 3SW   2.21.0PR E-01INT  60GP 900x 900", b"BY1440153VS 3SW   2.21.0PR E-01INT  60GP 800x 900",
         "180000 bytes follow the last pixel"),
        # ... and the same pixel count in another shape is not a size of RW.
        (_RW, b"GP 900x 900", b"GP 450x1800", "grid GP 450x1800 is not a size of product RW"),
    ],
    ids=["PR-E+99", "PR-E+20", "RW-INT-1", "RY-INT-60", "time", "relabelled", "BY", "GP-BY-rows", "GP-shape"],
)
def test_damaged_radolan_header_is_refused_naming_the_file(shared_data, tmp_path, rel, old, new, match):
    data = _radolan_bytes(shared_data, rel)
    path = _write(tmp_path, Path(rel).name.removesuffix(".gz"), _edit_header(data, old, new))
    with pytest.raises(ConversionError, match=match) as err:
        get_method("source", "radolan").read(path)
    assert str(err.value).startswith(str(path))
    # The unedited bytes under the same name convert.
    assert get_method("source", "radolan").read(_write(tmp_path, path.name, data))[0].precip.shape == (900, 900)


@pytest.mark.shared_data
def test_trailing_and_missing_pixel_bytes_are_refused(shared_data, tmp_path):
    data = _radolan_bytes(shared_data, _RY)
    name = Path(_RY).name.removesuffix(".gz")
    with pytest.raises(ConversionError, match="2 bytes follow the last pixel"):
        get_method("source", "radolan").read(_write(tmp_path, name, data + b"\x00\x00"))
    with pytest.raises(ConversionError, match="file is truncated: the header announces 1620000 bytes of pixels"):
        get_method("source", "radolan").read(_write(tmp_path, name, data[:-1]))


@pytest.mark.shared_data
def test_rx_pixel_above_the_rate_range_is_refused_or_widened(shared_data, tmp_path):
    data = bytearray(_radolan_bytes(shared_data, _RX))
    body = data.index(b"\x03") + 1
    pixel = 400 * 900 + 450  # row 400, column 450
    data[body + pixel] = 251  # RVP6 251 = 93 dBZ = 23,678 mm/h by Marshall-Palmer
    path = _write(tmp_path, Path(_RX).name.removesuffix(".gz"), bytes(data))
    with pytest.raises(ConversionError, match=r"1 pixel\(s\) of rain rate .* outside the physical range 0 to 500 "
                                              r"\(from 23678.6 to 23678.6; first at row 400, column 450\)") as err:
        get_method("source", "radolan").read(path)
    assert str(err.value).startswith(str(path)) and "rate_range_mm_h" in str(err.value)
    (frame,) = get_method("source", "radolan", rate_range_mm_h=[0, 30000]).read(path)
    assert frame.precip[400, 450] == pytest.approx(23678.6, abs=0.1)
    with pytest.raises(ConversionError, match=r"reflectivity \(dBZ\) outside the physical range -32.5 to 90"):
        get_method("source", "radolan", rate_range_mm_h=[0, 30000], dbz_range=[-32.5, 90]).read(path)


def test_physical_range_lets_nan_pass_and_refuses_inf_and_absurd_values(tmp_path):
    from nowcast_infill.io.importers import check_physical_range, value_range

    check_physical_range(tmp_path / "f", np.array([[np.nan, 0.0, 500.0]]), (0.0, 500.0), "rate", "opt")
    for bad in (np.inf, -np.inf, 8e23, -0.1):
        with pytest.raises(ConversionError, match="outside the physical range 0 to 500") as err:
            check_physical_range(tmp_path / "f", np.array([[np.nan, bad]]), (0.0, 500.0), "rate", "opt")
        assert str(err.value).startswith(str(tmp_path / "f"))
    for bounds in ([500, 0], [0], [0, np.inf], "ab"):
        with pytest.raises(ValueError, match="rate_range_mm_h"):
            value_range(bounds, "rate_range_mm_h")


@pytest.mark.shared_data
def test_nonstandard_grid_needs_allow_nonstandard_grid(shared_data, tmp_path):
    data = _radolan_bytes(shared_data, _RY)
    end = data.index(b"\x03")
    header = _edit_header(data, b"BY1620142", b"BY4200142")[:end]
    header = header.replace(b"GP 900x 900", b"GP1500x1400")
    no_data = b"\x00\x20" * (1500 * 1400)  # the no-data flag 0x2000 in every pixel
    path = _write(tmp_path, Path(_RY).name.removesuffix(".gz"), header + b"\x03" + no_data)
    with pytest.raises(ConversionError, match="not a size of product RY .* importer.allow_nonstandard_grid=true"):
        get_method("source", "radolan").read(path)
    (frame,) = get_method("source", "radolan", allow_nonstandard_grid=True).read(path)
    assert frame.precip.shape == (1500, 1400) and np.isnan(frame.precip).all()


@pytest.mark.shared_data
def test_non_rain_product_is_refused_from_the_header(shared_data, tmp_path):
    import time

    data = _radolan_bytes(shared_data, _RW)
    cases = [_write(tmp_path, "relabelled---bin", b"PG" + data[2:]),  # an RW body wradlib would run-length decode
             shared_data / "radolan" / "showcase" / "raa01-pg_10000-1408102045-dwd---bin.gz"]
    for path in cases:
        started = time.perf_counter()
        with pytest.raises(ConversionError, match="PG is a precipitation-type/cloud classification"):
            get_method("source", "radolan").read(path)
        # Before the header check, the relabelled file took 34 s (wradlib decoding 1.6 MB as run-length code).
        assert time.perf_counter() - started < 2.0, path


def test_radolan_ascii_rate_above_the_range_is_refused(tmp_path):
    depth = rain_field(np.random.default_rng(2))
    depth[5, 5] = 60.0  # 60 mm in 5 minutes = 720 mm/h
    path = write_radolan_ascii(tmp_path, depth, "20221018-0055", "RY")
    with pytest.raises(ConversionError, match="outside the physical range 0 to 500") as err:
        get_method("source", "radolan_ascii").read(path)
    assert str(err.value).startswith(str(path))
    assert get_method("source", "radolan_ascii", rate_range_mm_h=[0, 1000]).read(path)[0].precip[5, 5] == pytest.approx(720)
