"""The Python API in one tour (also runs as a notebook, cell by cell): make a small synthetic
store, train an infilling network briefly, evaluate it, then infill a numpy array and an
xarray Dataset with the checkpoint, and nowcast with a nowcasting network.

    python examples/api_tour.py [WORK_FOLDER]        # ~1 min on 2 CPU cores

Everything is written below WORK_FOLDER (default: ./api_tour).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import xarray as xr

from nowcast_infill import compose, evaluate, load_predictor, train
from nowcast_infill.data.synthetic import write_synthetic_store

work = Path(sys.argv[1] if len(sys.argv) > 1 else "api_tour").absolute()
store = work / "synthetic.zarr"
if not store.exists():
    write_synthetic_store(store, n_times=48, ny=48, nx=48, seed=3)

# Any command-line override works here; these keep the tour to seconds. data.aux=null: the
# networks read radar frames only, so plain numpy arrays suffice (a model trained with
# auxiliary fields takes a Dataset holding them).
SMALL = [f"data.store={store}", f"data.stats_path={work / 'stats.json'}", f"paths.log_dir={work / 'outputs'}",
         "data.crop_size=32", "data.batch_size=2", "data.num_workers=0", "data.eval_masks.n=4",
         "model.net.encoder_channels=[8,16,16]", "logger=csv", "task.past=2", "task.future=2", "data.split.gap=2",
         "trainer.max_epochs=1", "data.aux=null", "+trainer.limit_train_batches=4", "+trainer.limit_val_batches=2",
         "+trainer.limit_test_batches=2"]

# 1. Train: the same config as `ni-train model=pconv ...`; no Hydra run needed.
results = train(compose("train", ["model=pconv", *SMALL]))
best = Path(results["output_dir"]) / "checkpoints" / "best.ckpt"
print(f"trained: test/rmse = {results['test/rmse']:.3f} mm/h, checkpoint {best}")

# 2. Evaluate the checkpoint on the fixed test masks (what `ni-eval ckpt_path=...` does).
scores = evaluate(compose("eval", [f"ckpt_path={best}", *[o for o in SMALL if not o.startswith("+trainer.limit_t")]]))
print(f"evaluated: test/rmse = {scores['test/rmse']:.3f} mm/h")

# 3. Infill with the checkpoint: a numpy frame with a hole, then a whole Dataset.
predictor = load_predictor(best, device="cpu")
print(predictor)
ds = xr.open_zarr(store)
frames = ds["precip"].values[10:10 + predictor.in_frames].copy()   # (T_in, H, W) mm/h, NaN = no data
target = predictor.in_frames // 2
frames[target, 10:30, 10:30] = np.nan                               # a radar outage
filled = predictor.infill(frames)                                   # (H, W) mm/h
assert np.isfinite(filled[10:30, 10:30]).all()
print(f"infilled a 20x20 hole: mean {np.nanmean(filled[10:30, 10:30]):.3f} mm/h "
      f"(truth {np.nanmean(ds['precip'].values[10 + target, 10:30, 10:30]):.3f})")
holed = ds.isel(time=slice(0, 12)).load()
holed["precip"][5, 10:30, 10:30] = np.nan
filled_ds = predictor.infill(holed)
print(f"infilled Dataset: NaN pixels {int(np.isnan(holed['precip']).sum())} -> {int(np.isnan(filled_ds['precip']).sum())}")

# 4. Nowcast: train a nowcasting network the same way, then forecast from the latest frames.
nowcast_results = train(compose("train", ["task=nowcast", *SMALL]))
forecaster = load_predictor(Path(nowcast_results["output_dir"]) / "checkpoints" / "best.ckpt", device="cpu")
forecast = forecaster.nowcast(ds.isel(time=slice(0, 20)))           # Dataset precip(lead_time, y, x)
print(f"nowcast issued {forecast['forecast_reference_time'].values}: leads "
      f"{[str(t.astype('timedelta64[m]')) for t in forecast['lead_time'].values]}, "
      f"mean {float(forecast['precip'].mean()):.3f} mm/h")
