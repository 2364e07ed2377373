"""Archive infilling (`ni-infill`): every incomplete frame of a store infilled into a new Zarr store.

The infilled store is pre-allocated and written frame by frame; `infill_status(time)`
records each finished frame (0 = not yet written), so an interrupted run resumes with
no frame written twice or skipped, and a reader can tell finished frames. Zarr's local
store replaces chunk files atomically, so a killed run never leaves a torn chunk.
Predictors: see `inference.frame_infiller` (and `inference.predictors.load_predictor`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from nowcast_infill.errors import BadValueError, MissingInputError, OutputPathError, UserError
from nowcast_infill.inference.frame_infiller import (
    COVERAGE,
    INFILLED,
    STATUS,
    STATUS_COMPLETE,
    STATUS_INFILLED,
    STATUS_MEANINGS,
    STATUS_NOT_INFILLABLE,
    STATUS_PENDING,
    FrameInfiller,
)
from nowcast_infill.inference.outputs import grid_vars, open_radar_store, product_attrs, quiet_consolidated
from nowcast_infill.io.files import open_by_suffix
from nowcast_infill.io.store_lock import DEFAULT_LOCK_TIMEOUT_S, StoreLock
from nowcast_infill.schema import MAX_RAIN_RATE_MM_H, MISSING_FRAME, PRECIP, PRECIP_UNITS, implausible_precip

log = logging.getLogger(__name__)

InfillPredictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


class NoValidFrameError(UserError, ValueError):
    """The input store holds no frame with a single usable precipitation value."""


def first_valid_frame(ds: xr.Dataset, max_mm_h: float = MAX_RAIN_RATE_MM_H) -> int | None:
    """Index of the first non-missing frame with a finite rate in 0..`max_mm_h` mm/h, else None.

    Reads frames in time order and stops at the first valid one (usually the first frame).
    """
    missing = ds[MISSING_FRAME].values.astype(bool)
    for t in np.nonzero(~missing)[0]:
        frame = ds[PRECIP][int(t)].values
        if (np.isfinite(frame) & ~implausible_precip(frame, max_mm_h)).any():
            return int(t)
    return None


def require_valid_frame(ds: xr.Dataset, store_name: str) -> None:
    """Raise NoValidFrameError naming `store_name` (as the user wrote it) when `ds` has no valid frame."""
    if first_valid_frame(ds) is None:
        n_missing = int(ds[MISSING_FRAME].values.astype(bool).sum())
        raise NoValidFrameError(
            f"{store_name}: no valid frame: of its {ds.sizes['time']} frames {n_missing} are missing frames and the "
            f"others hold no finite rate in 0..{MAX_RAIN_RATE_MM_H:g} mm/h, so there is nothing to infill from; "
            "check input= (convert radar files into it with ni-convert)."
        )


# ----------------------------------------------------------------------------- coverage


def derive_coverage(ds: xr.Dataset, min_fraction: float = 0.5) -> np.ndarray:
    """Radar coverage `(y, x)` bool: pixels valid in at least `min_fraction` of the non-missing frames.

    Frames flagged `missing_frame` are not counted (they would make every pixel look
    uncovered). The no-data area outside the radar network is NaN in (nearly) every
    frame, a real outage inside it only in some, so a fraction such as 0.5 separates
    them. Reads one frame at a time.
    """
    if not 0.0 < min_fraction <= 1.0:
        raise BadValueError(f"coverage_min_fraction={min_fraction}; it must be in (0, 1].")
    missing = ds[MISSING_FRAME].values.astype(bool)
    counts = np.zeros(ds[PRECIP].shape[1:], dtype=np.int64)
    n_used = 0
    for t in np.nonzero(~missing)[0]:
        counts += np.isfinite(ds[PRECIP][int(t)].values)
        n_used += 1
    if n_used == 0:
        raise ValueError(
            "cannot derive the radar coverage: every frame of the store is a missing frame; "
            "pass coverage=<file> instead."
        )
    return counts >= min_fraction * n_used


def load_coverage(path: str | Path, shape: tuple[int, ...]) -> np.ndarray:
    """Read a coverage mask `(y, x)` bool from a `.npy` file or a NetCDF/Zarr variable `coverage`."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(
            f"{path}: coverage file not found; pass a .npy bool array or a store with "
            f"a '{COVERAGE}(y, x)' variable, or coverage=null to derive it."
        )
    if path.suffix == ".npy":
        mask = np.load(path)
    else:
        opened = open_by_suffix(path)
        if COVERAGE not in opened:
            raise BadValueError(f"{path}: no variable '{COVERAGE}'; store the mask as '{COVERAGE}(y, x)' (bool).")
        mask = opened[COVERAGE].values
    if mask.shape != tuple(shape):
        raise BadValueError(f"{path}: coverage mask has shape {mask.shape}, the store grid is {tuple(shape)} (y, x).")
    if mask.dtype != bool and not np.isin(mask, (0, 1)).all():
        raise BadValueError(f"{path}: coverage mask holds values other than 0/1 (True = inside radar coverage).")
    return mask.astype(bool)


def _create_infill_store(
    src, input_store, output_store, coverage, coverage_source, info, context, infill_outside_coverage
) -> None:
    import dask.array as da

    n_t, height, width = src[PRECIP].shape
    dims = ("time", "y", "x")
    precip_attrs = dict(src[PRECIP].attrs)
    precip_attrs.update({"units": PRECIP_UNITS, "ancillary_variables": f"{INFILLED} {STATUS}"})
    precip_attrs.pop("_FillValue", None)
    out = xr.Dataset(
        {
            PRECIP: (
                dims,
                da.full((n_t, height, width), np.nan, dtype=np.float32, chunks=(1, height, width)),
                precip_attrs,
            ),
            INFILLED: (
                dims,
                da.zeros((n_t, height, width), dtype=np.uint8, chunks=(1, height, width)),
                {
                    "long_name": "pixel value comes from the infilling model",
                    "flag_values": [0, 1],
                    "flag_meanings": "observed_or_no_data infilled",
                },
            ),
            STATUS: (
                ("time",),
                np.zeros(n_t, dtype=np.int8),
                {
                    "long_name": "infilling state of the time step; 0 = not written yet",
                    "flag_values": [0, 1, 2, 3],
                    "flag_meanings": STATUS_MEANINGS,
                },
            ),
            COVERAGE: (
                ("y", "x"),
                coverage,
                {"long_name": "radar coverage area: pixels eligible for infilling", "source": coverage_source},
            ),
            MISSING_FRAME: src[MISSING_FRAME].load(),
            **grid_vars(src),
        },
        coords={"time": src["time"], "y": src["y"], "x": src["x"]},
        attrs={
            **product_attrs(src, input_store, info),
            "infill_context": int(context),
            "infill_outside_coverage": int(bool(infill_outside_coverage)),
        },
    )
    encoding = {
        PRECIP: {"chunks": (1, height, width), "_FillValue": np.float32(np.nan)},
        INFILLED: {"chunks": (1, height, width), "_FillValue": None},
        # One chunk per step: committing a step rewrites a single tiny file atomically.
        STATUS: {"chunks": (1,), "_FillValue": None},
    }
    # Metadata and the small eager arrays only; the big arrays stay unwritten until their frame is.
    with quiet_consolidated():
        out.to_zarr(output_store, mode="w-", compute=False, encoding=encoding, zarr_format=3, consolidated=True)


def _check_resumable(out: xr.Dataset, src: xr.Dataset, output_store: Path, input_store: Path, info: dict) -> None:
    want = {
        "source_store": str(Path(input_store).resolve()),
        "model": info.get("model", ""),
        "model_checkpoint_sha256": info.get("sha256", ""),
        "model_config": info.get("config", ""),
    }
    for key, value in want.items():
        if out.attrs.get(key) != value:
            raise OutputPathError(
                f"{output_store}: exists but was written with {key}={out.attrs.get(key)!r}, this run has {value!r}; "
                "delete it or choose another output to start afresh."
            )
    if STATUS not in out or out[PRECIP].shape != src[PRECIP].shape:
        raise OutputPathError(
            f"{output_store}: exists but is not an infill store for {input_store} "
            f"(no '{STATUS}' or another grid); delete it or choose another output."
        )


def _open_or_create_infill_store(
    predictor,
    input_store: Path,
    output_store: Path,
    info: dict,
    context: int,
    coverage,
    coverage_min_fraction: float,
    infill_outside_coverage: bool,
) -> None:
    src = open_radar_store(input_store)
    shape = src[PRECIP].shape[1:]
    if output_store.exists():
        out = xr.open_zarr(output_store, chunks=None)
        _check_resumable(out, src, output_store, input_store, info)
        log.info(
            "%s: resuming, %d of %d frames already written",
            output_store,
            int((out[STATUS].values != STATUS_PENDING).sum()),
            out.sizes["time"],
        )
        return
    if coverage is None:
        coverage_mask = derive_coverage(src, coverage_min_fraction)
        coverage_source = f"derived: valid in >= {coverage_min_fraction:g} of the non-missing frames"
    elif isinstance(coverage, (str, Path)):
        coverage_mask, coverage_source = load_coverage(coverage, shape), f"file: {Path(coverage).resolve()}"
    else:
        coverage_mask = np.asarray(coverage, dtype=bool)
        if coverage_mask.shape != shape:
            raise BadValueError(f"coverage has shape {coverage_mask.shape}; the store grid is {shape} (y, x).")
        coverage_source = "given by the caller"
    _create_infill_store(
        src, input_store, output_store, coverage_mask, coverage_source, info, context, infill_outside_coverage
    )


def _summary(output_store: Path, written: int) -> dict:
    final = np.asarray(zarr.open_array(str(output_store / STATUS), mode="r")[:])
    return {
        "frames": int(final.size),
        "written_this_run": int(written),
        "complete": int((final == STATUS_COMPLETE).sum()),
        "infilled": int((final == STATUS_INFILLED).sum()),
        "not_infillable": int((final == STATUS_NOT_INFILLABLE).sum()),
        "pending": int((final == STATUS_PENDING).sum()),
    }


def infill_store(
    predictor: InfillPredictor,
    input_store: str | Path,
    output_store: str | Path,
    *,
    model_info: dict | None = None,
    context: int = 0,
    coverage: np.ndarray | str | Path | None = None,
    coverage_min_fraction: float = 0.5,
    infill_outside_coverage: bool = False,
    progress: bool = True,
    devices: int = 1,
    accelerator: str = "auto",
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
) -> dict:
    """Infill every incomplete frame of `input_store` into `output_store` (resumable).

    Args:
        predictor: `(x_mm_h (2*context+1, H, W) with NaN, valid_coverage (H, W) bool) -> (1, H, W)` mm/h;
            one with `wants_frame_index = True` also gets `frame_index=(2*context+1,)` store indices,
            and one with `bind(ds, path)` is bound to the input store first.
        model_info: `{"model", "sha256", "config"}` recorded in the attributes (see `load_predictor`).
        context: neighbouring frames on each side given to the predictor.
        coverage: `(H, W)` bool mask, a file (see `load_coverage`), or None to derive it
            with `derive_coverage(min_fraction=coverage_min_fraction)`.
        infill_outside_coverage: also fill NaN pixels outside the coverage.
        devices: > 1 splits the pending frames over that many processes with Lightning
            `predict` (`ddp_spawn`, one process per device); the predictor must be picklable.
        accelerator: Lightning accelerator of the multi-process path (`auto`, `cpu`, `gpu`).
        lock_timeout: seconds to wait while another writer holds `output_store` (0: fail at
            once with a StoreLockedError naming it); the lock is held for the whole run.

    A frame without NaN in the fill region is copied bit-identical. In an incomplete frame
    only NaN pixels inside the fill region take the prediction; `infilled` marks them.
    Returns a summary dict of counts per status. Raises NoValidFrameError, before any
    output is written, when no frame of the input holds a valid value.
    """
    from tqdm.auto import tqdm

    output_as_given = str(output_store)
    input_name = str(input_store)
    input_store, output_store = Path(input_store), Path(output_store)
    if context < 0:
        raise BadValueError(f"context={context}; it must be >= 0 frames.")
    if int(devices) < 1:
        raise BadValueError(f"devices={devices}; it must be >= 1.")
    require_valid_frame(open_radar_store(input_store), input_name)
    info = dict(
        model_info or {"model": getattr(predictor, "__name__", type(predictor).__name__), "sha256": "", "config": ""}
    )
    # One writer per output store, from its creation / resume check to the last frame
    # (the processes of `devices > 1` write under this process's lock).
    with StoreLock(output_as_given, timeout=lock_timeout):
        _open_or_create_infill_store(
            predictor,
            input_store,
            output_store,
            info,
            context,
            coverage,
            coverage_min_fraction,
            infill_outside_coverage,
        )
        if int(devices) > 1:
            # Here, not at the top: Lightning loads (seconds) only for the multi-process path.
            from nowcast_infill.inference.distributed import infill_frames_distributed

            written = infill_frames_distributed(
                predictor,
                input_store,
                output_store,
                context=context,
                infill_outside_coverage=infill_outside_coverage,
                devices=int(devices),
                accelerator=accelerator,
                progress=progress,
            )
            return _summary(output_store, written)
        infiller = FrameInfiller(predictor, input_store, output_store, context, infill_outside_coverage)
        pending = infiller.pending()
        for t in tqdm(pending, desc=f"infill {output_store.name}", unit="frame", disable=not progress):
            infiller.commit(int(t), *infiller.compute(int(t)))
        return _summary(output_store, pending.size)
