"""RadarDataModule: one LightningDataModule for task=infill and task=nowcast.

Reads a radar store of docs/schema.md and yields the sample dicts of
docs/schema.md § "Samples produced by the DataModule".

Design notes (the why):

- The store is opened lazily, once per process (`_StoreHandle` keys the open Zarr group
  by pid): a handle inherited through fork from the parent is never shared by workers.
- Every random choice of a sample (crop, hole mask, input holes) comes from a
  `numpy.random.Generator` seeded by (seed, split, epoch, index); nothing uses global
  random state, so batches are identical for any num_workers and differ per rank
  (each rank draws different indices). The epoch reaches the dataset through the index
  itself: `WindowSampler` yields `epoch * len(dataset) + index`.
- `WindowSampler` subclasses `DistributedSampler`, so Lightning does not replace it
  under DDP; train shards are padded to equal length (ranks must step together), eval
  shards are not padded (no sample is scored twice, so 2 ranks score what 1 rank does).
- Missing data is NaN in the store and 0 in the masks here; inputs are 0 where their
  mask is 0 (the value is irrelevant: every consumer reads the mask).
- A store written by another tool may hold negative, +-inf or absurdly large rates: they
  are counted and reported once at setup and read as no data everywhere (statistics,
  valid fractions, coverage, every sample), so nothing is ever trained or scored on them.
- `setup` reads no `precip` chunk: valid fractions, coverage, implausible counts, wet
  fractions and the normaliser's log1p moments come from the store's per-frame statistics
  (nowcast_infill/io/frame_stats.py), so start-up does not grow with the archive; a store
  without them gets them computed once, by rank 0, while the other ranks wait.
- Windows never cross a segment boundary (a gap longer than the store's `max_gap_s`,
  docs/schema.md § Segments).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from nowcast_infill import schema
from nowcast_infill.data.normalization import Normalizer
from nowcast_infill.errors import BadValueError
from nowcast_infill.io import frame_stats
from nowcast_infill.io.store import open_store
from nowcast_infill.utils.instantiate import to_plain

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
TASKS = ("infill", "nowcast")
DEFAULT_SPLIT = {"fractions": [0.7, 0.15, 0.15], "gap": 12}
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}
# Aux fields are fitted on at most this many train frames (a seeded sample): bounded start-up.
_AUX_FIT_FRAMES = 256
SAMPLINGS = ("uniform", "wet")


def _wait_for(ready: Callable[[], bool], *, what: str, timeout_s: float, poll_s: float = 0.5) -> None:
    """Poll `ready()` until True; TimeoutError naming `what` after `timeout_s` seconds."""
    import time

    deadline = time.monotonic() + float(timeout_s)
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout_s:g} s for the {what}; check rank 0's log, or raise data.stats_wait_s.")
        time.sleep(poll_s)


def window_sample_weights(wet_fraction: np.ndarray, starts: np.ndarray, target_offsets: np.ndarray,
                          floor: float) -> np.ndarray:
    """Importance weights `(n_windows,)` of training windows, mean 1: the mean wet fraction of the
    target frames (`wet_fraction` `(T,)` per frame), at least `floor` so dry windows are still drawn."""
    wet = wet_fraction[np.asarray(starts)[:, None] + np.asarray(target_offsets)[None, :]].mean(axis=1)
    weights = np.maximum(wet, float(floor))
    return weights / weights.mean()

MaskGenerator = Callable[[np.random.Generator, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------------------
# Splits and windows
# ----------------------------------------------------------------------------------------
def plan_splits(times: np.ndarray, split: Mapping | None, store: str = "<store>") -> dict[str, tuple[int, int]]:
    """Contiguous frame blocks ``{split: (start, stop)}`` (stop exclusive), in time order.

    ``split`` is ``{"fractions": [train, val, test], "gap": frames}`` (blocks by fraction of
    the frames left after removing the two gaps) or ``{"dates": {"train": [first, last],
    ...}}`` (inclusive ISO times, UTC). Blocks never overlap; windows never leave a block,
    so nothing straddles a gap.
    """
    split = dict(to_plain(split) or DEFAULT_SPLIT)
    n = len(times)
    unknown = set(split) - {"fractions", "gap", "dates"}
    if unknown:
        raise ValueError(f"split: unknown key(s) {sorted(unknown)}; use 'fractions' + 'gap', or 'dates'.")
    if "dates" in split:
        blocks = {}
        for name in SPLITS:
            rng = split["dates"].get(name)
            if rng is None:
                raise ValueError(f"split.dates.{name} is missing; give [first, last] ISO times for train, val and test.")
            first, last = (np.datetime64(str(v).replace("Z", ""), "ns") for v in rng)
            start = int(np.searchsorted(times, first, side="left"))
            stop = int(np.searchsorted(times, last, side="right"))
            blocks[name] = (start, stop)
        ordered = sorted(blocks.items(), key=lambda kv: kv[1][0])
        for (a, (_, a_stop)), (b, (b_start, _)) in zip(ordered, ordered[1:]):
            if b_start < a_stop:
                raise ValueError(f"split.dates: '{a}' and '{b}' overlap in {store}; make the date ranges disjoint.")
        return blocks
    fractions = [float(f) for f in split.get("fractions", DEFAULT_SPLIT["fractions"])]
    gap = int(split.get("gap", DEFAULT_SPLIT["gap"]))
    if len(fractions) != 3 or min(fractions) < 0 or not 0 < sum(fractions) <= 1 + 1e-9:
        raise ValueError(f"split.fractions={fractions}: need three non-negative fractions (train, val, test) summing to <= 1.")
    if gap < 0:
        raise ValueError(f"split.gap={gap}: must be >= 0 frames.")
    usable = n - 2 * gap
    if usable <= 0:
        raise ValueError(f"{store}: {n} frames cannot hold two gaps of {gap} frames; lower split.gap.")
    sizes = [int(math.floor(f * usable)) for f in fractions]
    blocks, start = {}, 0
    for name, size in zip(SPLITS, sizes):
        blocks[name] = (start, start + size)
        start += size + gap
    return blocks


def frames_needed(task: str, past: int, future: int, context: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Window length, input offsets and target offsets (frames from the window start)."""
    if task == "infill":
        length = 2 * context + 1
        return length, np.arange(length), np.array([context])
    return past + future, np.arange(past), np.arange(past, past + future)


# ----------------------------------------------------------------------------------------
# Store access
# ----------------------------------------------------------------------------------------
class _StoreHandle:
    """The Zarr arrays of a store, opened lazily once per process (re-opened after fork).

    Arrays are cached: looking one up in the group re-reads its metadata from disk.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._pid: int | None = None
        self._group = None
        self._arrays: dict = {}

    def group(self):
        if self._group is None or self._pid != os.getpid():
            import zarr

            self._group = zarr.open_group(self.path, mode="r")
            self._pid = os.getpid()
            self._arrays = {}
        return self._group

    def __getitem__(self, name: str):
        group = self.group()
        if name not in self._arrays:
            self._arrays[name] = group[name]
        return self._arrays[name]

    def __getstate__(self):
        return {"path": self.path, "_pid": None, "_group": None, "_arrays": {}}


def _axis_interp(target: np.ndarray, source: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation weights of ``target`` coordinates on ``source`` coordinates.

    Either coordinate may be increasing or decreasing. Targets within half a source cell
    beyond the outermost source centres are clamped to the edge (the aux grid spans the
    same area, its outer centres sit half a coarse cell inside); farther ones are marked
    outside. Returns (i0, i1, w1, outside): value = (1 - w1) * s[i0] + w1 * s[i1].
    """
    order = np.argsort(source)
    src = source[order].astype(np.float64)
    if src.size == 1:
        zeros = np.zeros(target.size, np.int64)
        return order[zeros], order[zeros], np.zeros(target.size), np.zeros(target.size, bool)
    step = float(np.median(np.diff(src)))
    pos = np.interp(target, src, np.arange(src.size, dtype=np.float64))
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, src.size - 1)
    w1 = pos - i0
    i1 = np.where(w1 > 0, np.minimum(i0 + 1, src.size - 1), i0)  # no neighbour when weight is 0 (NaN-safe)
    tol = 0.5 * step * (1 + 1e-6)
    outside = (target < src[0] - tol) | (target > src[-1] + tol)
    return order[i0], order[i1], w1, outside


class AuxRegridder:
    """Bilinear regridding of ``(T, y_aux, x_aux)`` fields onto radar pixel centres (km)."""

    def __init__(self, y: np.ndarray, x: np.ndarray, y_aux: np.ndarray, x_aux: np.ndarray):
        self.iy0, self.iy1, self.wy, self.out_y = _axis_interp(np.asarray(y, np.float64), np.asarray(y_aux))
        self.ix0, self.ix1, self.wx, self.out_x = _axis_interp(np.asarray(x, np.float64), np.asarray(x_aux))

    def regrid(self, read: Callable[[slice, slice], np.ndarray], rows: slice, cols: slice) -> np.ndarray:
        """Aux values on radar rows/cols ``rows``, ``cols``: ``(T, H, W)`` float32, NaN outside/no data.

        ``read(aux_rows, aux_cols)`` returns the aux block ``(T, h_aux, w_aux)``; only the
        aux cells the crop touches are read.
        """
        iy0, iy1, wy = self.iy0[rows], self.iy1[rows], self.wy[rows][:, None].astype(np.float32)
        ix0, ix1, wx = self.ix0[cols], self.ix1[cols], self.wx[cols][None, :].astype(np.float32)
        ylo, yhi = int(min(iy0.min(), iy1.min())), int(max(iy0.max(), iy1.max())) + 1
        xlo, xhi = int(min(ix0.min(), ix1.min())), int(max(ix0.max(), ix1.max())) + 1
        block = np.asarray(read(slice(ylo, yhi), slice(xlo, xhi)), np.float32)
        iy0, iy1, ix0, ix1 = iy0 - ylo, iy1 - ylo, ix0 - xlo, ix1 - xlo
        top = block[:, iy0][:, :, ix0] * (1 - wx) + block[:, iy0][:, :, ix1] * wx
        bottom = block[:, iy1][:, :, ix0] * (1 - wx) + block[:, iy1][:, :, ix1] * wx
        out = top * (1 - wy) + bottom * wy
        outside = self.out_y[rows][:, None] | self.out_x[cols][None, :]
        out[:, outside] = np.nan
        return out


def _writable(block: np.ndarray) -> np.ndarray:
    """`block` itself when it may be written to (a fresh read), else a copy."""
    return block if block.flags.writeable else block.copy()


def _tiles(height: int, width: int, tile: int | None) -> list[tuple[int, int, int, int]]:
    """(y0, x0, h, w) covering the frame; edge tiles are shifted inward so all are full size."""
    if tile is None:
        return [(0, 0, height, width)]
    if tile > height or tile > width:
        raise ValueError(f"eval_tile={tile} is larger than the frame ({height} x {width}); use eval_tile=null for full frames.")

    def starts(n: int) -> list[int]:
        s = list(range(0, n - tile + 1, tile))
        return s if s[-1] + tile == n else s + [n - tile]

    return [(y0, x0, tile, tile) for y0 in starts(height) for x0 in starts(width)]


def _tile_owners(height: int, width: int, tiles: Sequence[tuple[int, int, int, int]]) -> np.ndarray:
    """(H, W) int: the index of the first tile covering each pixel (its owner), -1 if none.

    The inward-shifted edge tiles of `_tiles` overlap their neighbours; a tile is scored
    only on the pixels it owns, so each pixel counts once and scores over tiles equal
    scores over the whole grid.
    """
    owners = np.full((height, width), -1, dtype=np.int32)
    for index, (y0, x0, h, w) in enumerate(tiles):
        block = owners[y0:y0 + h, x0:x0 + w]
        block[block < 0] = index
    return owners


# ----------------------------------------------------------------------------------------
# Dataset and sampler
# ----------------------------------------------------------------------------------------
class RadarWindowDataset(Dataset):
    """Samples of one split. Index ``i`` may carry the epoch: ``epoch * len(self) + index``."""

    def __init__(
        self,
        store: _StoreHandle,
        split: str,
        starts: np.ndarray,
        *,
        task: str,
        input_offsets: np.ndarray,
        target_offsets: np.ndarray,
        times_ns: np.ndarray,
        normalizer: Normalizer,
        lat: np.ndarray,
        lon: np.ndarray,
        seed: int,
        crop_size: int | None = None,
        tiles: Sequence[tuple[int, int, int, int]] | None = None,
        aux_names: Sequence[str] = (),
        regridder: AuxRegridder | None = None,
        mask_generator: MaskGenerator | None = None,
        eval_masks: np.ndarray | None = None,
        mask_context: bool = False,
        input_hole_prob: float = 0.0,
        min_valid_fraction: float = 0.0,
        crop_attempts: int = 5,
        max_rain_rate_mm_h: float = schema.MAX_RAIN_RATE_MM_H,
    ):
        self.store, self.split, self.starts = store, split, np.asarray(starts, np.int64)
        self.max_rain_rate_mm_h = float(max_rain_rate_mm_h)
        self.task = task
        self.input_offsets, self.target_offsets = input_offsets, target_offsets
        self.window_length = int(max(input_offsets.max(), target_offsets.max()) + 1)
        self.times_ns, self.normalizer = times_ns, normalizer
        self.lat, self.lon = lat, lon
        self.height, self.width = lat.shape
        self.seed = int(seed)
        self.crop_size = crop_size
        self.tiles = list(tiles) if tiles is not None else None
        self.tile_owners = None if self.tiles is None else _tile_owners(*lat.shape, self.tiles)
        if (crop_size is None) == (self.tiles is None):
            raise ValueError("RadarWindowDataset: give exactly one of crop_size (random crops) and tiles (fixed tiles).")
        self.aux_names, self.regridder = list(aux_names), regridder
        self.mask_generator, self.eval_masks = mask_generator, eval_masks
        self.mask_context, self.input_hole_prob = bool(mask_context), float(input_hole_prob)
        self.min_valid_fraction, self.crop_attempts = float(min_valid_fraction), int(crop_attempts)
        # model.prior (nowcast_infill/data/priors.py), attached by the LightningModule's setup
        self.prior = None

    def __len__(self) -> int:
        return len(self.starts) * (1 if self.tiles is None else len(self.tiles))

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_IDS[self.split], epoch, index])

    def _read_precip(self, start: int, y0: int, x0: int, h: int, w: int, frames: Sequence[int] | None = None) -> np.ndarray:
        """Window ``(L, h, w)`` float32 mm/h, NaN = no data (implausible values included);
        only the window's `frames` (offsets from `start`) when given."""
        arr = self.store[schema.PRECIP]
        times = slice(start, start + self.window_length) if frames is None else [start + int(f) for f in frames]
        block = _writable(np.asarray(arr[times, y0:y0 + h, x0:x0 + w], dtype=np.float32))
        block[schema.implausible_precip(block, self.max_rain_rate_mm_h)] = np.nan
        return block

    def _choose_crop(self, rng: np.random.Generator, start: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
        size = self.crop_size
        best = None
        for _ in range(max(1, self.crop_attempts)):
            y0 = int(rng.integers(0, self.height - size + 1))
            x0 = int(rng.integers(0, self.width - size + 1))
            block = self._read_precip(start, y0, x0, size, size)
            frac = float(np.isfinite(block[self.target_offsets]).mean())
            if best is None or frac > best[0]:
                best = (frac, (y0, x0, size, size), block)
            if frac >= self.min_valid_fraction:
                break
        return best[1], best[2]

    def _draw_hidden(self, rng: np.random.Generator, valid: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        if self.mask_generator is None:
            raise RuntimeError(f"split {self.split}: a hole mask is needed but no mask generator is configured (set `masks`).")
        from nowcast_infill.data.masks import hole_targets

        hidden = np.asarray(self.mask_generator(rng, valid, self.lat[rows, cols], self.lon[rows, cols]), bool)
        return hole_targets(hidden, valid)  # no-data is never a target

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(int(item), len(self))
        rng = self.rng(epoch, index)
        if self.tiles is None:
            start = int(self.starts[index])
            (y0, x0, h, w), block = self._choose_crop(rng, start)
            window_index = index
        else:
            window_index, tile_index = divmod(index, len(self.tiles))
            start = int(self.starts[window_index])
            y0, x0, h, w = self.tiles[tile_index]
            block = self._read_precip(start, y0, x0, h, w)
        rows, cols = slice(y0, y0 + h), slice(x0, x0 + w)
        valid = np.isfinite(block)

        inputs, targets = block[self.input_offsets], block[self.target_offsets]
        x_mask = valid[self.input_offsets].copy()
        y_valid = valid[self.target_offsets]
        sample: dict[str, torch.Tensor] = {}
        if self.task == "infill":
            c = int(self.target_offsets[0])
            if self.eval_masks is not None:
                from nowcast_infill.data.masks import hole_targets

                hidden = hole_targets(self.eval_masks[window_index % len(self.eval_masks)][rows, cols], valid[c])
            else:
                hidden = self._draw_hidden(rng, valid[c], rows, cols)
            x_mask[c] &= ~hidden
            if self.mask_context:
                for k in range(len(self.input_offsets)):
                    if k != c:
                        x_mask[k] &= ~self._draw_hidden(rng, valid[k], rows, cols)
            sample["hole"] = torch.from_numpy(hidden[None, None].astype(np.float32))
        elif self.input_hole_prob > 0:
            for k in range(len(self.input_offsets)):
                if rng.random() < self.input_hole_prob:
                    x_mask[k] &= ~self._draw_hidden(rng, valid[k], rows, cols)

        norm = self.normalizer
        x = np.where(x_mask, norm.encode(np.nan_to_num(inputs, nan=0.0)), 0.0).astype(np.float32)
        y = np.where(y_valid, norm.encode(np.nan_to_num(targets, nan=0.0)), 0.0).astype(np.float32)
        sample["x"] = torch.from_numpy(x[:, None])
        sample["x_mask"] = torch.from_numpy(x_mask[:, None].astype(np.float32))
        sample["y"] = torch.from_numpy(y[:, None])
        sample["y_valid"] = torch.from_numpy(y_valid[:, None].astype(np.float32))
        if self.aux_names:
            frames = slice(start + int(self.input_offsets[0]), start + int(self.input_offsets[-1]) + 1)
            fields = []
            for name in self.aux_names:
                arr = self.store[schema.AUX_PREFIX + name]
                regridded = self.regridder.regrid(lambda r, c_, a=arr: a[frames, r, c_], rows, cols)
                fields.append(norm.encode_aux(name, regridded))
            aux = np.stack(fields, axis=1)  # (T_in, A, H, W)
            aux_valid = np.isfinite(aux)
            sample["aux"] = torch.from_numpy(np.where(aux_valid, aux, 0.0).astype(np.float32))
            sample["aux_mask"] = torch.from_numpy(aux_valid.astype(np.float32))
        if self.tiles is not None:
            # (1, 1, h, w) 0/1: the pixels this tile scores (RadarModule.score_mask); see _tile_owners.
            owned = self.tile_owners[rows, cols] == tile_index
            sample["owned"] = torch.from_numpy(owned[None, None].astype(np.float32))
        sample["time"] = torch.from_numpy(self.times_ns[start + self.target_offsets].astype(np.int64))
        if self.prior is not None:
            self._add_prior(sample, start, (y0, x0, h, w), np.where(x_mask, inputs, np.nan))
        return sample

    def _add_prior(self, sample: dict, start: int, box: tuple[int, int, int, int], seen_mm_h: np.ndarray) -> None:
        """``prior`` (T_out, 1, h, w) normalised (0 where none) and ``prior_valid`` 0/1 from `self.prior`."""
        hole = sample["hole"][0, 0].numpy() > 0 if "hole" in sample else None
        prior_mm_h = np.asarray(self.prior(self, start, box, seen_mm_h, hole), np.float32)
        prior_valid = np.isfinite(prior_mm_h)
        encoded = np.where(prior_valid, self.normalizer.encode(np.nan_to_num(prior_mm_h, nan=0.0)), 0.0)
        sample["prior"] = torch.from_numpy(encoded[:, None].astype(np.float32))
        sample["prior_valid"] = torch.from_numpy(prior_valid[:, None].astype(np.float32))


class WindowSampler(DistributedSampler):
    """Shards a split over ``num_replicas`` ranks; yields ``epoch * len(dataset) + index``.

    shuffle=True (train): a permutation seeded by (seed, epoch), padded so every rank has
    the same number of samples; with `weights` (one per sample, data.sampling=wet), as many
    draws with replacement in proportion to them instead. shuffle=False (eval): ``index[rank::num_replicas]``, not
    padded, so each sample is scored exactly once over all ranks.
    """

    def __init__(self, dataset: Dataset, *, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0,
                 weights: np.ndarray | None = None):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        if weights is not None and (not shuffle or len(weights) != len(dataset)):
            raise ValueError(f"WindowSampler: weights need shuffle=True and one weight per sample "
                             f"({len(weights)} for {len(dataset)}).")
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights, np.float64))

    def _indices(self) -> list[int]:
        n = len(self.dataset)
        if not self.shuffle:
            return list(range(self.rank, n, self.num_replicas))
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        if self.weights is not None:
            # Importance sampling: n draws with replacement, the same on every rank (same seed), then sharded.
            order = torch.multinomial(self.weights, n, replacement=True, generator=generator).tolist()
        else:
            order = torch.randperm(n, generator=generator).tolist()
        total = math.ceil(n / self.num_replicas) * self.num_replicas
        order += (order * math.ceil(total / n))[: total - n]
        return order[self.rank:total:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * len(self.dataset) if self.shuffle else 0
        return iter([offset + i for i in self._indices()])

    def __len__(self) -> int:
        return len(self._indices())


# ----------------------------------------------------------------------------------------
# The DataModule
# ----------------------------------------------------------------------------------------
class RadarDataModule(L.LightningDataModule):
    """Windows of a radar Zarr store for infilling or nowcasting.

    Batches are dicts of docs/schema.md § Samples with a leading batch dim:
    ``x``/``x_mask`` ``(B, T_in, 1, H, W)`` (normalised / 0-1), ``y``/``y_valid`` (and
    ``hole`` for infill) ``(B, T_out, 1, H, W)``, ``aux``/``aux_mask`` ``(B, T_in, A, H, W)``
    (z-scored / 0-1, only when aux is configured), ``time`` ``(B, T_out)`` int64 ns UTC.
    """

    def __init__(
        self,
        store: str | Path,
        task: str = "infill",
        past: int = 4,
        future: int = 4,
        context: int = 1,
        crop_size: int | None = 256,
        eval_tile: int | None = None,
        split: Mapping | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        masks: Mapping | MaskGenerator | None = None,
        eval_masks: Mapping | None = None,
        mask_context: bool = False,
        input_hole_prob: float = 0.0,
        aux: Sequence[str] | str | None = None,
        normalization: str = "log1p_scaled",
        stats_path: str | Path | None = None,
        min_valid_fraction: float = 0.05,
        crop_attempts: int = 5,
        max_rain_rate_mm_h: float = schema.MAX_RAIN_RATE_MM_H,
        sampling: str = "uniform",
        sampling_threshold_mm_h: float = 0.1,
        sampling_floor: float = 0.05,
        stats_wait_s: float = 3600.0,
    ):
        super().__init__()
        # Checkpoints then carry crop size, aux names and split, so inference needs no run folder.
        # Plain containers only: torch's weights-only checkpoint loading refuses OmegaConf objects.
        init_args = dict(
            store=str(store), task=task, past=past, future=future, context=context, crop_size=crop_size,
            eval_tile=eval_tile, split=split, batch_size=batch_size, num_workers=num_workers,
            pin_memory=pin_memory, seed=seed, masks=masks if masks is None or isinstance(masks, Mapping) else None,
            eval_masks=eval_masks, mask_context=mask_context, input_hole_prob=input_hole_prob, aux=aux,
            normalization=normalization, stats_path=None if stats_path is None else str(stats_path),
            min_valid_fraction=min_valid_fraction, crop_attempts=crop_attempts, max_rain_rate_mm_h=max_rain_rate_mm_h,
            sampling=sampling, sampling_threshold_mm_h=sampling_threshold_mm_h, sampling_floor=sampling_floor,
            stats_wait_s=stats_wait_s,
        )
        self.save_hyperparameters(to_plain(init_args), logger=False)
        if task not in TASKS:
            raise ValueError(f"task={task!r} is unknown; use one of {TASKS}.")
        for name, value in (("past", past), ("future", future)) if task == "nowcast" else (("context", context),):
            if int(value) < (1 if name != "context" else 0):
                raise ValueError(f"{name}={value} is invalid for task={task}.")
        self.store = str(store)
        self.task = task
        self.past, self.future, self.context = int(past), int(future), int(context)
        self.crop_size = None if crop_size is None else int(crop_size)
        self.eval_tile = None if eval_tile is None else int(eval_tile)
        self.split = to_plain(split) or dict(DEFAULT_SPLIT)
        self.batch_size, self.num_workers, self.pin_memory = int(batch_size), int(num_workers), bool(pin_memory)
        self.seed = int(seed)
        masks = to_plain(masks)
        self.masks = masks
        self.eval_mask_spec = {"n": 32, "seed": self.seed + 1000, **(to_plain(eval_masks) or {})}
        self.mask_context, self.input_hole_prob = bool(mask_context), float(input_hole_prob)
        self.aux = to_plain(aux)
        self.normalization = normalization
        self.stats_path = None if stats_path in (None, "") else Path(stats_path)
        self.min_valid_fraction, self.crop_attempts = float(min_valid_fraction), int(crop_attempts)
        if not 0 <= self.min_valid_fraction <= 1:
            raise ValueError(f"min_valid_fraction={min_valid_fraction} must lie in [0, 1].")
        if not 0 <= self.input_hole_prob <= 1:
            raise ValueError(f"input_hole_prob={input_hole_prob} must lie in [0, 1].")
        self.max_rain_rate_mm_h = float(max_rain_rate_mm_h)
        if not self.max_rain_rate_mm_h > 0:
            raise ValueError(f"max_rain_rate_mm_h={max_rain_rate_mm_h} must be > 0 mm/h (default "
                             f"{schema.MAX_RAIN_RATE_MM_H:g}).")
        if sampling not in SAMPLINGS:
            raise BadValueError(f"data.sampling={sampling!r} is unknown; use one of {SAMPLINGS} (wet: windows drawn "
                                "in proportion to their wet fraction).")
        if not 0 < float(sampling_floor) <= 1:
            raise BadValueError(f"data.sampling_floor={sampling_floor} must lie in (0, 1]: the weight of a dry window.")
        self.sampling, self.sampling_floor = sampling, float(sampling_floor)
        self.sampling_threshold_mm_h = float(sampling_threshold_mm_h)
        self.stats_wait_s = float(stats_wait_s)
        # Set by setup(): importance weight of each train window (None: uniform) and their summary.
        self.train_weights: np.ndarray | None = None
        self.sampling_report: dict[str, float] = {}
        self._normalizer = Normalizer(normalization)
        self._aux_names: list[str] | None = None
        self.datasets: dict[str, RadarWindowDataset] = {}
        self.window_report: dict[str, dict[str, int]] = {}
        # Set by setup(): {"count", "first_time", "variable", "max_rain_rate_mm_h"} of the
        # implausible values found in the scanned frames (count 0 when there are none).
        self.implausible_report: dict[str, Any] = {}
        self.eval_masks: np.ndarray | None = None
        self._set_up = False

    # -- public properties -----------------------------------------------------------------
    @property
    def in_frames(self) -> int:
        return 2 * self.context + 1 if self.task == "infill" else self.past

    @property
    def out_frames(self) -> int:
        return 1 if self.task == "infill" else self.future

    @property
    def aux_names(self) -> list[str]:
        """Auxiliary fields in sample order (resolves 'all' against the store)."""
        if self._aux_names is None:
            self._aux_names = self._resolve_aux(self._open_dataset())
        return list(self._aux_names)

    def attach_prior(self, prior) -> None:
        """Give every split's samples ``prior``/``prior_valid`` from `prior` (a
        `nowcast_infill.data.priors.WindowPrior`, or None to stop); called by the module's setup."""
        self._prior = prior
        for dataset in self.datasets.values():
            dataset.prior = prior

    @property
    def normalizer(self) -> Normalizer:
        return self._normalizer

    def state_dict(self) -> dict[str, Any]:
        return {"normalizer": self._normalizer.state_dict()} if self._normalizer.fitted else {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        # In place: datasets built in setup() hold this same object.
        if "normalizer" in state_dict:
            self._normalizer.load_state_dict(state_dict["normalizer"])

    # -- opening ----------------------------------------------------------------------------
    def _open_dataset(self):
        return open_store(self.store)

    def _resolve_aux(self, ds) -> list[str]:
        available = schema.aux_names(ds)
        if self.aux in (None, "none", "None", False, []):
            return []
        if self.aux == "all":
            return available
        wanted = [self.aux] if isinstance(self.aux, str) else list(self.aux)
        missing = [a for a in wanted if a not in available]
        if missing:
            raise KeyError(
                f"{self.store}: auxiliary field(s) {', '.join(schema.AUX_PREFIX + m for m in missing)} not in the store "
                f"(available: {', '.join(available) or 'none'}); fix data.aux or add them to the store."
            )
        return wanted

    def _mask_generator(self) -> MaskGenerator | None:
        if self.masks is None:
            return None
        if callable(self.masks):
            return self.masks
        from nowcast_infill.data.masks import build_mask_generator

        return build_mask_generator(self.masks)

    def _world(self) -> tuple[int, int]:
        """(num_replicas, rank) from the attached trainer, else torch.distributed, else (1, 0)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.world_size), int(trainer.global_rank)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_world_size(), torch.distributed.get_rank()
        return 1, 0

    # -- setup ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self._set_up:
            return
        ds = self._open_dataset()
        self._aux_names = self._resolve_aux(ds)
        times = ds["time"].values.astype("datetime64[ns]")
        missing = np.asarray(ds[schema.MISSING_FRAME].values, bool)
        lat = np.asarray(ds["lat"].values, np.float32)
        lon = np.asarray(ds["lon"].values, np.float32)
        height, width = lat.shape
        if self.crop_size is not None and (self.crop_size > height or self.crop_size > width):
            raise ValueError(f"crop_size={self.crop_size} exceeds the frame {height} x {width} of {self.store}; lower data.crop_size.")
        tiles = _tiles(height, width, self.eval_tile)
        blocks = plan_splits(times, self.split, self.store)
        store = _StoreHandle(self.store)

        stats = self._frame_stats()
        self._fit_or_load_normalizer(stats, store, blocks)
        self._implausible_from_stats(stats, blocks, times)
        valid_fraction, coverage = stats.valid_fraction, stats.coverage
        segment = schema.segment_ids(times, ds.attrs.get("time_step_s"))
        length, in_off, tgt_off = frames_needed(self.task, self.past, self.future, self.context)
        starts = {name: self._windows(name, blocks[name], length, tgt_off, missing, valid_fraction, segment)
                  for name in SPLITS}
        self.train_weights = self._sample_weights(starts["train"], tgt_off, stats)

        regridder = None
        if self._aux_names:
            regridder = AuxRegridder(ds["y"].values, ds["x"].values, ds["y_aux"].values, ds["x_aux"].values)
        generator = self._mask_generator()
        if self.task == "infill" and generator is None:
            raise ValueError("task=infill needs hole masks: set data.masks (e.g. {name: mixture}) or pass a generator.")
        if self.task == "nowcast" and self.input_hole_prob > 0 and generator is None:
            raise ValueError(f"input_hole_prob={self.input_hole_prob} needs data.masks to draw the input holes.")
        if self.task == "infill":
            self.eval_masks = self._make_eval_masks(generator, coverage, lat, lon)

        common = dict(
            task=self.task, input_offsets=in_off, target_offsets=tgt_off, times_ns=times.astype(np.int64),
            normalizer=self._normalizer, lat=lat, lon=lon, seed=self.seed, aux_names=self._aux_names,
            regridder=regridder, mask_generator=generator, mask_context=self.mask_context,
            input_hole_prob=self.input_hole_prob, min_valid_fraction=self.min_valid_fraction,
            crop_attempts=self.crop_attempts, max_rain_rate_mm_h=self.max_rain_rate_mm_h,
        )
        self.datasets = {
            "train": RadarWindowDataset(
                store, "train", starts["train"],
                crop_size=self.crop_size if self.crop_size is not None else None,
                tiles=None if self.crop_size is not None else [(0, 0, height, width)], **common),
            **{name: RadarWindowDataset(store, name, starts[name], tiles=tiles, eval_masks=self.eval_masks, **common)
               for name in ("val", "test")},
        }
        self.attach_prior(getattr(self, "_prior", None))
        self._set_up = True

    def _frame_stats(self) -> frame_stats.StoredFrameStats:
        """The store's per-frame statistics (docs/schema.md § Per-frame statistics), reading no `precip` chunk
        when they are stored.

        Missing ones (a schema 1 store, or one written by another tool) are computed once and
        written into the store by rank 0 while the other ranks wait for them and then load
        them; a store that cannot be written, or a `max_rain_rate_mm_h` other than the one
        the statistics were computed with, gets them computed in memory on every rank.
        """
        stored = frame_stats.load_frame_stats(self.store)
        if stored is not None and stored.complete and stored.max_mm_h == self.max_rain_rate_mm_h:
            return stored
        if stored is not None and stored.max_mm_h != self.max_rain_rate_mm_h:
            log.info("%s: stored frame statistics use max_rain_rate_mm_h=%g, data.max_rain_rate_mm_h=%g: computing "
                     "them in memory (reads every frame)", self.store, stored.max_mm_h, self.max_rain_rate_mm_h)
            return frame_stats.stats_in_memory(self.store, max_mm_h=self.max_rain_rate_mm_h)
        if not frame_stats.store_is_writable(self.store):
            log.warning("%s: no frame statistics stored and the store is read-only: computing them in memory on "
                        "every start (reads every frame); run compute_frame_stats on a writable copy once.", self.store)
            return frame_stats.stats_in_memory(self.store, max_mm_h=self.max_rain_rate_mm_h)
        if self._world()[1] == 0:
            summary = frame_stats.compute_frame_stats(self.store, missing_only=True)
            log.info("frame statistics computed and stored once in %s (%d frames read)", self.store,
                     summary["frames_read"])
        else:
            _wait_for(lambda: (lambda got: got is not None and got.complete)(frame_stats.load_frame_stats(self.store)),
                      what=f"frame statistics of {self.store} (computed by rank 0)", timeout_s=self.stats_wait_s)
        return frame_stats.load_frame_stats(self.store)

    def _fit_or_load_normalizer(self, stats: frame_stats.StoredFrameStats, store: _StoreHandle, blocks) -> None:
        """Load the statistics file, or fit on the train split from the stored log1p moments (no precip read)."""
        need_fit = not self._normalizer.fitted
        if need_fit and self.stats_path is not None and self.stats_path.exists():
            loaded = Normalizer.load(self.stats_path)
            if loaded.kind != self.normalization:
                raise ValueError(
                    f"{self.stats_path}: statistics are for normalization={loaded.kind!r}, "
                    f"config asks {self.normalization!r}; delete the file to refit or fix data.normalization."
                )
            self._normalizer.load_state_dict(loaded.state_dict())
            need_fit = False
            log.info("normalisation statistics loaded from %s", self.stats_path)
        missing_aux = [a for a in self._aux_names if a not in self._normalizer.aux]
        if self._normalizer.fitted and missing_aux:
            raise ValueError(
                f"normalisation statistics ({self.stats_path or 'checkpoint'}) lack aux field(s) {missing_aux}; "
                "delete the statistics file to refit on the train split."
            )
        if not need_fit:
            return
        train_start, train_stop = blocks["train"]
        if train_stop <= train_start:
            raise ValueError(f"{self.store}: the train split is empty ({blocks}); widen split.fractions/dates.")
        # Aux fields: all train frames up to _AUX_FIT_FRAMES, else a seeded sample of that many (bounded cost).
        aux_frames = np.arange(train_start, train_stop)
        if aux_frames.size > _AUX_FIT_FRAMES:
            aux_frames = np.sort(np.random.default_rng(self.seed).choice(aux_frames, _AUX_FIT_FRAMES, replace=False))
        aux = {a: (np.asarray(store[schema.AUX_PREFIX + a][int(t)], np.float32) for t in aux_frames)
               for a in self._aux_names}
        self._normalizer.fit_moments(*stats.log1p_moments(np.arange(train_start, train_stop)), aux=aux)
        log.info("normalisation fitted on train frames %d..%d (stored per-frame moments): %s", train_start,
                 train_stop - 1, self._normalizer)
        if self.stats_path is not None and self._world()[1] == 0:
            self._normalizer.save(self.stats_path)

    def _sample_weights(self, starts: np.ndarray, target_offsets: np.ndarray,
                        stats: frame_stats.StoredFrameStats) -> np.ndarray | None:
        """Importance weights of the train windows for data.sampling=wet (None for uniform); logs their spread."""
        if self.sampling == "uniform":
            return None
        try:
            wet = stats.wet_fraction(self.sampling_threshold_mm_h)
        except ValueError as err:
            raise BadValueError(f"data.sampling_threshold_mm_h: {err}") from None
        weights = window_sample_weights(wet, starts, target_offsets, self.sampling_floor)
        ess = float(weights.sum() ** 2 / (weights ** 2).sum())
        self.sampling_report = {"windows": int(weights.size), "effective_sample_size": ess,
                                "effective_fraction": ess / weights.size, "min_weight": float(weights.min()),
                                "max_weight": float(weights.max())}
        log.info("train windows sampled by wet fraction >= %g mm/h (floor %g): effective sample size %.1f of %d "
                 "(%.0f%%), weights %.3g..%.3g (mean 1)", self.sampling_threshold_mm_h, self.sampling_floor, ess,
                 weights.size, 100 * ess / weights.size, weights.min(), weights.max())
        return weights

    def _implausible_from_stats(self, stats: frame_stats.StoredFrameStats, blocks, times: np.ndarray) -> None:
        in_splits = np.zeros(stats.done.size, bool)
        for start, stop in blocks.values():
            in_splits[start:stop] = True
        counts = np.where(in_splits, stats.implausible_count, 0)
        first = int(np.argmax(counts > 0)) if counts.any() else None
        self._report_implausible(int(counts.sum()), first, times)

    def _report_implausible(self, count: int, first_index: int | None, times: np.ndarray) -> None:
        first_time = None if first_index is None else str(np.datetime_as_string(times[first_index], unit="s"))
        self.implausible_report = {"count": count, "first_time": first_time, "variable": schema.PRECIP,
                                   "max_rain_rate_mm_h": self.max_rain_rate_mm_h}
        if count and self._world()[1] == 0:
            log.warning(
                "%s: %d value(s) of %s are negative, infinite or above %g mm/h (first at %sZ); they are treated as "
                "no data (masked), never trained or scored on. Re-convert the store with ni-convert, or raise "
                "data.max_rain_rate_mm_h if such rates are real.",
                self.store, count, schema.PRECIP, self.max_rain_rate_mm_h, first_time,
            )

    def _windows(self, name, block, length, target_offsets, missing, valid_fraction, segment) -> np.ndarray:
        start, stop = block
        candidates = np.arange(start, stop - length + 1)
        # A window never straddles a segment boundary (time that the store does not hold).
        inside = schema.same_segment_windows(segment, candidates, length)
        straddling = int((~inside).sum())
        candidates = candidates[inside]
        if candidates.size == 0:
            across = f", and its {straddling} window(s) cross a segment boundary" if straddling else ""
            raise ValueError(
                f"{self.store}: the {name} split (frames {start}..{stop - 1}, {stop - start} frames) is shorter than one "
                f"window of {length} frames (task={self.task}){across}; use a longer store, larger split.fractions "
                f"for {name}, a smaller split.gap, or fewer past/future/context frames."
            )
        targets = candidates[:, None] + target_offsets[None, :]
        missing_target = missing[targets].any(axis=1)
        low_valid = ~missing_target & (valid_fraction[targets].mean(axis=1) < self.min_valid_fraction)
        keep = ~missing_target & ~low_valid
        report = {"candidates": int(candidates.size), "kept": int(keep.sum()),
                  "skipped_missing_target": int(missing_target.sum()), "skipped_low_valid": int(low_valid.sum()),
                  "across_segments": straddling}
        self.window_report[name] = report
        level = logging.WARNING if report["kept"] < report["candidates"] else logging.INFO
        log.log(level, "%s split: %d of %d windows kept (%d with a missing target frame, %d with target valid "
                "fraction < %.3g)", name, report["kept"], report["candidates"], report["skipped_missing_target"],
                report["skipped_low_valid"], self.min_valid_fraction)
        if report["kept"] == 0:
            raise ValueError(f"{self.store}: every window of the {name} split was skipped ({report}); "
                             "lower data.min_valid_fraction or choose other dates.")
        return candidates[keep]

    def _make_eval_masks(self, generator, coverage, lat, lon) -> np.ndarray:
        """Fixed hole masks ``(n, H, W)`` bool (as drawn) for val/test, seeded by eval_masks.seed.

        Drawn on ``coverage`` (pixels valid in any scanned frame); each sample then keeps
        only the hidden pixels valid in its own target frame.
        """
        from nowcast_infill.data.masks import make_eval_mask_set

        n, seed = int(self.eval_mask_spec["n"]), int(self.eval_mask_spec["seed"])
        return np.asarray(make_eval_mask_set(generator, n, seed, coverage, lat, lon), bool)

    def save_eval_masks(self, directory: str | Path) -> Path:
        """Save the fixed evaluation masks beside the results; returns the file written."""
        if self.eval_masks is None:
            raise RuntimeError("no evaluation masks: call setup() first (task=infill only).")
        from nowcast_infill.data.masks import save_mask_set

        spec = self.masks if isinstance(self.masks, Mapping) else self._mask_generator()
        return save_mask_set(Path(directory) / "eval_masks.npz", self.eval_masks, spec, int(self.eval_mask_spec["seed"]))

    # -- loaders ----------------------------------------------------------------------------
    def _loader(self, name: str, *, num_replicas: int | None = None, rank: int | None = None) -> DataLoader:
        if not self._set_up:
            self.setup()
        dataset = self.datasets[name]
        world, this_rank = self._world()
        sampler = WindowSampler(
            dataset, shuffle=name == "train", seed=self.seed, weights=self.train_weights if name == "train" else None,
            num_replicas=world if num_replicas is None else num_replicas, rank=this_rank if rank is None else rank,
        )
        return DataLoader(
            dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
            pin_memory=self.pin_memory, drop_last=name == "train" and len(sampler) > self.batch_size,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
