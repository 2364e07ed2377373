"""RadarModule / ClassicalModule behaviour that the end-to-end tests do not pin down."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from nowcast_infill.data.datamodule import RadarDataModule
from nowcast_infill.data.normalization import Normalizer
from nowcast_infill.data.synthetic import write_synthetic_store
from nowcast_infill.evaluation.classical import ClassicalModule
from nowcast_infill.training.module import RadarModule

NET = {"_target_": "nowcast_infill.models.components.unet.PConvUNet", "_partial_": True, "encoder_channels": [8, 16, 16]}
OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "lr_scaling": "linear", "reference_global_batch": 8}
MASKS = {"name": "freeform", "fraction": [0.2, 0.4]}


def make_module(task="infill", in_frames=3, out_frames=1, **kw) -> RadarModule:
    loss = {"name": "infill", "preset": "valid_hole"} if task == "infill" else {"name": "nowcast", "kind": "mse"}
    return RadarModule(net=NET, task=task, in_frames=in_frames, out_frames=out_frames, loss=loss, optimizer=OPTIMIZER, **kw)


def random_batch(task="infill", b=2, t_in=3, t_out=1, hw=16, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x_mask = (torch.rand(b, t_in, 1, hw, hw, generator=g) > 0.3).float()
    batch = {
        "x": torch.rand(b, t_in, 1, hw, hw, generator=g) * x_mask,
        "x_mask": x_mask,
        "y": torch.rand(b, t_out, 1, hw, hw, generator=g),
        "y_valid": torch.ones(b, t_out, 1, hw, hw),
    }
    if task == "infill":
        batch["hole"] = 1.0 - x_mask[:, t_in // 2 : t_in // 2 + 1]
    return batch


@pytest.fixture(scope="module")
def normalizer() -> Normalizer:
    return Normalizer().fit(np.random.default_rng(0).gamma(0.5, 2.0, size=10_000).astype(np.float32))


def test_infill_answer_keeps_observed_pixels_and_fills_holes(normalizer):
    module = make_module()
    module.attach_normalizer(normalizer)
    batch = random_batch()
    raw = module(batch)
    answer = module.compose(raw, batch)
    observed = batch["x_mask"][:, 1:2] > 0
    assert torch.equal(answer[observed], batch["x"][:, 1:2][observed])
    assert torch.equal(answer[~observed], raw[~observed])
    mm_h = module.predict_mm_h(batch)
    assert mm_h.shape == (2, 1, 1, 16, 16) and bool((mm_h >= 0).all())


def test_nowcast_answer_is_the_network_output(normalizer):
    module = make_module("nowcast", in_frames=2, out_frames=3)
    module.attach_normalizer(normalizer)
    batch = random_batch("nowcast", t_in=2, t_out=3)
    assert torch.equal(module.compose(module(batch), batch), module(batch))
    # scored: valid targets observed in the latest input frame with data (where every method answers)
    assert torch.equal(module.score_mask(batch), batch["y_valid"] * batch["x_mask"][:, -1:])
    batch["x_mask"][0, -1] = 0.0  # sample 0's last frame is missing: persistence starts from the one before
    assert torch.equal(module.score_mask(batch)[0], batch["y_valid"][0] * batch["x_mask"][0, -2:-1])
    batch["owned"] = torch.zeros(1, 1, 1, 16, 16)
    batch["owned"][..., :5, :] = 1.0  # an overlapping eval tile scores only the pixels it owns
    assert not module.score_mask(batch)[..., 5:, :].any() and module.score_mask(batch)[..., :5, :].any()


def test_networks_satisfy_the_contract():
    from nowcast_infill.models.network import RadarNetwork

    net = make_module().net
    assert isinstance(net, RadarNetwork) and net.size_multiple == 2**3  # three encoder layers
    with pytest.raises(TypeError, match="network contract.*missing: .*size_multiple"):
        RadarModule(net={"_target_": "torch.nn.Identity", "_partial_": True}, task="infill", in_frames=3, out_frames=1,
                    loss={"name": "infill"}, optimizer=OPTIMIZER)


def test_hparams_rebuild_the_same_network():
    module = make_module()
    rebuilt = RadarModule(**module.hparams)
    rebuilt.load_state_dict(module.state_dict())
    batch = random_batch()
    module.eval(), rebuilt.eval()
    torch.testing.assert_close(module(batch), rebuilt(batch), rtol=0, atol=0)


def test_bad_task_and_frames_are_refused():
    with pytest.raises(ValueError, match="model.task='forecast'"):
        make_module(task="forecast")
    with pytest.raises(ValueError, match="odd in_frames"):
        make_module(in_frames=4)


def test_classical_module_fills_only_holes_and_checks_task(normalizer):
    module = ClassicalModule("nearest", task="infill", in_frames=3, out_frames=1)
    assert not isinstance(module, RadarModule)  # beside the trainable module, not under it
    module.attach_normalizer(normalizer)
    batch = random_batch()
    pred = module.predict_mm_h(batch)
    observed = batch["x_mask"][:, 1:2] > 0
    torch.testing.assert_close(pred[observed], normalizer.decode(batch["x"][:, 1:2])[observed])
    assert bool(torch.isfinite(pred[batch["hole"] > 0]).all())
    assert list(module.parameters()) == []
    with pytest.raises(ValueError, match="set task=nowcast"):
        ClassicalModule("persistence", task="infill", in_frames=3, out_frames=1)
    nowcast = ClassicalModule("persistence", task="nowcast", in_frames=2, out_frames=3)  # n_leads from out_frames
    nowcast.attach_normalizer(normalizer)
    assert nowcast.predict_mm_h(random_batch("nowcast", t_in=2, t_out=3)).shape == (2, 3, 1, 16, 16)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "synthetic.zarr"
    write_synthetic_store(path, n_times=40, ny=32, nx=32, seed=1)
    return path


def test_linear_lr_scaling_with_accumulation_and_aux_check(store, tmp_path):
    dm = RadarDataModule(store, task="infill", context=1, crop_size=32, batch_size=2, masks=MASKS,
                         eval_masks={"n": 2}, split={"fractions": [0.7, 0.15, 0.15], "gap": 2}, aux=None)
    module = make_module()
    trainer = L.Trainer(max_steps=1, accumulate_grad_batches=2, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    # global batch 2 x 1 device x 1 node x 2 accumulation = 4, tuned at 8: half the lr
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5e-3)

    # the checkpoint carries its task, normaliser and aux names in plain types ...
    path = tmp_path / "one_step.ckpt"
    trainer.save_checkpoint(path)
    payload = torch.load(path, weights_only=True)["nowcast_infill"]
    assert payload == {"format": 2, "task": {"name": "infill", "in_frames": 3, "out_frames": 1},
                       "normalizer": dm.normalizer.state_dict(), "aux_names": [], "model_name": "radar"}
    # ... and a module loaded from it decodes with that normaliser, no DataModule needed
    loaded = RadarModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    assert loaded.normalizer.state_dict() == dm.normalizer.state_dict() and loaded.aux_names == []

    dm_aux = RadarDataModule(store, task="infill", context=1, crop_size=32, batch_size=2, masks=MASKS,
                             eval_masks={"n": 2}, split={"fractions": [0.7, 0.15, 0.15], "gap": 2}, aux="all")
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"model.aux_channels=0 but the DataModule yields 3"):
        trainer.fit(make_module(), datamodule=dm_aux)


def test_warmup_in_samples_and_training_clock(store, tmp_path):
    """scheduler.warmup_samples is a number of samples whatever the global batch (here 2 x 2
    accumulation = 4: 8 samples = 2 steps); TrainingClock logs samples seen = steps x 4."""
    from lightning.pytorch.loggers import CSVLogger

    from nowcast_infill.training.clock import TrainingClock

    dm = RadarDataModule(store, task="infill", context=1, crop_size=32, batch_size=2, masks=MASKS,
                         eval_masks={"n": 2}, split={"fractions": [0.7, 0.15, 0.15], "gap": 2}, aux=None)
    scheduler = {"_target_": "nowcast_infill.training.lr.warmup_cosine_schedule", "_partial_": True,
                 "warmup_samples": 8, "warmup_fraction": 0.75, "min_lr_ratio": 1.0, "interval": "step"}
    module = make_module(scheduler=scheduler)
    seen_lrs = []

    class RecordLr(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx % 2 == 0:  # the first micro-batch of each optimizer step
                seen_lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = L.Trainer(max_steps=4, accumulate_grad_batches=2, val_check_interval=4, check_val_every_n_epoch=None,
                        limit_val_batches=1, num_sanity_val_steps=0, logger=CSVLogger(tmp_path, name="csv", version=""),
                        callbacks=[TrainingClock(), RecordLr()], enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    # lr linear-scaled to 1e-3 x 4/8 = 0.5e-3; warm-up of 8 samples / 4 = 2 steps (warmup_samples
    # wins over warmup_fraction, which would give 3 steps: 1/3, 2/3, 1 of the lr)
    assert seen_lrs[:3] == pytest.approx([0.25e-3, 0.5e-3, 0.5e-3])

    import csv

    rows = [r for r in csv.DictReader((tmp_path / "csv" / "metrics.csv").open()) if r.get("clock/samples_seen")]
    assert [float(r["clock/samples_seen"]) for r in rows] == [8.0, 16.0]
    assert [float(r["clock/optimizer_steps"]) for r in rows] == [2.0, 4.0]
    assert all(float(r["clock/global_batch"]) == 4.0 for r in rows)
    times = [float(r["clock/train_s"]) for r in rows]
    assert 0 < times[0] < times[1]


def test_checkpoint_payload_of_old_and_foreign_formats():
    from nowcast_infill.checkpoint_io import CheckpointError
    from nowcast_infill.training.module import checkpoint_payload

    assert checkpoint_payload({"state_dict": {}}) is None  # the old layout: readers fall back to it
    with pytest.raises(CheckpointError, match=r"^models/x.ckpt: 'nowcast_infill' is of format 3, this version reads format 2; .*retrain"):
        checkpoint_payload({"nowcast_infill": {"format": 3}}, "models/x.ckpt")
