"""RadarDataModule on tiny schema stores written by tests/factories.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr
from torch.utils.data import DistributedSampler

from factories import LINEAR_AUX, linear_aux_truth, make_test_dataset, write_dataset, write_test_store
from nowcast_infill import schema
from nowcast_infill.data.datamodule import RadarDataModule
from nowcast_infill.data.masks import load_mask_set
from nowcast_infill.data.normalization import Normalizer
from nowcast_infill.data.sampler import WindowSampler
from nowcast_infill.data.splits import plan_splits
from nowcast_infill.errors import UserError

SPLIT = {"fractions": [0.6, 0.2, 0.2], "gap": 3}


def box_holes(rng: np.random.Generator, valid: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Test-local hole generator: one random 10x10 box, deliberately ignoring `valid`."""
    hidden = np.zeros(valid.shape, bool)
    y0, x0 = rng.integers(0, max(1, valid.shape[0] - 10)), rng.integers(0, max(1, valid.shape[1] - 10))
    hidden[y0:y0 + 10, x0:x0 + 10] = True
    return hidden


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # Frame 20 missing (in train), no-data block in the north-west corner, linear aux fields.
    path = tmp_path_factory.mktemp("stores") / "test.zarr"
    return write_test_store(path, n_time=48, missing=[20], aux=LINEAR_AUX, chunks=(1, 20, 24))


def make_dm(store, **kwargs) -> RadarDataModule:
    args = dict(store=store, task="infill", context=1, crop_size=16, eval_tile=None, split=SPLIT,
                batch_size=4, seed=7, masks=box_holes, eval_masks={"n": 3, "seed": 5}, min_valid_fraction=0.0)
    args.update(kwargs)
    dm = RadarDataModule(**args)
    dm.setup()
    return dm


def window_frames(dm, name) -> set[int]:
    ds = dm.datasets[name]
    return {int(s) + k for s in ds.starts for k in range(ds.window_length)}


@pytest.mark.parametrize("task", ["infill", "nowcast"])
def test_splits_disjoint_with_gap(store, task):
    dm = make_dm(store, task=task, past=3, future=2)
    frames = {name: window_frames(dm, name) for name in ("train", "val", "test")}
    times = {name: {int(t) for t in dm.datasets[name].times_ns[sorted(f)]} for name, f in frames.items()}
    assert not times["train"] & times["val"] and not times["val"] & times["test"] and not times["train"] & times["test"]
    # Every frame of a later split lies more than `gap` frames after every frame of an earlier one.
    assert min(frames["val"]) - max(frames["train"]) > SPLIT["gap"]
    assert min(frames["test"]) - max(frames["val"]) > SPLIT["gap"]


def test_split_by_dates(store):
    times = make_test_dataset(n_time=48)["time"].values
    iso = [str(t.astype("datetime64[s]")) for t in times]
    split = {"dates": {"train": [iso[0], iso[25]], "val": [iso[30], iso[37]], "test": [iso[40], iso[47]]}}
    assert plan_splits(times, split) == {"train": (0, 26), "val": (30, 38), "test": (40, 48)}
    dm = make_dm(store, split=split)
    assert max(window_frames(dm, "train")) <= 25 and min(window_frames(dm, "val")) >= 30
    overlapping = {"dates": {"train": [iso[0], iso[31]], "val": [iso[30], iso[37]], "test": [iso[40], iso[47]]}}
    with pytest.raises(ValueError, match="overlap"):
        plan_splits(times, overlapping)


def test_missing_frames_never_targets_and_counted(store):
    dm = make_dm(store)
    targets = dm.datasets["train"].starts + 1
    assert 20 not in targets
    assert dm.window_report["train"]["skipped_missing_target"] == 1
    # Windows whose *context* frame is the missing one are kept; that frame is fully masked.
    ds = dm.datasets["train"]
    index = int(np.flatnonzero(ds.starts == 20)[0])  # frames 20 (missing), 21 (target), 22
    sample = ds[index]
    assert sample["x_mask"][0].sum() == 0 and sample["x"][0].abs().sum() == 0
    assert sample["x_mask"][1].sum() > 0


def test_low_valid_windows_skipped_and_counted(tmp_path):
    # Half of every frame is no-data: a 0.6 threshold must skip every window, loudly.
    path = write_test_store(tmp_path / "half.zarr", n_time=30, nodata_block=(slice(0, 20), slice(None)))
    with pytest.raises(ValueError, match="every window of the train split was skipped"):
        make_dm(path, min_valid_fraction=0.6)
    dm = make_dm(path, min_valid_fraction=0.4)
    assert dm.window_report["train"]["skipped_low_valid"] == 0


@pytest.mark.parametrize("split_name", ["train", "val"])
def test_holes_only_on_valid_pixels_and_inputs_masked(store, split_name):
    dm = make_dm(store, eval_tile=20, aux="all")
    ds = dm.datasets[split_name]
    saw_hole_on_nodata_candidate = False
    for i in range(len(ds)):
        s = ds[i]
        hole, valid, x_mask = s["hole"][0, 0], s["y_valid"][0, 0], s["x_mask"][1, 0]
        assert torch.all(hole <= valid), "a no-data pixel became a hole target"
        assert torch.all(x_mask[hole > 0] == 0), "hidden pixels must be masked in the input"
        assert torch.all(s["x"][s["x_mask"] == 0] == 0) and torch.all(s["y"][s["y_valid"] == 0] == 0)
        assert torch.all(x_mask <= valid)
        saw_hole_on_nodata_candidate |= bool(((valid == 0) & (x_mask == 0)).any())
    assert saw_hole_on_nodata_candidate  # the no-data corner was in view, so the check above had teeth


def test_shapes_dtypes_units_against_store(store):
    dm = make_dm(store, eval_tile=20, aux=["u", "t"])
    assert (dm.in_frames, dm.out_frames, dm.aux_names) == (3, 1, ["u", "t"])
    batch = next(iter(dm.val_dataloader()))
    assert batch["x"].shape == (4, 3, 1, 20, 20) and batch["y"].shape == (4, 1, 1, 20, 20)
    assert batch["aux"].shape == (4, 3, 2, 20, 20) and batch["aux_mask"].shape == batch["aux"].shape
    assert batch["time"].shape == (4, 1) and batch["time"].dtype == torch.int64
    for key in ("x", "x_mask", "y", "y_valid", "hole", "aux", "aux_mask"):
        assert batch[key].dtype == torch.float32, key
    # Decoding y gives the store's mm/h at the same place and time.
    ds = dm.datasets["val"]
    precip = zarr.open_group(str(store), mode="r")[schema.PRECIP]
    y0, x0, h, w = ds.tiles[1]
    sample = ds[1]  # window 0, tile 1
    truth = precip[int(ds.starts[0]) + 1, y0:y0 + h, x0:x0 + w]
    np.testing.assert_array_equal(sample["y_valid"][0, 0].numpy() == 1, np.isfinite(truth))
    decoded = dm.normalizer.decode(sample["y"][0, 0]).numpy()
    np.testing.assert_allclose(decoded[np.isfinite(truth)], truth[np.isfinite(truth)], rtol=1e-5, atol=1e-5)
    assert int(sample["time"][0]) == int(ds.times_ns[ds.starts[0] + 1])


def test_nowcast_samples(store):
    dm = make_dm(store, task="nowcast", past=4, future=3, masks=box_holes, input_hole_prob=1.0)
    assert (dm.in_frames, dm.out_frames) == (4, 3)
    s = dm.datasets["train"][0]
    assert s["x"].shape == (4, 1, 16, 16) and s["y"].shape == (3, 1, 16, 16) and "hole" not in s
    start = int(dm.datasets["train"].starts[0])
    np.testing.assert_array_equal(s["time"].numpy(), dm.datasets["train"].times_ns[start + 4:start + 7])
    # input_hole_prob=1: every past frame lost pixels that were valid
    precip = zarr.open_group(str(store), mode="r")[schema.PRECIP]
    assert (s["x_mask"].sum() < s["x_mask"].numel()) or np.isnan(precip[start:start + 4]).all()


def test_stats_from_train_split_only_saved_and_reloaded(store, tmp_path):
    stats = tmp_path / "run" / "normalization.json"
    dm = make_dm(store, stats_path=stats, aux="all", normalization="log1p_zscore")
    train_start, train_stop = plan_splits(dm.datasets["train"].times_ns, SPLIT)["train"]
    precip = zarr.open_group(str(store), mode="r")[schema.PRECIP][train_start:train_stop]
    logs = np.log1p(precip[np.isfinite(precip)].astype(np.float64))
    assert dm.normalizer.mean == pytest.approx(logs.mean(), rel=1e-9)
    assert dm.normalizer.std == pytest.approx(logs.std(), rel=1e-9)
    everything = zarr.open_group(str(store), mode="r")[schema.PRECIP][:]
    assert dm.normalizer.mean != pytest.approx(np.log1p(everything[np.isfinite(everything)]).mean(), rel=1e-6)
    assert stats.exists()
    assert Normalizer.load(stats).fitted_on["stores"][0]["fit_frames"] == train_stop - train_start
    # The same split loads the file (a doctored number shows it was read, not refitted).
    doctored = Normalizer.load(stats)
    doctored.std *= 2
    doctored.save(stats)
    same = make_dm(store, stats_path=stats, aux="all", normalization="log1p_zscore")
    assert same.normalizer.std == pytest.approx(2 * dm.normalizer.std)
    dm.normalizer.save(stats)
    # The checkpoint path: state_dict carries the normaliser, load_state_dict restores it in place.
    fresh = RadarDataModule(store, masks=box_holes, split=SPLIT, normalization="log1p_zscore", aux="all")
    fresh.load_state_dict(dm.state_dict())
    assert fresh.normalizer.state_dict() == Normalizer.load(stats).state_dict()
    with pytest.raises(ValueError, match="normalization"):
        make_dm(store, stats_path=stats, aux="all", normalization="log1p_scaled")


def test_stats_file_of_another_split_or_store_is_refitted(store, tmp_path, caplog):
    stats = tmp_path / "normalization.json"
    other_split = {"fractions": [0.3, 0.3, 0.3], "gap": 1}
    fresh = make_dm(store, split=other_split).normalizer.state_dict()  # no statistics file involved
    make_dm(store, stats_path=stats)
    with caplog.at_level("WARNING", logger="nowcast_infill.data.store_normalizers"):
        refit = make_dm(store, stats_path=stats, split=other_split)
    assert refit.normalizer.state_dict() == fresh, "a file fitted on another split must not be reused"
    assert "refitting" in caplog.text and "fit_frames" in caplog.text
    assert Normalizer.load(stats).fitted_on == refit.normalizer.fitted_on
    # Fitted on another store (same frame count and times): refitted too.
    other_store = write_test_store(tmp_path / "other.zarr", n_time=48, seed=3)
    on_other = make_dm(other_store, stats_path=stats, split=other_split)
    assert on_other.normalizer.state_dict() == make_dm(other_store, split=other_split).normalizer.state_dict()
    assert on_other.normalizer.state_dict() != fresh
    # A file of an older version records nothing: refitted (same numbers when it was the same split).
    legacy = tmp_path / "legacy.json"
    legacy.write_text(json.dumps({**Normalizer.load(stats).state_dict(), "std": 1.0}))
    assert make_dm(other_store, stats_path=legacy, split=other_split).normalizer.state_dict() == \
        on_other.normalizer.state_dict()


def test_use_normalizer_fits_and_reads_nothing(store, tmp_path):
    given = make_dm(store, aux="all").normalizer
    stats = tmp_path / "absent.json"
    dm = RadarDataModule(store=store, masks=box_holes, split={"fractions": [0.3, 0.3, 0.3], "gap": 1},
                         crop_size=16, aux="all", stats_path=stats, eval_masks={"n": 2, "seed": 1})
    dm.use_normalizer(given)
    dm.setup()
    assert dm.normalizer.state_dict() == given.state_dict() and not stats.exists()
    assert all(ds.normalizer.state_dict() == given.state_dict() for ds in dm.datasets.values())
    lacking = Normalizer("log1p_scaled").fit(np.array([0.0, 1.0, 4.0]))
    dm = RadarDataModule(store=store, masks=box_holes, split=SPLIT, crop_size=16, aux="all")
    dm.use_normalizer(lacking)
    with pytest.raises(UserError, match="lacks aux field"):
        dm.setup()


def _batches(dm, loader_name="train", n=3, epoch=0):
    loader = getattr(dm, f"{loader_name}_dataloader")()
    loader.sampler.set_epoch(epoch)
    out = []
    for i, batch in enumerate(loader):
        out.append(batch)
        if i + 1 == n:
            break
    return out


def _same(a, b) -> bool:
    return all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_same_seed_same_batches_any_num_workers(store):
    reference = _batches(make_dm(store, num_workers=0, aux="all"))
    assert _same(reference, _batches(make_dm(store, num_workers=2, aux="all")))
    assert not _same(reference, _batches(make_dm(store, num_workers=0, aux="all", seed=8)))
    assert not _same(reference, _batches(make_dm(store, num_workers=0, aux="all"), epoch=1)), "each epoch draws anew"


def test_ddp_shards_disjoint_and_covering(store):
    dm = make_dm(store, eval_tile=20)
    for name in ("train", "val"):
        ds = dm.datasets[name]
        n = len(ds)
        # Lightning's own injected sampler on our dataset
        shards = [list(DistributedSampler(ds, num_replicas=2, rank=r, shuffle=name == "train", seed=3)) for r in (0, 1)]
        assert set(shards[0]) | set(shards[1]) == set(range(n))
        if n % 2 == 0:
            assert not set(shards[0]) & set(shards[1])
        # Ours: eval shards are disjoint and unpadded; train shards equal length, together covering all
        ours = [list(WindowSampler(ds, shuffle=name == "train", seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
        idx = [{i % n for i in shard} for shard in ours]
        assert idx[0] | idx[1] == set(range(n))
        if name == "val":
            assert not idx[0] & idx[1] and len(ours[0]) + len(ours[1]) == n
        else:
            assert len(ours[0]) == len(ours[1]) == -(-n // 2)
    loaders = [dm._loader("train", num_replicas=2, rank=r) for r in (0, 1)]
    first = [next(iter(loader)) for loader in loaders]
    assert not torch.equal(first[0]["x"], first[1]["x"]), "ranks must draw different samples"


def test_aux_regridding_reproduces_linear_field(store):
    dm = make_dm(store, aux=["u", "t"], eval_tile=None)
    ds = dm.datasets["val"]
    sample = ds[0]
    start = int(ds.starts[0])
    coords = make_test_dataset(n_time=48, aux=LINEAR_AUX)
    x, y = coords["x"].values, coords["y"].values
    x_aux, y_aux = coords["x_aux"].values, coords["y_aux"].values
    inside = ((y >= y_aux.min()) & (y <= y_aux.max()))[:, None] & ((x >= x_aux.min()) & (x <= x_aux.max()))[None, :]
    assert inside.sum() > 0.5 * inside.size
    for a, name in enumerate(["u", "t"]):
        for k in range(dm.in_frames):
            got = dm.normalizer.decode_aux(name, sample["aux"][k, a].double().numpy())
            truth = linear_aux_truth(name, x, y, start + k)
            np.testing.assert_allclose(got[inside], truth[inside], rtol=1e-5, atol=1e-3)
    assert torch.all(sample["aux_mask"] == 1)  # edge pixels lie within half a coarse cell: clamped, valid


def test_eval_masks_fixed_and_saved(store, tmp_path):
    dm = make_dm(store)
    again = make_dm(store, seed=99)  # the eval set depends on eval_masks.seed only
    np.testing.assert_array_equal(dm.eval_masks, again.eval_masks)
    assert dm.eval_masks.shape == (3, 40, 48) and dm.eval_masks.any()
    # val samples of the same window index use the same mask; tiles cut the same full-frame mask
    first, second = make_dm(store, eval_tile=20).datasets["val"][0], make_dm(store, eval_tile=20).datasets["val"][0]
    assert torch.equal(first["hole"], second["hole"])
    saved = load_mask_set(dm.save_eval_masks(tmp_path / "results"))
    np.testing.assert_array_equal(saved.masks, dm.eval_masks)
    assert saved.seed == 5


def test_clear_errors(store, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.zarr.*ni-convert"):
        make_dm(tmp_path / "nowhere.zarr")
    with pytest.raises(KeyError, match="aux_wind"):
        make_dm(store, aux=["wind"])
    no_precip = tmp_path / "no_precip.zarr"
    make_test_dataset(n_time=4).drop_vars("precip").to_zarr(no_precip, zarr_format=3, consolidated=False)
    with pytest.raises(schema.StoreSchemaError, match="no_precip.zarr.*'precip'"):
        make_dm(no_precip)
    with pytest.raises(ValueError, match="val split .* shorter than one window"):
        make_dm(store, task="nowcast", past=6, future=6)
    with pytest.raises(ValueError, match="task=infill needs hole masks"):
        make_dm(store, masks=None)
    with pytest.raises(ValueError, match="crop_size=64 exceeds"):
        make_dm(store, crop_size=64)


def test_lightning_fit_keeps_sampler_and_checkpoints_normalizer(store, tmp_path):
    import lightning as L

    seen_epochs: list[set[int]] = []

    class Probe(L.LightningModule):
        """Smallest module: records which crops it saw, so epochs can be compared."""

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(()))

        def on_train_epoch_start(self):
            seen_epochs.append(set())
            sampler = self.trainer.train_dataloader.sampler
            assert isinstance(sampler, WindowSampler), f"Lightning replaced our sampler by {type(sampler)}"

        def training_step(self, batch, _):
            seen_epochs[-1].add(float(batch["x"].sum()))
            return (self.weight - batch["y"].mean()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = RadarDataModule(store, masks=box_holes, split=SPLIT, crop_size=16, batch_size=4, seed=1)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(Probe(), datamodule=dm)
    assert len(seen_epochs) == 2 and not seen_epochs[0] & seen_epochs[1], "epoch 2 must draw other crops"
    ckpt = torch.load(next((tmp_path / "checkpoints").glob("*.ckpt")), weights_only=True)
    assert ckpt["RadarDataModule"]["normalizer"] == dm.normalizer.state_dict()


# (time index, row, column) -> value written by "another tool": all implausible.
IMPLAUSIBLE = {(5, 20, 30): -1.0, (5, 21, 30): np.inf, (12, 25, 40): 1e35, (12, 26, 40): 600.0,
               (12, 27, 40): -np.inf, (30, 15, 20): 3.4e38}


def test_implausible_store_values_reported_once_and_masked_everywhere(tmp_path, caplog):
    """Negative, +-inf and > 500 mm/h values: counted at setup, then no data in stats and samples."""
    bad_ds = make_test_dataset(n_time=48, missing=[20])
    clean_ds = bad_ds.copy(deep=True)
    for (t, r, c), value in IMPLAUSIBLE.items():
        bad_ds["precip"].values[t, r, c] = value
        clean_ds["precip"].values[t, r, c] = np.nan
    bad = write_dataset(tmp_path / "bad.zarr", bad_ds, chunks=(1, 20, 24))
    clean = write_dataset(tmp_path / "clean.zarr", clean_ds, chunks=(1, 20, 24))

    with caplog.at_level("WARNING", logger="nowcast_infill.data.datamodule"):
        dm = make_dm(bad, crop_size=None, normalization="log1p_zscore")
    reports = [r.getMessage() for r in caplog.records if "above 500 mm/h" in r.getMessage()]
    assert len(reports) == 1
    assert "6 value(s) of precip" in reports[0] and "first at 2021-06-01T00:30:00Z" in reports[0]
    assert str(bad) in reports[0]
    assert dm.implausible_report == {"count": 6, "first_time": "2021-06-01T00:30:00", "variable": "precip",
                                     "max_rain_rate_mm_h": 500.0}
    # The statistics are those of the store with these pixels missing.
    reference = make_dm(clean, crop_size=None, normalization="log1p_zscore")
    assert reference.implausible_report["count"] == 0
    assert dm.normalizer.state_dict() == reference.normalizer.state_dict()
    # Every sample (full frames) of every split: finite tensors, the pixels never valid.
    for name, dataset in dm.datasets.items():
        assert len(dataset) == len(reference.datasets[name])
        for index in range(len(dataset)):
            sample, expected = dataset[index], reference.datasets[name][index]
            for key in ("x", "x_mask", "y", "y_valid", "hole"):
                assert torch.isfinite(sample[key]).all(), (name, index, key)
                assert torch.equal(sample[key], expected[key]), (name, index, key)
            start = int(dataset.starts[index])
            for (t, r, c) in IMPLAUSIBLE:
                if start <= t < start + dataset.window_length:
                    assert sample["x_mask"][t - start, 0, r, c] == 0
                    if t - start == dataset.target_offsets[0]:
                        assert sample["y_valid"][0, 0, r, c] == 0 and sample["hole"][0, 0, r, c] == 0
    # A stricter maximum masks real rates too, and says so.
    strict = make_dm(bad, crop_size=None, max_rain_rate_mm_h=10.0)
    assert strict.implausible_report["count"] > 6
    with pytest.raises(ValueError, match="max_rain_rate_mm_h"):
        RadarDataModule(bad, max_rain_rate_mm_h=0)
