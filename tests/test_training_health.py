"""Regression for the collapse of the stacked-input variants in `make demo` (2026-11-30).

Every auxiliary field was z-scored with the statistics of the last one (a generator in a dict
comprehension read the loop variable only when consumed), so aux_t (about 288 K) reached the
network as z ~ 115. The pconv and lstm variants feed the aux channels straight to the output
head, whose raw output started near -55, where softplus has no gradient (1e-24): the output was
0 mm/h everywhere, the same val loss to 10 digits every epoch. (The attention variants pass aux
through their own encoder only, and trained.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from nowcast_infill import schema
from nowcast_infill.data.datamodule import RadarDataModule
from nowcast_infill.data.synthetic import write_synthetic_store
from nowcast_infill.models.components.unet import PConvUNet
from nowcast_infill.models.losses import InfillLoss

N_STEPS = 20


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    # aux_t in K (~288), aux_u/aux_v in m/s: fields of very different scale, as on real data
    return write_synthetic_store(tmp_path_factory.mktemp("stores") / "s.zarr", n_times=48, ny=32, nx=32, seed=1)


def make_dm(store: Path, stats_path: Path | None = None) -> RadarDataModule:
    dm = RadarDataModule(store, task="infill", context=1, crop_size=32, batch_size=4, seed=0, aux="all",
                         split={"fractions": [0.7, 0.15, 0.15], "gap": 2}, masks={"name": "freeform", "fraction": [0.1, 0.5]},
                         eval_masks={"n": 4, "seed": 1},
                         stats_path=stats_path)
    dm.setup("fit")
    return dm


def test_each_aux_field_zscored_with_its_own_statistics(store):
    dm = make_dm(store)
    assert sorted(dm.aux_names) == ["t", "u", "v"]
    fit_frames = dm.plans[0].fit_frames()
    group = zarr.open_group(str(store), mode="r")
    for name in dm.aux_names:
        values = np.asarray(group[schema.AUX_PREFIX + name][fit_frames[0]:fit_frames[-1] + 1], np.float64)
        stats = dm.normalizer.aux[name]
        assert stats["mean"] == pytest.approx(values.mean(), rel=1e-6), name
        assert stats["std"] == pytest.approx(values.std(), rel=1e-5), name
    batch = next(iter(dm.train_dataloader()))
    assert batch["aux"].abs().max() < 10, "z-scored aux fields stay within a few units"


def test_statistics_file_with_one_fields_stats_for_all_is_refitted(store, tmp_path):
    stats_path = tmp_path / "stats.json"
    good = make_dm(store, stats_path).normalizer.state_dict()
    broken = json.loads(stats_path.read_text())
    broken["aux"] = {name: dict(broken["aux"]["v"]) for name in broken["aux"]}  # what the old fit wrote
    stats_path.write_text(json.dumps(broken))
    assert make_dm(store, stats_path).normalizer.aux == good["aux"]
    assert json.loads(stats_path.read_text())["aux"] == good["aux"], "the file is rewritten with the refit"


@pytest.mark.parametrize("lstm", [False, True], ids=["pconv", "lstm"])
def test_short_training_learns_a_spatial_field(store, lstm):
    torch.manual_seed(0)
    dm = make_dm(store)
    net = PConvUNet(in_frames=3, out_frames=1, aux_channels=len(dm.aux_names), lstm=lstm, task="infill",
                    encoder_channels=(8, 16, 16), output_floor=dm.normalizer.floor)
    criterion = InfillLoss(preset="valid_hole", distance="l2")  # the infill task's default loss
    val_batch = next(iter(dm.val_dataloader()))
    hole = val_batch["hole"] > 0

    def predict(batch: dict) -> torch.Tensor:
        return net(batch["x"], batch["x_mask"], batch["aux"], batch["aux_mask"])

    def val_loss_and_hole_spread() -> tuple[float, float]:
        net.eval()
        with torch.no_grad():
            pred = predict(val_batch)  # (B, 1, 1, H, W) normalised
            loss, _ = criterion(pred, val_batch)
        net.train()
        return float(loss), float(pred[hole].std())

    no_rain_loss, _ = criterion(torch.full_like(val_batch["y"], dm.normalizer.floor), val_batch)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loader = dm.train_dataloader()
    batches = (batch for _ in range(N_STEPS) for batch in loader)  # as many epochs as needed
    for step in range(N_STEPS):
        batch = next(batches)
        loss, _ = criterion(predict(batch), batch)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            grad = torch.sqrt(sum(p.grad.square().sum() for p in net.parameters() if p.grad is not None))
            # Fixed: 9-17 (seeds 0-3). Mis-scaled aux: 5e-9 (saturated softplus, the demo) or
            # 8e3-3e5 (an output of z ~ +50 on this store), depending on the sign of the init.
            assert 1e-3 < grad < 1e3, f"gradient norm {grad:.3g} at the first step: the output is saturated or huge"
        optimizer.step()
    loss_after, spread_after = val_loss_and_hole_spread()
    # Fixed: 0.38-0.62 x the loss of predicting no rain (seeds 0-3, both variants). Collapsed:
    # exactly that loss (output 0 mm/h, std 1e-10) or far above it.
    assert loss_after < 0.8 * float(no_rain_loss), f"val loss {loss_after:.4f}, predicting no rain {no_rain_loss:.4f}"
    assert spread_after > 1e-2, f"the output in the holes is spatially constant (std {spread_after:.3g})"
