"""Computing and committing single frames of an infill store, one `FrameInfiller` per process.

Shared by the one-process writer (`inference.archive.infill_store`) and the multi-process one
(`inference.distributed`), which both import it from here.

Predictors are plain callables: `predictor(x_mm_h (2*context+1, H, W) float32 mm/h with NaN,
valid_coverage (H, W) bool) -> (1, H, W) mm/h`; one with `wants_frame_index = True` also gets
`frame_index=(2*context+1,)` store time indices, and one with `bind(ds, path)` is bound to the
input store first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from nowcast_infill.baselines import NothingToInfillFromError
from nowcast_infill.inference.outputs import open_radar_store
from nowcast_infill.schema import MISSING_FRAME, PRECIP, segment_ids

log = logging.getLogger(__name__)

INFILLED = "infilled"
STATUS = "infill_status"
COVERAGE = "coverage"
# infill_status values; 0 means the frame has not been written yet.
STATUS_PENDING, STATUS_COMPLETE, STATUS_INFILLED, STATUS_NOT_INFILLABLE = 0, 1, 2, 3
STATUS_MEANINGS = "pending copied_complete infilled no_data_to_infill_from"


class FrameCache:
    """Input frames by index, keeping only the current window in memory."""

    def __init__(self, precip: xr.DataArray, missing: np.ndarray, segment: np.ndarray | None = None):
        self.precip, self.missing = precip, missing
        self.frames: dict[int, np.ndarray] = {}  # time index -> (H, W) mm/h
        self.shape = precip.shape[1:]
        # Segment number per time step (schema.segment_ids): the store's neighbour across a
        # segment boundary is hours or years away, not the next time step.
        self.segment = np.zeros(precip.shape[0], np.int64) if segment is None else np.asarray(segment)

    def window(self, t: int, context: int) -> np.ndarray:
        wanted = range(t - context, t + context + 1)
        self.frames = {k: v for k, v in self.frames.items() if k in wanted}
        out = np.empty((len(wanted),) + self.shape, dtype=np.float32)
        for i, k in enumerate(wanted):
            inside = 0 <= k < self.precip.shape[0] and self.segment[k] == self.segment[t]
            if not inside:
                # Beyond the archive's ends or its segment a neighbour is missing, like a gap: NaN, not 0.
                out[i] = np.nan
                continue
            if k not in self.frames:
                self.frames[k] = self.precip[k].values.astype(np.float32, copy=False)
            out[i] = self.frames[k]
        return out


def predictor_kwargs(predictor, frame_index: np.ndarray) -> dict:
    """Store time indices of the input frames for predictors that read per-time aux fields."""
    return {"frame_index": frame_index} if getattr(predictor, "wants_frame_index", False) else {}


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """`group[name]`: an array, never a subgroup, in the infill stores `archive.py` creates."""
    node = group[name]
    assert isinstance(node, zarr.Array), f"{name} is a zarr group, not an array"
    return node


class FrameInfiller:
    """Computes and commits single frames of an infill store; one per process.

    Frames are independent (own chunk in `precip`/`infilled`, own chunk in `infill_status`),
    so processes writing disjoint frames never touch the same file.
    """

    def __init__(self, predictor, input_store: Path, output_store: Path, context: int, infill_outside_coverage: bool):
        self.predictor, self.input_store, self.output_store, self.context = (
            predictor,
            input_store,
            output_store,
            context,
        )
        self.src = open_radar_store(input_store)
        if hasattr(predictor, "bind"):
            predictor.bind(self.src, input_store)
        self.shape = self.src[PRECIP].shape[1:]
        out = xr.open_zarr(output_store, chunks=None)
        coverage = out[COVERAGE].values.astype(bool)
        self.fill_region = np.ones(self.shape, dtype=bool) if infill_outside_coverage else coverage
        group = zarr.open_group(str(output_store), mode="r+")
        self.precip_out, self.infilled_out, self.status_out = (
            _array(group, name) for name in (PRECIP, INFILLED, STATUS)
        )
        self.cache = FrameCache(
            self.src[PRECIP],
            self.src[MISSING_FRAME].values,
            segment_ids(self.src["time"].values, self.src.attrs.get("time_step_s")),
        )
        self.no_flag = np.zeros(self.shape, dtype=np.uint8)

    def pending(self) -> np.ndarray:
        return np.nonzero(np.asarray(self.status_out[:]) == STATUS_PENDING)[0]

    def compute(self, t: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(frame (H, W) mm/h, infilled flag (H, W) uint8, status code) of time step `t`."""
        window = self.cache.window(t, self.context)
        observed = window[self.context]
        holes = self.fill_region & ~np.isfinite(observed)
        if not holes.any():
            return observed, self.no_flag, STATUS_COMPLETE
        frame_index = np.arange(t - self.context, t + self.context + 1)
        try:
            pred = np.asarray(
                self.predictor(window, self.fill_region, **predictor_kwargs(self.predictor, frame_index)),
                dtype=np.float32,
            )
        except NothingToInfillFromError as err:
            log.warning("%s: frame %s not infilled: %s", self.input_store, self.src["time"].values[t], err)
            return observed, self.no_flag, STATUS_NOT_INFILLABLE
        if pred.shape != (1,) + self.shape:
            raise ValueError(
                f"predictor returned shape {pred.shape}; expected (1, {self.shape[0]}, {self.shape[1]}) mm/h."
            )
        # Observed pixels are kept bit for bit; the model answers only inside the holes.
        filled = holes & np.isfinite(pred[0])
        return np.where(filled, pred[0], observed).astype(np.float32), filled.astype(np.uint8), STATUS_INFILLED

    def commit(self, t: int, frame: np.ndarray, flag: np.ndarray, code: int) -> None:
        self.precip_out[t] = frame
        self.infilled_out[t] = flag
        # Committed last: a frame counts as written only once its data is on disk.
        self.status_out[t] = code
