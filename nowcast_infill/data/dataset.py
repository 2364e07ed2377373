"""The samples of one split of one store (`RadarWindowDataset`), and of several stores mixed
(`MultiStoreDataset`). Sample dicts are those of docs/schema.md § "Samples produced by the DataModule".

Design notes (the why):

- The store is opened lazily, once per process (`StoreHandle` keys the open Zarr group
  by pid): a handle inherited through fork from the parent is never shared by workers.
- Every random choice of a sample (crop, hole mask, input holes) comes from a
  `numpy.random.Generator` seeded by (seed, split, epoch, index); nothing uses global
  random state, so batches are identical for any num_workers and differ per rank
  (each rank draws different indices). Index ``i`` may carry the epoch:
  ``epoch * len(dataset) + index`` (see data/sampler.py).
- Missing data is NaN in the store and 0 in the masks here; inputs are 0 where their
  mask is 0 (the value is irrelevant: every consumer reads the mask). Implausible store
  values (negative, +-inf, absurdly large) are read as no data.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nowcast_infill import schema
from nowcast_infill.data.masks import MaskGenerator, hole_targets
from nowcast_infill.data.normalization import Normalizer
from nowcast_infill.data.regrid import AuxRegridder
from nowcast_infill.data.splits import SPLITS
from nowcast_infill.data.tiling import Tile, tile_owners

if TYPE_CHECKING:
    import zarr


class StoreHandle:
    """The Zarr arrays of a store, opened lazily once per process (re-opened after fork).

    Arrays are cached: looking one up in the group re-reads its metadata from disk.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._pid: int | None = None
        self._group: zarr.Group | None = None
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


def _writable(block: np.ndarray) -> np.ndarray:
    """`block` itself when it may be written to (a fresh read), else a copy."""
    return block if block.flags.writeable else block.copy()


class RadarWindowDataset(Dataset):
    """Samples of one split. Index ``i`` may carry the epoch: ``epoch * len(self) + index``."""

    def __init__(
        self,
        store: StoreHandle,
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
        tiles: Sequence[Tile] | None = None,
        aux_names: Sequence[str] = (),
        regridder: AuxRegridder | None = None,
        mask_generator: MaskGenerator | None = None,
        eval_masks: np.ndarray | None = None,
        mask_context: bool = False,
        input_hole_prob: float = 0.0,
        min_valid_fraction: float = 0.0,
        crop_attempts: int = 5,
        max_rain_rate_mm_h: float = schema.MAX_RAIN_RATE_MM_H,
        stream: int | None = None,
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
        # Extra entropy of this dataset's draws (the store's index when several stores are
        # mixed; None for the first, so a single store draws exactly as it always did).
        self.stream = None if stream is None else int(stream)
        self.crop_size = crop_size
        self.tiles = list(tiles) if tiles is not None else None
        self.tile_owners = None if self.tiles is None else tile_owners(self.height, self.width, self.tiles)
        if (crop_size is None) == (self.tiles is None):
            raise ValueError(
                "RadarWindowDataset: give exactly one of crop_size (random crops) and tiles (fixed tiles)."
            )
        self.aux_names, self.regridder = list(aux_names), regridder
        self.mask_generator, self.eval_masks = mask_generator, eval_masks
        self.mask_context, self.input_hole_prob = bool(mask_context), float(input_hole_prob)
        self.min_valid_fraction, self.crop_attempts = float(min_valid_fraction), int(crop_attempts)
        # model.prior (nowcast_infill/data/priors.py), attached by the LightningModule's setup
        self.prior: Callable[..., np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.starts) * (1 if self.tiles is None else len(self.tiles))

    def rng(self, epoch: int, index: int) -> np.random.Generator:
        key = [self.seed, SPLITS.index(self.split), epoch, index]
        return np.random.default_rng(key if self.stream is None else key + [self.stream])

    def read_precip(
        self, start: int, y0: int, x0: int, h: int, w: int, frames: Sequence[int] | None = None
    ) -> np.ndarray:
        """Window ``(L, h, w)`` float32 mm/h, NaN = no data (implausible values included);
        only the window's `frames` (offsets from `start`) when given."""
        arr = self.store[schema.PRECIP]
        times = slice(start, start + self.window_length) if frames is None else [start + int(f) for f in frames]
        block = _writable(np.asarray(arr[times, y0 : y0 + h, x0 : x0 + w], dtype=np.float32))
        block[schema.implausible_precip(block, self.max_rain_rate_mm_h)] = np.nan
        return block

    def _choose_crop(self, rng: np.random.Generator, start: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
        size = self.crop_size
        assert size is not None  # random crops: tiles is None, so __init__ required crop_size
        best: tuple[float, tuple[int, int, int, int], np.ndarray] | None = None
        for _ in range(max(1, self.crop_attempts)):
            y0 = int(rng.integers(0, self.height - size + 1))
            x0 = int(rng.integers(0, self.width - size + 1))
            block = self.read_precip(start, y0, x0, size, size)
            frac = float(np.isfinite(block[self.target_offsets]).mean())
            if best is None or frac > best[0]:
                best = (frac, (y0, x0, size, size), block)
            if frac >= self.min_valid_fraction:
                break
        assert best is not None  # the first attempt is always kept (max(1, crop_attempts) >= 1)
        return best[1], best[2]

    def _draw_hidden(self, rng: np.random.Generator, valid: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        if self.mask_generator is None:
            raise RuntimeError(
                f"split {self.split}: a hole mask is needed but no mask generator is configured (set `masks`)."
            )
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
            block = self.read_precip(start, y0, x0, h, w)
        rows, cols = slice(y0, y0 + h), slice(x0, x0 + w)
        valid = np.isfinite(block)

        inputs, targets = block[self.input_offsets], block[self.target_offsets]
        x_mask = valid[self.input_offsets].copy()
        y_valid = valid[self.target_offsets]
        sample: dict[str, torch.Tensor] = {}
        if self.task == "infill":
            c = int(self.target_offsets[0])
            if self.eval_masks is not None:
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
            assert self.regridder is not None  # StorePlan builds one whenever the store has aux fields
            for name in self.aux_names:
                arr = self.store[schema.AUX_PREFIX + name]

                def read_aux(r: slice, c_: slice, a: Any = arr) -> np.ndarray:
                    return a[frames, r, c_]

                regridded = self.regridder.regrid(read_aux, rows, cols)
                fields.append(norm.encode_aux(name, regridded))
            aux = np.stack(fields, axis=1)  # (T_in, A, H, W)
            aux_valid = np.isfinite(aux)
            sample["aux"] = torch.from_numpy(np.where(aux_valid, aux, 0.0).astype(np.float32))
            sample["aux_mask"] = torch.from_numpy(aux_valid.astype(np.float32))
        if self.tiles is not None:
            # (1, 1, h, w) 0/1: the pixels this tile scores (RadarModule.score_mask); see data/tiling.py tile_owners.
            assert self.tile_owners is not None  # set in __init__ whenever tiles is given
            owned = self.tile_owners[rows, cols] == tile_index
            sample["owned"] = torch.from_numpy(owned[None, None].astype(np.float32))
        sample["time"] = torch.from_numpy(self.times_ns[start + self.target_offsets].astype(np.int64))
        if self.prior is not None:
            self._add_prior(sample, start, (y0, x0, h, w), np.where(x_mask, inputs, np.nan))
        return sample

    def _add_prior(self, sample: dict, start: int, box: tuple[int, int, int, int], seen_mm_h: np.ndarray) -> None:
        """``prior`` (T_out, 1, h, w) normalised (0 where none) and ``prior_valid`` 0/1 from `self.prior`."""
        hole = sample["hole"][0, 0].numpy() > 0 if "hole" in sample else None
        assert self.prior is not None  # called only when a prior is attached
        prior_mm_h = np.asarray(self.prior(self, start, box, seen_mm_h, hole), np.float32)
        prior_valid = np.isfinite(prior_mm_h)
        encoded = np.where(prior_valid, self.normalizer.encode(np.nan_to_num(prior_mm_h, nan=0.0)), 0.0)
        sample["prior"] = torch.from_numpy(encoded[:, None].astype(np.float32))
        sample["prior_valid"] = torch.from_numpy(prior_valid[:, None].astype(np.float32))


class MultiStoreDataset(Dataset):
    """The samples of one split over several stores: store 0's samples, then store 1's, ...

    Each part is the `RadarWindowDataset` of one store (its own grid, windows and masks); a
    sample also carries ``store`` (int64 scalar tensor, the store's index in `data.stores`).
    Index ``i`` carries the epoch as ``epoch * len(self) + index``; it reaches the part as
    ``epoch * len(part) + local index``, so each part draws per epoch as on its own.
    """

    def __init__(self, parts: Sequence[RadarWindowDataset]):
        if not parts:
            raise ValueError("MultiStoreDataset: no store given.")
        self.parts = list(parts)
        self.split = self.parts[0].split
        self.offsets = np.cumsum([0] + [len(part) for part in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """(store index, index within that store's dataset) of sample `index` (without epoch)."""
        store = int(np.searchsorted(self.offsets, index, side="right") - 1)
        return store, index - int(self.offsets[store])

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        epoch, index = divmod(int(item), len(self))
        store, local = self.locate(index)
        part = self.parts[store]
        sample = part[epoch * len(part) + local]
        sample["store"] = torch.tensor(store, dtype=torch.int64)
        return sample
