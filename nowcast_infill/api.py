"""The Python API, for notebooks and scripts (the `ni-*` commands run the same `nowcast_infill.pipeline`).

    from nowcast_infill import compose, train, evaluate, load_predictor

    cfg = compose("train", ["model=lstm", "trainer.max_epochs=2", "logger=csv"])
    results = train(cfg)                      # {"test/rmse": ..., "best_model_path": ..., ...}
    scores = evaluate(compose("eval", [f"ckpt_path={results['best_model_path']}"]))
    predictor = load_predictor(results["best_model_path"])
    filled = predictor.infill(frames)         # numpy (T_in, H, W) mm/h with NaN holes -> (H, W)
    filled_ds = predictor.infill(dataset)     # xarray Dataset with precip(time, y, x) -> same, infilled

`compose` gives the same config as the command line (conf/<name>.yaml with overrides); a
run outside Hydra writes to `paths.log_dir/<task>/runs/<run_name>_<time>` as `ni-train`
does, unless `paths.output_dir=` is given. examples/api_tour.py runs every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, open_dict

from nowcast_infill.pipeline import evaluate, train
from nowcast_infill.pipeline.inputs import config_dict
from nowcast_infill.schema import PRECIP
from nowcast_infill.utils.config import CONFIG_DIR, compose_config, output_dir_outside_hydra

__all__ = ["compose", "train", "evaluate", "load_predictor", "Predictor", "CONFIG_DIR"]


def compose(name: str = "train", overrides: Sequence[str] = ()) -> DictConfig:
    """The config `ni-<name>` would run with `overrides` (e.g. ["model=lstm", "seed=1"]).

    `name`: train, eval, convert, synth, infill, nowcast or demo (a conf/<name>.yaml). The
    Hydra-only keys (`hydra.*`) are left out; `paths.output_dir`, which the command takes
    from Hydra's run directory, gets the same folder here.
    """
    cfg = compose_config(name, overrides, return_hydra_config=True)
    run_dir = config_dict(cfg.hydra.run, resolve=False).get("dir")
    with open_dict(cfg):
        del cfg["hydra"]
        output_dir_outside_hydra(cfg, run_dir)
    return cfg


class Predictor:
    """A trained checkpoint applied to whole grids, from numpy arrays or xarray Datasets.

    Arrays are rain rates in mm/h with NaN where there is no data; a Dataset holds
    `precip(time, y, x)` (a store written by ni-convert / ni-synth, opened with xarray).
    """

    def __init__(self, checkpoint_predictor) -> None:
        self._predictor = checkpoint_predictor
        self.task = checkpoint_predictor.task
        self.in_frames = checkpoint_predictor.in_frames
        self.out_frames = checkpoint_predictor.out_frames

    def __repr__(self) -> str:
        return (
            f"Predictor({self._predictor.path.name}: task={self.task}, {self.in_frames} frames in, "
            f"{self.out_frames} out, tile {self._predictor.tile} px)"
        )

    # -- infilling ----------------------------------------------------------------------
    def infill(self, data, coverage: np.ndarray | None = None):
        """Fill the NaN pixels of a frame (observed pixels are kept).

        - numpy `(T_in, H, W)` mm/h, the target frame in the middle of `in_frames` frames
          (just `(H, W)` for a model without context) -> `(H, W)` mm/h;
        - xarray Dataset with `precip(time, y, x)` -> a copy with every frame infilled
          (frames beyond the ends of the record count as missing).
        `coverage (H, W)` bool limits filling to where radar data is expected (default: everywhere).
        """
        self._require("infill")
        if hasattr(data, "data_vars"):
            return self._infill_dataset(data, coverage)
        self._require_no_aux()
        frames = np.asarray(data, dtype=np.float32)
        if frames.ndim == 2:
            frames = frames[None]
        prediction = self._predictor(frames, coverage, frame_index=None)[0]
        target = frames[self.in_frames // 2]
        fill = ~np.isfinite(target) if coverage is None else (~np.isfinite(target) & np.asarray(coverage, bool))
        return np.where(fill, prediction, target).astype(np.float32)

    def _infill_dataset(self, ds, coverage):
        self._bind(ds)
        precip = ds[PRECIP].values.astype(np.float32)
        context = self.in_frames // 2
        padded = np.concatenate(
            [
                np.full((context,) + precip.shape[1:], np.nan, np.float32),
                precip,
                np.full((context,) + precip.shape[1:], np.nan, np.float32),
            ]
        )
        out = precip.copy()
        for t in range(precip.shape[0]):
            target = precip[t]
            fill = ~np.isfinite(target) if coverage is None else (~np.isfinite(target) & np.asarray(coverage, bool))
            window = padded[t : t + self.in_frames]
            if not fill.any() or not np.isfinite(window).any():
                continue  # complete frame, or nothing to infill from (stays NaN)
            prediction = self._predictor(window, coverage, frame_index=np.arange(t - context, t + context + 1))[0]
            out[t] = np.where(fill, prediction, target)
        result = ds.copy()
        result[PRECIP] = (ds[PRECIP].dims, out, ds[PRECIP].attrs)
        return result

    # -- nowcasting ---------------------------------------------------------------------
    def nowcast(self, data, issue_time=None):
        """Forecast `out_frames` frames.

        - numpy `(in_frames, H, W)` mm/h (the latest frame last) -> `(out_frames, H, W)` mm/h;
        - xarray Dataset with `precip(time, y, x)` -> Dataset `precip(lead_time, y, x)` issued
          at `issue_time` (default the last time), with valid `time(lead_time)`.
        NaN where no past frame has data (no forecast there).
        """
        self._require("nowcast")
        if not hasattr(data, "data_vars"):
            self._require_no_aux()
            return self._predictor(np.asarray(data, dtype=np.float32), frame_index=None)
        import xarray as xr

        from nowcast_infill.inference.nowcast_product import issue_indices

        self._bind(data)
        times = data["time"].values
        end = issue_indices(times, self.in_frames, "dataset", issue_time)[0]
        frames = data[PRECIP].values[end + 1 - self.in_frames : end + 1].astype(np.float32)
        forecast = self._predictor(frames, frame_index=np.arange(end + 1 - self.in_frames, end + 1))
        step = (
            np.timedelta64(int(data.attrs["time_step_s"]), "s")
            if "time_step_s" in data.attrs
            else times[end] - times[end - 1]
        )
        lead = (np.arange(1, self.out_frames + 1) * step).astype("timedelta64[ns]")
        return xr.Dataset(
            {PRECIP: (("lead_time", "y", "x"), forecast, dict(data[PRECIP].attrs))},
            coords={
                "lead_time": lead,
                "time": ("lead_time", times[end] + lead),
                "forecast_reference_time": times[end],
                "y": data["y"],
                "x": data["x"],
            },
        )

    def _require(self, task: str) -> None:
        if self.task != task:
            raise ValueError(f"{self._predictor.path.name} is a {self.task} model; call predictor.{self.task}(...).")

    def _require_no_aux(self) -> None:
        if self._predictor.aux_names:
            raise ValueError(
                f"{self._predictor.path.name} also reads auxiliary fields {self._predictor.aux_names}: "
                "pass an xarray Dataset holding them (aux_<name>) instead of a numpy array."
            )

    def _bind(self, ds) -> None:
        if self._predictor.aux_names:
            self._predictor.bind(ds, getattr(ds, "encoding", {}).get("source", "dataset"))


def load_predictor(ckpt_path: str | Path, device: str = "auto", tile: int | None = None, **options) -> Predictor:
    """A `Predictor` for a checkpoint written by ni-train (e.g. `<run>/checkpoints/best.ckpt`).

    `tile` defaults to the training crop size; `options` go to
    `nowcast_infill.inference.checkpoint.load_checkpoint_predictor` (overlap, batch_size, stats_path, aux).
    """
    from nowcast_infill.checkpoint_io import read_trained_model
    from nowcast_infill.inference.checkpoint import load_checkpoint_predictor

    task = read_trained_model(str(ckpt_path)).task.name
    predictor, _ = load_checkpoint_predictor(ckpt_path, task, device=device, tile=tile, **options)
    return Predictor(predictor)
