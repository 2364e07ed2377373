"""model.prior: classical priors as input channels + residual output, the window cache, and the
detection limit against drizzle in dry holes."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch

from nowcast_infill import registry
from nowcast_infill.errors import ConfigSchemaError
from nowcast_infill.data.datamodule import RadarDataModule
from nowcast_infill.data.normalization import Normalizer
from nowcast_infill.data.priors import WindowPrior, temporal_linear_fill
from nowcast_infill.data.synthetic import write_synthetic_store
from nowcast_infill.training.module import RadarModule

NET = {"_target_": "nowcast_infill.models.components.unet.PConvUNet", "_partial_": True, "encoder_channels": [8, 16]}
OPTIMIZER = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}
SPLIT = {"fractions": [0.7, 0.15, 0.15], "gap": 2}
VARIANTS = {"pconv": {}, "lstm": {"lstm": True}, "attention": {"attention": True},
            "lstm_attention": {"lstm": True, "attention": True}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("priors") / "synthetic.zarr"
    write_synthetic_store(path, n_times=40, ny=32, nx=32, seed=3)
    return path


def nowcast_datamodule(store, crop_size=None, aux=None):
    return RadarDataModule(store, task="nowcast", past=3, future=2, crop_size=crop_size, batch_size=2,
                           split=SPLIT, aux=aux, min_valid_fraction=0.0)


def make_module(task="nowcast", in_frames=3, out_frames=2, variant="pconv", aux_channels=0, **kw):
    loss = {"name": "infill", "preset": "valid_hole"} if task == "infill" else {"name": "nowcast", "kind": "mse"}
    return RadarModule(net={**NET, **VARIANTS[variant]}, task=task, in_frames=in_frames, out_frames=out_frames,
                       aux_channels=aux_channels, loss=loss, optimizer=OPTIMIZER, scheduler=None, **kw)


def test_extrapolation_prior_equals_the_extrapolation_baseline(store, tmp_path):
    dm = nowcast_datamodule(store, crop_size=16)
    dm.setup("fit")
    prior = WindowPrior("extrapolation", "nowcast", n_leads=2, cache_root=tmp_path)
    dm.attach_prior(prior)
    for split in ("test", "train"):  # test: whole-grid tiles; train: random 16 px crops
        dataset = dm.datasets[split]
        for index in range(min(2, len(dataset.starts))):
            sample = dataset[index]
            start = int(dataset.starts[index])
            full = dataset.read_precip(start, 0, 0, dataset.height, dataset.width)[dataset.input_offsets]
            expected = registry.get_method("classical", "extrapolation", n_leads=2)(full)  # (2, H, W) mm/h
            # locate the crop: the prior's box is the sample's box, found from its input frame
            h, w = sample["x"].shape[-2:]
            boxes = [(y, x) for y in range(dataset.height - h + 1) for x in range(dataset.width - w + 1)
                     if np.array_equal(np.isfinite(full[-1, y:y + h, x:x + w]), sample["x_mask"][-1, 0].numpy() > 0)
                     and np.allclose(dm.normalizer.encode(np.nan_to_num(full[-1, y:y + h, x:x + w])) * sample["x_mask"][-1, 0].numpy(),
                                     sample["x"][-1, 0].numpy(), atol=1e-5)]
            assert boxes, "crop not found"
            y0, x0 = boxes[0]
            want = expected[:, y0:y0 + h, x0:x0 + w]
            valid = sample["prior_valid"][:, 0].numpy() > 0
            np.testing.assert_array_equal(valid, np.isfinite(want))
            got = dm.normalizer.decode(sample["prior"][:, 0].numpy())
            np.testing.assert_allclose(got[valid], want[valid], rtol=1e-4, atol=1e-4)


def test_extrapolation_forecasts_are_computed_once_per_window_and_reused(store, tmp_path):
    dm = nowcast_datamodule(store, crop_size=16)
    module = make_module(prior="extrapolation", prior_cache_dir=str(tmp_path / "motion"))
    trainer = L.Trainer(max_epochs=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    n_windows = len(dm.datasets["train"].starts)
    cache = module.window_prior().window_cache(dm.datasets["train"])
    assert cache.computed == n_windows  # two epochs, each window once
    assert len(list(cache.folder.glob("w*.npz"))) == n_windows
    # another run (a new process's cache object) reads the files and computes nothing
    again = WindowPrior("extrapolation", "nowcast", 2, cache_root=tmp_path / "motion")
    for index in range(len(dm.datasets["train"])):
        again(dm.datasets["train"], int(dm.datasets["train"].starts[index]), (0, 0, 16, 16), None)
    assert again.window_cache(dm.datasets["train"]).computed == 0
    assert not list(cache.folder.glob("*.tmp*"))


def test_sprog_prior_is_the_whole_grid_sprog_forecast_cut_to_the_crop(store, tmp_path):
    dm = nowcast_datamodule(store, crop_size=16)
    dm.setup("fit")
    prior = WindowPrior("sprog", "nowcast", n_leads=2, cache_root=tmp_path)
    dataset = dm.datasets["train"]
    start = int(dataset.starts[0])
    full = dataset.read_precip(start, 0, 0, dataset.height, dataset.width)[dataset.input_offsets]
    expected = registry.get_method("classical", "sprog", n_leads=2)(full)  # (2, H, W) mm/h
    got = prior(dataset, start, (3, 5, 16, 16), None)
    np.testing.assert_array_equal(got, expected[:, 3:19, 5:21])
    cache = prior.window_cache(dataset)
    assert cache.computed == 1 and cache.folder.name.startswith("sprog-")
    # another crop of the same window reads the cached forecast: no second S-PROG run
    np.testing.assert_array_equal(prior(dataset, start, (0, 0, 8, 8), None), expected[:, :8, :8])
    again = WindowPrior("sprog", "nowcast", n_leads=2, cache_root=tmp_path)
    again(dataset, start, (0, 0, 8, 8), None)
    assert cache.computed == 1 and again.window_cache(dataset).computed == 0


def test_window_cache_keeps_a_bounded_memory_and_rereads_from_disk(tmp_path):
    from nowcast_infill.data.window_cache import WindowCache

    entry_mb = 4 * 64 * 64 * 4 / 2**20  # one (4, 64, 64) float32 forecast
    cache = WindowCache(tmp_path, "store", "sprog-x", memory_mb=2.5 * entry_mb)
    computed = {start: {"forecast": np.full((4, 64, 64), start, np.float32)} for start in range(4)}
    for start in range(4):
        cache.get(start, lambda start=start: computed[start])
    assert cache.computed == 4 and cache.in_memory == 2  # the two used last
    # an evicted window comes back from its (compressed) file, not from compute()
    again = cache.get(0, lambda: pytest.fail("window 0 is on disk"))
    np.testing.assert_array_equal(again["forecast"], computed[0]["forecast"])
    assert cache.computed == 4 and cache.in_memory == 2
    assert cache.path(0).stat().st_size < computed[0]["forecast"].nbytes / 10


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_untrained_residual_network_outputs_the_prior(variant):
    """The head starts at zero, so before any training the network is the classical prior."""
    aux = 2 if "attention" in variant else 0
    module = make_module(variant=variant, aux_channels=aux, prior="extrapolation")
    g = torch.Generator().manual_seed(0)
    b, h = 2, 16
    batch = {"x": torch.rand(b, 3, 1, h, h, generator=g), "x_mask": torch.ones(b, 3, 1, h, h),
             "prior": torch.rand(b, 2, 1, h, h, generator=g), "prior_valid": (torch.rand(b, 2, 1, h, h, generator=g) > 0.2).float()}
    if aux:
        batch["aux"], batch["aux_mask"] = torch.rand(b, 3, aux, h, h, generator=g), torch.ones(b, 3, aux, h, h)
    assert not module.net.head.weight.any() and not module.net.head.bias.any()
    assert make_module(variant=variant, aux_channels=aux).net.head.weight.any()  # the plain network is random
    out = module(batch)
    valid = batch["prior_valid"] > 0
    assert torch.equal(out[valid], batch["prior"][valid])
    assert torch.equal(out[~valid], torch.zeros_like(out[~valid]))  # 0 mm/h where there is no prior
    # and the network does see the prior: another prior gives another output with a trained head
    module.net.head.weight.data.normal_(0, 0.1)
    other = {**batch, "prior": batch["prior"].flip(-1)}
    assert not torch.allclose(module(batch) - batch["prior"] * valid, module(other) - other["prior"] * valid)


def test_plain_network_is_unchanged_without_prior():
    module = make_module()
    assert module.net.prior_frames == 0 and module.net.input_channels == 3


@pytest.mark.parametrize("task,prior,variant", [("nowcast", "persistence", "pconv"), ("infill", "temporal", "lstm")])
def test_prior_training_and_test_through_the_trainer(store, tmp_path, task, prior, variant):
    if task == "nowcast":
        dm, module = nowcast_datamodule(store, crop_size=16), make_module(prior=prior, variant=variant)
    else:
        dm = RadarDataModule(store, task="infill", context=1, crop_size=16, batch_size=2, split=SPLIT,
                             masks={"name": "freeform", "fraction": [0.2, 0.4]}, eval_masks={"n": 2}, aux=None)
        module = make_module("infill", in_frames=3, out_frames=1, prior=prior, variant=variant)
    trainer = L.Trainer(max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    scores = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert np.isfinite(scores["test/rmse"])


def test_bad_prior_is_a_config_error():
    with pytest.raises(ConfigSchemaError, match="model.prior: 'laplace' is not a nowcast prior"):
        make_module(prior="laplace")


def test_temporal_linear_fill_is_the_mean_of_the_neighbours():
    x = np.stack([np.full((4, 4), 1.0), np.full((4, 4), np.nan), np.full((4, 4), 3.0)]).astype(np.float32)
    x[0, 0, 0] = np.nan  # only the later neighbour there
    x[0, 1, 1] = x[2, 1, 1] = np.nan  # no neighbour
    fill = np.ones((4, 4), bool)
    out = temporal_linear_fill(x, fill)[0]
    assert out[2, 2] == 2.0 and out[0, 0] == 3.0 and np.isnan(out[1, 1])


def test_infill_priors_feed_the_network(tmp_path, store):
    dm = RadarDataModule(store, task="infill", context=1, crop_size=16, batch_size=2, split=SPLIT,
                         masks={"name": "freeform", "fraction": [0.2, 0.4]}, eval_masks={"n": 2}, aux=None)
    dm.setup("fit")
    reference = {
        "laplace": lambda seen, hole: registry.get_method("classical", "laplace")(seen, fill_mask=hole),
        "temporal": temporal_linear_fill,
        # the classical method itself, on exactly what the network sees
        "temporal_flow": lambda seen, hole: registry.get_method("classical", "temporal_flow")(seen, fill_mask=hole),
    }
    for method, fill in reference.items():
        dm.attach_prior(WindowPrior(method, "infill", 1))
        sample = dm.datasets["train"][0]
        hole = sample["hole"][0, 0] > 0
        seen = dm.normalizer.decode(sample["x"][:, 0].numpy())
        seen[sample["x_mask"][:, 0].numpy() == 0] = np.nan
        expected = fill(seen, hole.numpy())[0]
        valid = sample["prior_valid"][0, 0].numpy() > 0
        np.testing.assert_allclose(dm.normalizer.decode(sample["prior"][0, 0].numpy())[valid], expected[valid], atol=1e-4)


def test_detection_limit_removes_drizzle_in_dry_holes():
    """Trained on dry windows, the plain softplus output still drizzles into the holes (it can
    only approach the floor); the detection limit answers exactly 0 mm/h there."""
    normalizer = Normalizer().fit(np.random.default_rng(0).gamma(0.5, 2.0, size=10_000).astype(np.float32))
    g = torch.Generator().manual_seed(1)
    b, h = 2, 16
    x_mask = torch.ones(b, 3, 1, h, h)
    hole = (torch.rand(b, 1, 1, h, h, generator=g) > 0.5).float()
    x_mask[:, 1:2] = 1 - hole
    dry = torch.full((b, 3, 1, h, h), float(normalizer.floor))
    batch = {"x": dry, "x_mask": x_mask, "y": dry[:, 1:2].clone(), "y_valid": torch.ones(b, 1, 1, h, h), "hole": hole}
    torch.manual_seed(0)
    module = make_module("infill", in_frames=3, out_frames=1)
    module.attach_normalizer(normalizer)
    module.net.set_output_floor(float(normalizer.floor))
    module.criterion.set_decoder(normalizer.decode) if hasattr(module.criterion, "set_decoder") else None
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    # Half of the training windows have a few rain pixels in the holes that the visible pixels do
    # not show (as on real radar), so the best smooth answer for a dry-looking hole is drizzle.
    showers = np.where(np.random.default_rng(2).random((b, 1, 1, h, h)) < 0.03, 2.0, 0.0).astype(np.float32)
    wet = {**batch, "y": torch.as_tensor(normalizer.encode(showers))}
    for step in range(40):
        optimizer.zero_grad()
        module.criterion(module(wet if step % 2 else batch), wet if step % 2 else batch)[0].backward()
        optimizer.step()
    module.eval()
    biases = {}
    with torch.no_grad():
        for limit in (None, 0.1):
            module.hparams.detection_limit_mm_h = limit
            biases[limit] = float(module.predict_mm_h(batch)[hole > 0].mean())
    assert biases[None] > 0.005, biases  # the target for dry holes is <= 0.005 mm/h
    assert biases[0.1] == 0.0, biases
