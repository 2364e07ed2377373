"""RadarDataModule over several stores (data.stores), data.split=test_only and the split overrides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from factories import write_test_store
from nowcast_infill import schema
from nowcast_infill.data.datamodule import RadarDataModule, SplitUnavailableError
from nowcast_infill.data.masks import load_mask_set
from nowcast_infill.data.splits import plan_splits
from nowcast_infill.errors import UserError
from nowcast_infill.utils.config import register_resolvers

SPLIT = {"fractions": [0.6, 0.2, 0.2], "gap": 2}
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two stores of different grids, lengths and rain: 40 x 48 px (36 frames), 32 x 36 px (30 frames)."""
    root = tmp_path_factory.mktemp("stores")
    return (write_test_store(root / "a.zarr", n_time=36, ny=40, nx=48, seed=1),
            write_test_store(root / "b.zarr", n_time=30, ny=32, nx=36, seed=2, nodata_block=None,
                             start="2022-01-01T00:00"))


def make_dm(stores, **kwargs) -> RadarDataModule:
    args = {"stores": [str(s) for s in stores], "task": "nowcast", "past": 2, "future": 2, "crop_size": 16,
            "eval_tile": 16, "split": SPLIT, "batch_size": 4, "seed": 3, "min_valid_fraction": 0.0}
    args.update(kwargs)
    dm = RadarDataModule(**args)
    dm.setup()
    return dm


def train_log1p(store) -> np.ndarray:
    precip = zarr.open_group(str(store), mode="r")[schema.PRECIP][:]
    start, stop = plan_splits(np.arange(precip.shape[0]), SPLIT)["train"]
    block = precip[start:stop]
    return np.log1p(block[np.isfinite(block)].astype(np.float64))


def test_windows_drawn_across_stores_in_same_shaped_batches(stores):
    dm = make_dm(stores)
    singles = [make_dm([store]) for store in stores]
    for name in ("train", "val", "test"):
        assert len(dm.datasets[name]) == sum(len(single.datasets[name]) for single in singles)
    seen = set()
    loader = dm.train_dataloader()
    for batch in loader:
        assert batch["x"].shape == (4, 2, 1, 16, 16) and batch["y"].shape == (4, 2, 1, 16, 16)
        seen |= set(batch["store"].tolist())
    assert seen == {0, 1}
    for batch in dm.val_dataloader():  # 16 px tiles of both grids
        assert batch["x"].shape[-2:] == (16, 16) and "owned" in batch
    # One normaliser fitted over the train frames of both stores (not of one).
    logs = np.concatenate([train_log1p(store) for store in stores])
    assert dm.normalizer.std == pytest.approx(logs.std(), rel=1e-9)
    assert dm.normalizer.count == logs.size
    assert dm.normalizer.std != pytest.approx(singles[0].normalizer.std, rel=1e-6)
    # Same seed, same batches.
    again = [batch["x"] for batch in make_dm(stores).train_dataloader()]
    assert all(torch.equal(a["x"], b) for a, b in zip(loader, again))


def test_per_store_normalizers_give_each_store_its_own_samples(stores):
    dm = make_dm(stores, normalize_per_store=True)
    singles = [make_dm([store]) for store in stores]
    for normalizer, single in zip(dm.normalizers, singles):
        assert normalizer.state_dict() == single.normalizer.state_dict()
    with pytest.raises(UserError, match="normalizers"):
        _ = dm.normalizer
    # The first store's samples are exactly those of the store alone.
    part = dm.datasets["val"].parts[0]
    for index in range(len(part)):
        ours, alone = dm.datasets["val"][index], singles[0].datasets["val"][index]
        assert all(torch.equal(ours[k], alone[k]) for k in alone) and int(ours["store"]) == 0
    assert set(dm.state_dict()) == {"normalizers"}


def test_per_store_normalizer_state_must_match_the_stores_and_setting(stores, tmp_path):
    trained = make_dm(stores, normalize_per_store=True).state_dict()
    restored = RadarDataModule(stores=[str(s) for s in stores], normalize_per_store=True)
    restored.load_state_dict(trained)
    assert [n.state_dict() for n in restored.normalizers] == trained["normalizers"]
    # Three stores named, two normalisers saved: no store may silently keep an unfitted one.
    third = write_test_store(tmp_path / "c.zarr", n_time=30, seed=7)
    with pytest.raises(UserError, match=r"2 per-store normalisers but data.stores lists 3 stores; set data.stores"):
        RadarDataModule(stores=[*map(str, stores), str(third)], normalize_per_store=True).load_state_dict(trained)
    # A run with one shared normaliser cannot take per-store ones (which one would it use?).
    with pytest.raises(UserError, match=r"data.normalize_per_store=true.*set data.normalize_per_store=true"):
        RadarDataModule(stores=[str(s) for s in stores]).load_state_dict(trained)
    with pytest.raises(UserError, match=r"data.normalize_per_store"):
        RadarDataModule(store=str(stores[0]), normalize_per_store=True).load_state_dict(trained)


def test_different_grids_need_crops_and_tiles(stores, tmp_path):
    with pytest.raises(UserError, match="different grids.*data.eval_tile"):
        make_dm(stores, eval_tile=None)
    dm = make_dm(stores, task="infill", context=1, masks={"name": "freeform"}, eval_masks={"n": 2, "seed": 4})
    assert [m.shape for m in dm.eval_mask_sets] == [(2, 40, 48), (2, 32, 36)]
    first = dm.save_eval_masks(tmp_path)
    assert load_mask_set(first).masks.shape == (2, 40, 48)
    assert load_mask_set(tmp_path / "eval_masks.store1.npz").masks.shape == (2, 32, 36)


def test_test_only_evaluates_a_short_store_whole(tmp_path):
    event = write_test_store(tmp_path / "event.zarr", n_time=12, seed=5)
    given = make_dm([write_test_store(tmp_path / "train.zarr", n_time=36, seed=6)]).normalizer
    stats = tmp_path / "stats.json"
    dm = RadarDataModule(store=event, task="nowcast", past=2, future=2, crop_size=16, eval_tile=16, split="test_only",
                         stats_path=stats, min_valid_fraction=0.0)
    dm.use_normalizer(given)
    dm.setup("test")
    assert list(dm.datasets) == ["test"] and not stats.exists()
    assert dm.datasets["test"].starts.tolist() == list(range(12 - 4 + 1)), "every window of the store is test"
    assert dm.normalizer.state_dict() == given.state_dict()
    assert len(list(dm.test_dataloader())) > 0
    with pytest.raises(SplitUnavailableError, match="test_only.*no train split"):
        dm.train_dataloader()
    with pytest.raises(SplitUnavailableError, match="stage 'fit'"):
        RadarDataModule(store=event, split="test_only").setup("fit")
    with pytest.raises(UserError, match="data.split='every_frame' is unknown"):
        RadarDataModule(store=event, split="every_frame", crop_size=16).setup("test")


def test_train_only_stores_train_whole_beside_a_normal_one(tmp_path):
    """A short event of another radar network trains whole (no val/test windows to find room for)."""
    event = write_test_store(tmp_path / "event.zarr", n_time=12, seed=8)
    dm = RadarDataModule(store=event, task="nowcast", past=2, future=2, crop_size=16, eval_tile=16,
                         split="train_only", min_valid_fraction=0.0, batch_size=2, num_workers=0)
    dm.setup("fit")
    assert list(dm.datasets) == ["train"]
    assert dm.datasets["train"].starts.tolist() == list(range(12 - 4 + 1)), "every window of the store trains"
    assert dm.plans[0].fit_frames().tolist() == list(range(12)), "the normaliser is fitted on every frame"
    assert len(list(dm.train_dataloader())) > 0
    with pytest.raises(SplitUnavailableError, match="train_only.*no val split"):
        dm.val_dataloader()
    for stage in ("test", "validate"):
        with pytest.raises(SplitUnavailableError, match=f"stage '{stage}'"):
            RadarDataModule(store=event, split="train_only", crop_size=16).setup(stage)


def test_split_overrides_compose_without_plus(tmp_path):
    store = write_test_store(tmp_path / "s.zarr", n_time=36, seed=7)
    dates = "{train: [2021-06-01T00:05, 2021-06-01T01:30], val: [2021-06-01T01:50, 2021-06-01T02:10], " \
            "test: [2021-06-01T02:20, 2021-06-01T02:55]}"
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        base = ["data=zarr", f"data.store={store}", "task=nowcast", "task.past=2", "task.future=2", "data.crop_size=16",
                "data.eval_tile=16", "data.num_workers=0", "data.min_valid_fraction=0"]
        by_dates = compose("train", overrides=[*base, f"data.split={{dates: {dates}}}"])
        test_only = compose("train", overrides=[*base, "data.split=test_only"])
        zarr_default = compose("train", overrides=["data=zarr", f"data.store={store}"])
    assert zarr_default.data.eval_tile == 256
    dm = instantiate(by_dates.data)
    dm.setup()
    assert plan_splits(dm.datasets["train"].times_ns.astype("datetime64[ns]"), dm.split) == \
        {"train": (0, 18), "val": (21, 26), "test": (27, 35)}
    dm = instantiate(test_only.data)
    dm.setup("test")
    assert list(dm.datasets) == ["test"]


def _ni_eval(args: list[str], cwd: Path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([str(Path(sys.executable).parent / "ni-eval"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_data_stores_replaces_data_store_on_the_command_line(stores, tmp_path):
    """`data=zarr data.stores=[...]` runs without data.store (the data configs' required key), and
    every listed store is checked to exist, named by its list position."""
    common = ["model=persistence", "task=nowcast", "task.past=2", "task.future=2", "data=zarr", "data.eval_tile=16", "data.crop_size=16",
              f"data.split={{fractions: [0.6, 0.2, 0.2], gap: 2}}", "logger=csv", "data.num_workers=0",
              "+trainer.limit_test_batches=2", "data.min_valid_fraction=0.0"]
    missing = _ni_eval([*common, f"data.stores=[{stores[0]},{tmp_path / 'nowhere.zarr'}]",
                        f"paths.output_dir={tmp_path / 'bad'}"], tmp_path)
    assert missing.returncode == 2, missing.stderr[-2000:]
    assert "data.stores[1]" in missing.stderr and "nowhere.zarr" in missing.stderr, missing.stderr[-2000:]
    both = _ni_eval([*common, f"data.stores=[{stores[0]},{stores[1]}]", f"paths.output_dir={tmp_path / 'ok'}"],
                    tmp_path)
    assert both.returncode == 0, both.stderr[-3000:]
    assert (tmp_path / "ok" / "metrics.json").is_file()
