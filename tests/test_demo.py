"""`ni-demo` end to end (store generation, train + eval of variants, baselines, tables) at a tiny size."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from nowcast_infill.utils.config import CONFIG_DIR
from nowcast_infill.pipeline.end_to_end import demo

SMALL = ["data.split.gap=2", "data.eval_masks.n=4", "data.crop_size=32", "data.batch_size=2", "data.num_workers=0"]


@pytest.mark.slow
def test_demo_writes_the_store_trains_evaluates_and_tabulates(tmp_path: Path):
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("demo", overrides=[
            f"paths.output_dir={tmp_path / 'out'}", f"paths.log_dir={tmp_path / 'logs'}", f"store={tmp_path / 'data' / 'synthetic.zarr'}",
            "synthetic.n_times=48", "synthetic.ny=48", "synthetic.nx=48",
            "variants=[pconv,lstm]", "baselines=[nearest]",
        ])
        cfg.train_overrides = ["model.net.encoder_channels=[8,16,16]", "trainer.max_epochs=1", "+trainer.limit_train_batches=2",
                               "+trainer.limit_val_batches=1", "test=false", "logger=csv", *SMALL]
        cfg.eval_overrides = ["+trainer.limit_test_batches=1", "n_figures=1", "logger=csv", *SMALL]
        result = demo(cfg)
    assert (tmp_path / "data" / "synthetic.zarr").is_dir()
    assert [row["model"] for row in result["rows"]] == ["pconv", "lstm", "nearest"]
    assert all(math.isfinite(float(row["rmse"])) for row in result["rows"])
    table = Path(result["results_md"]).read_text()
    assert all(name in table for name in ("pconv", "lstm", "nearest"))
