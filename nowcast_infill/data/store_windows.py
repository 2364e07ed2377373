"""One radar store prepared for sampling: its grid, time axis, frame statistics, splits and windows.

`StoreWindows.prepare` reads no `precip` chunk: valid fractions, coverage, implausible
counts, wet fractions and the log1p moments come from the store's per-frame statistics
(nowcast_infill/io/frame_stats.py), so start-up does not grow with the archive; a store
without them gets them computed once, by rank 0, while the other ranks wait. Windows never
cross a segment boundary (a gap longer than the store's `max_gap_s`, docs/schema.md § Segments).
Several stores (`data.stores`) are each prepared on their own: each keeps its grid, splits
and statistics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nowcast_infill import schema
from nowcast_infill.data.dataset import RadarWindowDataset, StoreHandle
from nowcast_infill.data.regrid import AuxRegridder
from nowcast_infill.data.splits import SPLITS, plan_splits, present_splits, select_windows
from nowcast_infill.data.tiling import eval_tiles
from nowcast_infill.errors import BadValueError
from nowcast_infill.io import frame_stats
from nowcast_infill.io.store import open_store

log = logging.getLogger(__name__)


def wait_for(ready: Callable[[], bool], *, what: str, timeout_s: float, poll_s: float = 0.5) -> None:
    """Poll `ready()` until True; TimeoutError naming `what` after `timeout_s` seconds."""
    deadline = time.monotonic() + float(timeout_s)
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"waited {timeout_s:g} s for the {what}; check rank 0's log, or raise data.stats_wait_s."
            )
        time.sleep(poll_s)


def store_paths(store: str | Path | None, stores: Sequence[str | Path] | str | Path | None) -> list[str]:
    """The store paths of a run: data.stores when set (a list), else [data.store]."""
    if stores:
        if isinstance(stores, (str, Path)):
            raise BadValueError(f"data.stores={stores!r} must be a list of store paths; for one store set data.store.")
        listed = [str(s) for s in stores]
        if store is not None and str(store) not in listed:
            log.info("data.stores is set: training on %s; data.store=%s is not used", listed, store)
        return listed
    if store is None:
        raise BadValueError(
            "data.store is not set; give a radar store path (data.store=...) or a list (data.stores=[...])."
        )
    return [str(store)]


def resolve_aux(ds, aux: Sequence[str] | str | None, store: str) -> list[str]:
    """The aux field names `data.aux` asks for ('all': every one in the store), checked against the store."""
    available = schema.aux_names(ds)
    if aux in (None, "none", "None", False, []):
        return []
    if aux == "all":
        return available
    wanted = [aux] if isinstance(aux, str) else list(aux)
    missing = [a for a in wanted if a not in available]
    if missing:
        raise KeyError(
            f"{store}: auxiliary field(s) {', '.join(schema.AUX_PREFIX + m for m in missing)} not in the store "
            f"(available: {', '.join(available) or 'none'}); fix data.aux or add them to the store."
        )
    return wanted


def load_frame_stats(
    store: str, max_rain_rate_mm_h: float, *, rank: int, wait_s: float
) -> frame_stats.StoredFrameStats:
    """The store's per-frame statistics (docs/schema.md § Per-frame statistics), reading no `precip`
    chunk when they are stored.

    Missing ones (a schema 1 store, or one written by another tool) are computed once and
    written into the store by rank 0 while the other ranks wait for them and then load
    them; a store that cannot be written, or a `max_rain_rate_mm_h` other than the one
    the statistics were computed with, gets them computed in memory on every rank.
    """
    stored = frame_stats.load_frame_stats(store)
    if stored is not None and stored.complete and stored.max_mm_h == max_rain_rate_mm_h:
        return stored
    if stored is not None and stored.max_mm_h != max_rain_rate_mm_h:
        log.info(
            "%s: stored frame statistics use max_rain_rate_mm_h=%g, data.max_rain_rate_mm_h=%g: computing "
            "them in memory (reads every frame)",
            store,
            stored.max_mm_h,
            max_rain_rate_mm_h,
        )
        return frame_stats.stats_in_memory(store, max_mm_h=max_rain_rate_mm_h)
    if not frame_stats.store_is_writable(store):
        log.warning(
            "%s: no frame statistics stored and the store is read-only: computing them in memory on "
            "every start (reads every frame); run compute_frame_stats on a writable copy once.",
            store,
        )
        return frame_stats.stats_in_memory(store, max_mm_h=max_rain_rate_mm_h)
    if rank == 0:
        summary = frame_stats.compute_frame_stats(store, missing_only=True)
        log.info("frame statistics computed and stored once in %s (%d frames read)", store, summary["frames_read"])
    else:

        def complete() -> bool:
            got = frame_stats.load_frame_stats(store)
            return got is not None and got.complete

        wait_for(complete, what=f"frame statistics of {store} (computed by rank 0)", timeout_s=wait_s)
    loaded = frame_stats.load_frame_stats(store)
    if loaded is None:
        raise RuntimeError(f"{store}: frame statistics missing right after they were computed and stored.")
    return loaded


@dataclass(frozen=True)
class WindowRules:
    """How a run cuts windows and which it keeps, the same for every store and for both window
    selection (`StoreWindows.prepare`) and samples (`StoreWindows.dataset`).

    `input_offsets` `(T_in,)`, `target_offsets` `(T_out,)`: frames from the window start
    (`splits.window_offsets`); `length` frames a window spans; a window (or crop) needs at
    least `min_valid_fraction` valid target pixels; values above `max_rain_rate_mm_h` are
    implausible (masked as no-data).
    """

    task: str
    length: int
    input_offsets: np.ndarray
    target_offsets: np.ndarray
    min_valid_fraction: float
    max_rain_rate_mm_h: float


@dataclass
class StoreWindows:
    """A store ready for sampling (built by `prepare`).

    `times` `(T,)` datetime64[ns]; `lat`, `lon` `(H, W)` float32 degrees; `blocks` the
    split blocks of `plan_splits`; `starts[split]` the kept window starts; `stats` the
    per-frame statistics; `coverage` `(H, W)` bool, valid in any frame.
    """

    path: str
    handle: StoreHandle
    times: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    aux_names: list[str]
    regridder: AuxRegridder | None
    stats: frame_stats.StoredFrameStats
    blocks: dict[str, tuple[int, int]]
    rules: WindowRules
    starts: dict[str, np.ndarray] = field(default_factory=dict)
    window_report: dict[str, dict[str, int]] = field(default_factory=dict)
    implausible_report: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.lat.shape)

    @property
    def coverage(self) -> np.ndarray:
        return self.stats.coverage

    @classmethod
    def prepare(
        cls,
        path: str,
        rules: WindowRules,
        *,
        split,
        aux,
        crop_size: int | None,
        rank: int,
        stats_wait_s: float,
    ) -> StoreWindows:
        """Open, validate and plan the store at `path`: splits, windows, statistics, aux regridding.

        With `split=test_only` (`train_only`) only the test (train) split gets windows.
        """
        ds = open_store(path)
        aux_names = resolve_aux(ds, aux, path)
        times = ds["time"].values.astype("datetime64[ns]")
        missing = np.asarray(ds[schema.MISSING_FRAME].values, bool)
        lat = np.asarray(ds["lat"].values, np.float32)
        lon = np.asarray(ds["lon"].values, np.float32)
        height, width = lat.shape
        if crop_size is not None and (crop_size > height or crop_size > width):
            raise BadValueError(
                f"crop_size={crop_size} exceeds the frame {height} x {width} of {path}; lower data.crop_size."
            )
        regridder = None
        if aux_names:
            regridder = AuxRegridder(ds["y"].values, ds["x"].values, ds["y_aux"].values, ds["x_aux"].values)
        stats = load_frame_stats(path, rules.max_rain_rate_mm_h, rank=rank, wait_s=stats_wait_s)
        plan = cls(
            path=path,
            handle=StoreHandle(path),
            times=times,
            lat=lat,
            lon=lon,
            aux_names=aux_names,
            regridder=regridder,
            stats=stats,
            blocks=plan_splits(times, split, path),
            rules=rules,
        )
        plan.implausible_report = plan._implausible(rules.max_rain_rate_mm_h, rank)
        segment = schema.segment_ids(times, ds.attrs.get("time_step_s"))
        for name in present_splits(split):
            plan.starts[name], plan.window_report[name] = select_windows(
                plan.blocks[name],
                rules.length,
                rules.target_offsets,
                missing=missing,
                valid_fraction=stats.valid_fraction,
                segment=segment,
                min_valid_fraction=rules.min_valid_fraction,
                split_name=name,
                store=path,
                task_name=rules.task,
            )
        return plan

    def _implausible(self, max_rain_rate_mm_h: float, rank: int) -> dict[str, Any]:
        """Implausible values in the split frames, from the statistics; logged once (rank 0)."""
        in_splits = np.zeros(self.stats.done.size, bool)
        for start, stop in self.blocks.values():
            in_splits[start:stop] = True
        counts = np.where(in_splits, self.stats.implausible_count, 0)
        count = int(counts.sum())
        first_time = None if not count else str(np.datetime_as_string(self.times[int(np.argmax(counts > 0))], unit="s"))
        if count and rank == 0:
            log.warning(
                "%s: %d value(s) of %s are negative, infinite or above %g mm/h (first at %sZ); they are treated as "
                "no data (masked), never trained or scored on. Re-convert the store with ni-convert, or raise "
                "data.max_rain_rate_mm_h if such rates are real.",
                self.path,
                count,
                schema.PRECIP,
                max_rain_rate_mm_h,
                first_time,
            )
        return {
            "count": count,
            "first_time": first_time,
            "variable": schema.PRECIP,
            "max_rain_rate_mm_h": max_rain_rate_mm_h,
        }

    def dataset(
        self, split_name: str, *, crop_size: int | None, eval_tile: int | None, eval_masks: np.ndarray | None, **options
    ) -> RadarWindowDataset:
        """The samples of split `split_name` of this store: train windows as random `crop_size`
        crops (whole frames when None), val/test windows in `eval_tile` tiles (whole frames when
        None) with the fixed `eval_masks` `(n, H, W)`, cut and kept by the rules of `prepare`;
        `options`: the other RadarWindowDataset keywords (normalizer, seed, masks, ...)."""
        shape: dict[str, Any]
        if split_name == "train":
            shape = {"crop_size": crop_size} if crop_size is not None else {"tiles": [(0, 0, *self.shape)]}
        else:
            shape = {"tiles": eval_tiles(*self.shape, eval_tile), "eval_masks": eval_masks}
        return RadarWindowDataset(
            self.handle,
            split_name,
            self.starts[split_name],
            times_ns=self.times.astype(np.int64),
            lat=self.lat,
            lon=self.lon,
            aux_names=self.aux_names,
            regridder=self.regridder,
            task=self.rules.task,
            input_offsets=self.rules.input_offsets,
            target_offsets=self.rules.target_offsets,
            min_valid_fraction=self.rules.min_valid_fraction,
            max_rain_rate_mm_h=self.rules.max_rain_rate_mm_h,
            **shape,
            **options,
        )

    def fit_frames(self) -> np.ndarray:
        """Frame indices the normaliser is fitted on: the train block (the test block with split=test_only)."""
        start, stop = self.blocks["train"]
        if stop <= start and "train" not in self.starts:
            start, stop = self.blocks["test"]
        return np.arange(start, stop)

    def fit_record(self, frames: np.ndarray) -> dict[str, Any]:
        """What a normaliser fitted on `frames` of this store was fitted on (plain types, JSON-ready):
        the store path, its frame count and the first/last fitted frame (index and time)."""
        record: dict[str, Any] = {
            "store": str(Path(self.path).absolute()),
            "frames": int(self.times.size),
            "fit_frames": int(frames.size),
        }
        if frames.size:
            first, last = int(frames[0]), int(frames[-1])
            record["first"] = [first, str(np.datetime_as_string(self.times[first], unit="s"))]
            record["last"] = [last, str(np.datetime_as_string(self.times[last], unit="s"))]
        return record


def check_stores_agree(
    plans: Sequence[StoreWindows], *, crop_size: int | None, eval_tile: int | None, splits: Sequence[str] = SPLITS
) -> None:
    """Several stores must give same-shaped batches (crops and tiles when grids differ) and the same
    aux fields. `splits`: the splits that get windows (no tile is needed without val/test)."""
    shapes = {plan.path: plan.shape for plan in plans}
    evaluated = any(name in splits for name in ("val", "test"))
    if len(set(shapes.values())) > 1 and (crop_size is None or (eval_tile is None and evaluated)):
        raise BadValueError(
            f"data.stores have different grids {shapes}: set data.crop_size and data.eval_tile "
            "so that every batch has one shape."
        )
    for plan in plans[1:]:
        if plan.aux_names != plans[0].aux_names:
            raise BadValueError(
                f"data.aux: {plan.path} has aux fields {plan.aux_names}, {plans[0].path} has "
                f"{plans[0].aux_names}; list the fields every store holds in data.aux."
            )


def combined_reports(plans: Sequence[StoreWindows]) -> tuple[dict[str, dict[str, int]], dict[str, Any]]:
    """(window report per split, implausible-value report) summed over the stores (one store: its own)."""
    windows = {
        name: {key: sum(plan.window_report[name][key] for plan in plans) for key in report}
        for name, report in plans[0].window_report.items()
    }
    reports = [plan.implausible_report for plan in plans]
    firsts = [r["first_time"] for r in reports if r["first_time"] is not None]
    implausible = {**reports[0], "count": sum(r["count"] for r in reports), "first_time": firsts[0] if firsts else None}
    return windows, implausible
