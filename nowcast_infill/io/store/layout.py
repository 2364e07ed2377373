"""Layout of a new radar store: `precip` chunks / shards / compression, and the empty store (skeleton).

Also how a writer reaches one stored file of an array: `storage_unit` (shard or chunk shape)
and `whole_frame_chunk_writer` (a synchronous write of one whole-frame chunk).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nowcast_infill import schema
from nowcast_infill.io.importers import Frame

# Layout of `precip`: sizes along (time, y, x); a null `y` / `x` means the whole grid.
# The defaults are chosen by experiments/bench_data.py; the numbers are in conf/convert.yaml.
DEFAULT_CHUNKS = {"time": 1, "y": None, "x": None}
# Zarr v3 sharding: `chunks` become the inner chunks (the unit a reader decodes) and a
# shard (the unit stored as one file) holds `time` steps by `y` x `x` pixels. None: no
# sharding, one file per chunk.
DEFAULT_SHARDS: dict | None = None
DEFAULT_COMPRESSION = {"cname": "zstd", "clevel": 1}
# The CF attributes of `precip` in every store, however it is written (zarr here, xarray
# in data/synthetic.py); zarr writers add `coordinates` and `_FillValue` as xarray does.
PRECIP_ATTRS = {
    "units": schema.PRECIP_UNITS,
    "long_name": "precipitation rate",
    "standard_name": "rainfall_rate",
    "grid_mapping": schema.CRS,
}


def _positive_sizes(option: str, given: dict, null_time: bool) -> dict:
    """`given` checked: known dimensions, positive integers, null for y / x (and time when `null_time`)."""
    unknown = sorted(set(given) - set(schema.PRECIP_DIMS))
    if unknown:
        raise ValueError(f"{option}.{unknown[0]}: unknown dimension; {option} takes {', '.join(schema.PRECIP_DIMS)}.")
    for dim, value in given.items():
        may_be_null = dim != "time" or null_time
        if value is None and may_be_null:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            fix = "a positive integer" + (" or null (whole grid)" if may_be_null else "")
            raise ValueError(f"{option}.{dim}={value!r}: must be {fix}.")
    return given


def precip_layout(
    shape: tuple[int, int], chunks: dict | None = None, shards: dict | None = DEFAULT_SHARDS
) -> tuple[tuple[int, int, int], tuple[int, int, int] | None]:
    """(chunks, shards) of `precip` on a grid of `shape` (H, W) pixels, as Zarr shapes `(time, y, x)`.

    Missing chunk sizes come from `DEFAULT_CHUNKS`; a null `y` / `x` (chunk or shard)
    means the whole grid, and chunks are clipped to the grid. A shard size is rounded up
    to a multiple of the chunk (Zarr requires it; a shard may reach past the grid edge,
    costing nothing on disk); a missing or null shard `time` is the chunk's. Raises
    ValueError naming the option for an unknown dimension or a bad size.
    """
    want = {**DEFAULT_CHUNKS, **_positive_sizes("chunks", dict(chunks or {}), null_time=False)}
    sizes = {"time": int(want["time"]), "y": int(shape[0]), "x": int(shape[1])}
    chunk_t, chunk_y, chunk_x = (max(1, min(int(want[d] or sizes[d]), sizes[d])) for d in schema.PRECIP_DIMS)
    inner = (chunk_t, chunk_y, chunk_x)
    if shards is None:
        return inner, None
    given = _positive_sizes("shards", dict(shards), null_time=True)
    outer = []
    for dim, chunk in zip(schema.PRECIP_DIMS, inner, strict=True):
        size = given.get(dim)
        if size is None:
            size = chunk if dim == "time" else sizes[dim]
        outer.append(-(-int(size) // chunk) * chunk)
    shard_t, shard_y, shard_x = outer
    return inner, (shard_t, shard_y, shard_x)


def create_skeleton(path: Path, ref: Frame, chunks: dict | None, compression: dict | None, shards: dict | None) -> None:
    """A new store without time steps at `path` (docs/schema.md): coordinates, `crs`, empty `precip` / `time` / `missing_frame`.

    Written with zarr directly, in the form `xarray.Dataset.to_zarr` gives (CF attributes,
    `dimension_names`, `coordinates`, `_FillValue`), in a third of the zarr calls.
    """
    import zarr
    from zarr.codecs import BloscCodec

    precip_chunks, precip_shards = precip_layout(ref.grid.shape, chunks, shards)
    comp = {**DEFAULT_COMPRESSION, **(compression or {})}
    codec = BloscCodec(cname=comp["cname"], clevel=int(comp["clevel"]), shuffle=comp.get("shuffle", "shuffle"))
    # lat/lon: written once per store, read whole; LZ4 compresses them 3x faster than the
    # precip codec (Zstd 1) and smaller: a fixed cost that counts for short conversions.
    grid_codec = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    h, w = ref.grid.shape
    time_chunks = (precip_chunks[0] * 1024,)
    crs_attrs = {"grid_mapping_name": ref.grid.grid_mapping_name, "proj4": ref.grid.proj4, "crs_wkt": ref.grid.crs_wkt}
    group = zarr.create_group(path, zarr_format=3)
    group.create_array(
        schema.PRECIP,
        shape=(0, h, w),
        dtype=np.float32,
        chunks=precip_chunks,
        shards=precip_shards,
        compressors=[codec],
        fill_value=np.nan,
        dimension_names=schema.PRECIP_DIMS,
        attributes={
            **PRECIP_ATTRS,
            "coordinates": "lat lon",
            "_FillValue": schema.NAN_FILL_ATTR,
        },
    )
    group.create_array(
        schema.MISSING_FRAME,
        shape=(0,),
        dtype=bool,
        chunks=time_chunks,
        fill_value=False,
        dimension_names=("time",),
        attributes={"long_name": "time step inserted for a gap in the source (all-NaN)"},
    )
    group.create_array(
        "time",
        shape=(0,),
        dtype=np.int64,
        chunks=time_chunks,
        fill_value=0,
        dimension_names=("time",),
        attributes={
            "timezone": "UTC",
            "long_name": "end of accumulation interval / scan time",
            "units": "seconds since 1970-01-01",
            "calendar": "proleptic_gregorian",
        },
    )
    for dim, values in (("y", ref.grid.y), ("x", ref.grid.x)):
        group.create_array(
            dim,
            data=values,
            chunks=values.shape,
            fill_value=np.nan,
            dimension_names=(dim,),
            attributes={
                "units": "km",
                "standard_name": f"projection_{dim}_coordinate",
                "_FillValue": schema.NAN_FILL_ATTR,
            },
        )
    for name, values, units, long_name in (
        ("lat", ref.grid.lat, "degrees_north", "latitude"),
        ("lon", ref.grid.lon, "degrees_east", "longitude"),
    ):
        group.create_array(
            name,
            data=values,
            chunks=values.shape,
            compressors=[grid_codec],
            fill_value=np.nan,
            dimension_names=("y", "x"),
            attributes={"units": units, "long_name": long_name, "_FillValue": schema.NAN_FILL_ATTR},
        )
    group.create_array(
        schema.CRS, data=np.array(0, dtype=np.int8), fill_value=0, attributes={k: v for k, v in crs_attrs.items() if v}
    )


def storage_unit(array) -> tuple[int, ...]:
    """Shape of what is stored as one file: the shard when sharded, else the chunk."""
    return tuple(array.shards or array.chunks)


def whole_frame_chunk_writer(array):
    """`write(t, frame)`: stores `frame` as chunk `t` of `array`, synchronously; None when not possible.

    Zarr 3.1 sends every chunk write through its event loop and a thread pool: for one
    frame-sized chunk that is a few ms of Python and thread hand-offs per frame, most
    of it holding the GIL that the thread reading the next file needs. When one chunk is
    one whole time step and nothing is sharded, the array's own codecs and store do the
    same encoding and write synchronously (zarr's `SupportsSyncCodec` / `SupportsSetSync`
    protocols; the same bytes as `array[t] = frame`, checked in tests/test_convert.py).
    Another layout, or a zarr without those protocols, returns None: write through `array`.
    """
    try:
        from zarr.abc.codec import SupportsSyncCodec
        from zarr.abc.store import SupportsSetSync
        from zarr.core.buffer import default_buffer_prototype
    except ImportError:
        return None
    if (
        array.metadata.zarr_format != 3
        or array.shards is not None
        or tuple(array.chunks) != (1, *array.shape[1:])
        or not all(isinstance(c, SupportsSyncCodec) for c in array.metadata.codecs)
        or not isinstance(array.store_path.store, SupportsSetSync)
    ):
        return None
    prototype = default_buffer_prototype()
    spec = array.metadata.get_chunk_spec((0,) * array.ndim, array.config, prototype)

    def write(t: int, frame: np.ndarray) -> None:
        data = prototype.nd_buffer.from_numpy_array(np.ascontiguousarray(frame, dtype=array.dtype)[None])
        for codec in array.metadata.codecs:
            data = codec._encode_sync(data, spec)
        (array.store_path / array.metadata.encode_chunk_key((t, *(0,) * (array.ndim - 1)))).set_sync(data)

    return write
