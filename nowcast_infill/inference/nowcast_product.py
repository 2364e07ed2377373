"""Nowcast products (`ni-nowcast`): forecasts from the latest frames of a store, written as Zarr.

Predictor: `predictor(x_mm_h (past, H, W) float32 mm/h with NaN) -> (n_leads, H, W) mm/h`
(one with `wants_frame_index = True` also gets the store time indices of its frames).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from nowcast_infill.errors import BadValueError, OutputExistsError
from nowcast_infill.inference.frame_infiller import predictor_kwargs
from nowcast_infill.inference.outputs import grid_vars, iso_time, open_radar_store, product_attrs, quiet_consolidated
from nowcast_infill.io.consolidated import consolidate
from nowcast_infill.io.store_lock import DEFAULT_LOCK_TIMEOUT_S, StoreLock
from nowcast_infill.schema import PRECIP, segment_ids

log = logging.getLogger(__name__)

NowcastPredictor = Callable[[np.ndarray], np.ndarray]


def issue_indices(
    times: np.ndarray, past: int, store_name: str, issue_time=None, issue_times=None, time_step_s=None
) -> list[int]:
    """Store time indices to issue nowcasts at.

    `issue_times`: None (one issue: `issue_time`, default the last frame), "all" (every frame
    with `past` frames up to it), or `[start, end]` ISO times (every store frame in between,
    both included; each needs `past` frames up to it). The `past` frames must lie in the issue
    time's own segment (schema.segment_ids, from `time_step_s`): the store holds no time between
    segments, so frames before a segment start are another event's.
    """
    times = np.asarray(times)
    first_possible = past - 1
    segment = segment_ids(times, time_step_s)
    segment_start = np.searchsorted(segment, segment)  # segment ids rise along time
    frames_in_segment = np.arange(len(times)) - segment_start + 1
    if issue_times is None:
        if issue_time is None:
            end = len(times) - 1
        else:
            hits = np.nonzero(times == np.datetime64(issue_time, "ns"))[0]
            if hits.size == 0:
                raise BadValueError(
                    f"{store_name}: issue_time {issue_time} is not a time of the store "
                    f"({times[0]} .. {times[-1]}); pick one of them or issue_time=null for the last frame."
                )
            end = int(hits[0])
        if end < first_possible:
            raise BadValueError(f"{store_name}: only {end + 1} frames up to {times[end]}, but past={past} are needed.")
        if frames_in_segment[end] < past:
            start = int(segment_start[end])
            raise BadValueError(
                f"{store_name}: issue time {times[end]} has only {frames_in_segment[end]} frames since "
                f"its segment began at {times[start]} (the store holds no time before it), but "
                f"past={past} are needed; pick a later issue_time or a smaller past."
            )
        return [end]
    if issue_time is not None:
        raise BadValueError(
            f"issue_time={issue_time} and issue_times={issue_times} are both set; keep one "
            "(issue_time for one nowcast, issue_times for a range)."
        )
    if isinstance(issue_times, str):
        if issue_times != "all":
            raise BadValueError(f"issue_times={issue_times}: give all, [start, end] (ISO times) or null.")
        wanted = np.arange(first_possible, len(times))
    else:
        bounds = list(issue_times)
        if len(bounds) != 2:
            raise BadValueError(f"issue_times={bounds}: give [start, end] (two ISO times), all or null.")
        first_time, last_time = (np.datetime64(str(b), "ns") for b in bounds)
        if last_time < first_time:
            raise BadValueError(f"issue_times=[{bounds[0]}, {bounds[1]}]: the end is before the start; swap them.")
        wanted = np.nonzero((times >= first_time) & (times <= last_time))[0]
        if wanted.size and wanted[0] < first_possible:
            raise BadValueError(
                f"issue_times starts at {bounds[0]}, but a nowcast needs past={past} frames up to its "
                f"issue time: start at {iso_time(times[first_possible])} or later."
            )
    after_segment_start = wanted[frames_in_segment[wanted] < past]
    if after_segment_start.size:
        log.warning(
            "%s: %d issue times in the range lie within past=%d frames after a segment start (first %s) "
            "and get no nowcast: their past frames would be another event's.",
            store_name,
            after_segment_start.size,
            past,
            iso_time(times[after_segment_start[0]]),
        )
        wanted = wanted[frames_in_segment[wanted] >= past]
    if wanted.size == 0:
        raise BadValueError(
            f"issue_times={issue_times}: no frame of {store_name} ({times[0]} .. {times[-1]}) "
            f"with past={past} frames before it lies in that range."
        )
    return [int(i) for i in wanted]


def write_nowcast(
    predictor: NowcastPredictor,
    input_store: str | Path,
    output_store: str | Path,
    *,
    past: int,
    n_leads: int,
    issue_time: str | np.datetime64 | None = None,
    issue_times: str | list | None = None,
    model_info: dict | None = None,
    overwrite: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
) -> xr.Dataset:
    """Forecast `n_leads` frames from the `past` frames ending at each issue time.

    One issue (`issue_time`, default the last frame): `precip(lead_time, y, x)` mm/h (NaN = no
    forecast) with `lead_time` (timedelta, CF `forecast_period`), `time(lead_time)` valid times
    and the scalar `forecast_reference_time` (= issue time).
    A range (`issue_times="all"` or `[start, end]`, see `issue_indices`): `precip(
    forecast_reference_time, lead_time, y, x)` with `time(forecast_reference_time, lead_time)`,
    written one issue time at a time (memory holds one forecast); an issue time whose past
    frames hold no data at all gets an all-NaN forecast, counted in the attribute
    `issue_times_without_data`.
    Both carry the input's grid variables. The store is written to a temporary path and
    renamed, so it is never half-written; the output's store lock (`lock_timeout`, as for
    `infill_store`) keeps two runs writing one product from replacing each other's half-way.
    Returns the product, opened lazily from the output.
    """
    output_as_given = str(output_store)
    input_store, output_store = Path(input_store), Path(output_store)
    if past < 1 or n_leads < 1:
        raise BadValueError(f"past={past} and n_leads={n_leads} must both be >= 1.")
    if output_store.exists() and not overwrite:
        raise OutputExistsError(f"{output_store}: exists; pass overwrite=true or choose another output.")
    src = open_radar_store(input_store)
    times = src["time"].values
    issues = issue_indices(times, past, str(input_store), issue_time, issue_times, src.attrs.get("time_step_s"))
    step_s = src.attrs.get("time_step_s")
    if not step_s:
        raise ValueError(f"{input_store}: attribute 'time_step_s' is missing; it defines the lead times.")
    if hasattr(predictor, "bind"):
        predictor.bind(src, input_store)
    lead = (np.arange(1, n_leads + 1) * np.timedelta64(int(step_s), "s")).astype("timedelta64[ns]")
    info = dict(model_info or {"model": getattr(predictor, "__name__", ""), "sha256": "", "config": ""})
    precip_attrs = {k: v for k, v in src[PRECIP].attrs.items() if k != "_FillValue"}
    lead_attrs = {"standard_name": "forecast_period", "long_name": "time since the issue time"}
    valid_attrs = {"standard_name": "time", "long_name": "valid time", "timezone": "UTC"}
    issue_attrs = {"standard_name": "forecast_reference_time", "timezone": "UTC"}
    attrs = {
        **product_attrs(src, input_store, info),
        "product": "nowcast",
        "past_frames": int(past),
        "n_leads": int(n_leads),
    }
    single = issue_times is None

    def forecast_at(end: int) -> np.ndarray | None:
        x = src[PRECIP][end + 1 - past : end + 1].values.astype(np.float32)
        if not single and not np.isfinite(x).any():
            return None  # no data to forecast from: NaN, counted
        forecast = np.asarray(
            predictor(x, **predictor_kwargs(predictor, np.arange(end + 1 - past, end + 1))), dtype=np.float32
        )
        if forecast.shape != (n_leads,) + x.shape[1:]:
            raise ValueError(
                f"predictor returned shape {forecast.shape}; expected ({n_leads}, {x.shape[1]}, {x.shape[2]})."
            )
        return forecast

    def issue_dataset(end: int, forecast: np.ndarray) -> xr.Dataset:
        coords = {"lead_time": ("lead_time", lead, lead_attrs), "y": src["y"], "x": src["x"]}
        if single:
            return xr.Dataset(
                {PRECIP: (("lead_time", "y", "x"), forecast, precip_attrs), **grid_vars(src)},
                coords={
                    **coords,
                    "time": ("lead_time", (times[end] + lead).astype("datetime64[ns]"), valid_attrs),
                    "forecast_reference_time": ((), times[end], issue_attrs),
                },
                attrs={**attrs, "issue_time": iso_time(times[end])},
            )
        return xr.Dataset(
            {PRECIP: (("forecast_reference_time", "lead_time", "y", "x"), forecast[None], precip_attrs)},
            coords={
                **coords,
                "forecast_reference_time": ("forecast_reference_time", times[end : end + 1], issue_attrs),
                "time": (
                    ("forecast_reference_time", "lead_time"),
                    (times[end] + lead)[None].astype("datetime64[ns]"),
                    valid_attrs,
                ),
            },
            attrs=attrs,
        )  # on every piece: an append replaces the store's attributes with the piece's

    staging = output_store.with_name(f"{output_store.name}.tmp-{os.getpid()}")
    with StoreLock(output_as_given, timeout=lock_timeout):
        if output_store.exists() and not overwrite:  # written by another run since the check above
            raise FileExistsError(f"{output_as_given}: exists; pass overwrite=true or choose another output.")
        shutil.rmtree(staging, ignore_errors=True)
        without_data = 0
        with quiet_consolidated():
            for n, end in enumerate(issues):
                forecast = forecast_at(end)
                if forecast is None:
                    without_data += 1
                    forecast = np.full((n_leads,) + src[PRECIP].shape[1:], np.nan, dtype=np.float32)
                piece = issue_dataset(end, forecast)
                if single:
                    piece.to_zarr(
                        staging,
                        mode="w",
                        zarr_format=3,
                        consolidated=True,
                        encoding={PRECIP: {"_FillValue": np.float32(np.nan)}},
                    )
                elif n == 0:
                    piece = piece.assign(grid_vars(src))
                    piece.to_zarr(
                        staging,
                        mode="w",
                        zarr_format=3,
                        consolidated=True,
                        encoding={
                            PRECIP: {"_FillValue": np.float32(np.nan), "chunks": (1, n_leads) + forecast.shape[1:]},
                            # fixed units: xarray would pick them from the first issue
                            # time alone (days) and truncate the appended ones
                            **{
                                name: {"units": "seconds since 1970-01-01", "dtype": "int64"}
                                for name in ("forecast_reference_time", "time")
                            },
                        },
                    )
                else:
                    piece.to_zarr(
                        staging, mode="a", append_dim="forecast_reference_time", zarr_format=3, consolidated=True
                    )
            if not single:
                group = zarr.open_group(staging, mode="r+")
                group.attrs.update(
                    {
                        "issue_times": f"{iso_time(times[issues[0]])} .. {iso_time(times[issues[-1]])}",
                        "n_issue_times": len(issues),
                        "issue_times_without_data": without_data,
                    }
                )
                consolidate(staging)
        if without_data:
            log.warning(
                "%s: %d of %d issue times have no data in their %d past frames: their forecasts are NaN.",
                output_as_given,
                without_data,
                len(issues),
                past,
            )
        if output_store.exists():
            shutil.rmtree(output_store)
        os.replace(staging, output_store)
    with quiet_consolidated():
        return xr.open_zarr(output_store)
