"""Checkpoints are loaded weights-only everywhere: a .ckpt whose unpickling would run code is
refused by every command, naming the file, and the code never runs; our own checkpoints need
no allow-listed type."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from factories import LINEAR_AUX, write_test_store
from nowcast_infill.checkpoint_io import CHECKPOINT_SAFE_GLOBALS, CheckpointError, read_checkpoint
from nowcast_infill.study import VARIANTS
from test_configs import TINY_NET, compose_config, tiny_overrides

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

EVIL_NAME = "models/evil.ckpt"  # relative, as a user would write it (the tests run in tmp_path)
SMALL_WINDOWS = ["task.past=2", "task.future=2", "data.split.gap=2", "data.eval_masks.n=2"]


class _CreatesFileWhenUnpickled:
    """Unpickling this calls `open(marker, "w")`: the marker file appears if the pickle is ever run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_evil_checkpoint(path: Path, marker: Path) -> Path:
    """A file shaped like a Lightning checkpoint of a network, carrying a payload that creates `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": {"task": "infill", "net": {"depth": 3}, "in_frames": 3,
                                                       "out_frames": 1, "aux_channels": 0},
                "pytorch-lightning_version": "2.6.6", "epoch": 0, "global_step": 1,
                "payload": _CreatesFileWhenUnpickled(marker)}, path)
    return path


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    return write_test_store(tmp_path_factory.mktemp("data") / "in.zarr", n_time=30, ny=32, nx=32)


@pytest.fixture
def evil(tmp_path, monkeypatch) -> Path:
    """The marker path; `models/evil.ckpt` (relative to the cwd = tmp_path) creates it when unpickled.

    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns every torch.load that does not ask for
    weights_only=True explicitly into full unpickling: only explicit weights-only loads pass.
    """
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "MARKER_code_ran"
    write_evil_checkpoint(tmp_path / EVIL_NAME, marker)
    return marker


def _ni_train_resume(tmp_path, store):
    from nowcast_infill.pipeline.fitting import train

    train(compose_config("train", [*tiny_overrides(tmp_path, store), TINY_NET, *SMALL_WINDOWS,
                                   f"data.stats_path={tmp_path / 'stats.json'}", f"ckpt_path={EVIL_NAME}"]))


def _ni_eval(tmp_path, store):
    from nowcast_infill.pipeline.scoring import evaluate

    evaluate(compose_config("eval", [*tiny_overrides(tmp_path, store), *SMALL_WINDOWS,
                                     f"data.stats_path={tmp_path / 'stats.json'}", f"ckpt_path={EVIL_NAME}"]))


def _ni_infill(tmp_path, store):
    from nowcast_infill.pipeline import infill

    infill(compose_config("infill", [f"input={store}", f"output={tmp_path / 'out.zarr'}", f"ckpt_path={EVIL_NAME}",
                                         "progress=false"]))


def _ni_nowcast(tmp_path, store):
    from nowcast_infill.pipeline import nowcast

    nowcast(compose_config("nowcast", [f"input={store}", f"output={tmp_path / 'nc.zarr'}", f"ckpt_path={EVIL_NAME}"]))


def _results_scripts(tmp_path, store):
    import results_common as rc

    base = rc.common_overrides(tmp_path / "run", store, tmp_path / "stats.json", "zarr", SMALL_WINDOWS)
    rc.evaluate_method("synthetic", "pconv", [*base, "data.crop_size=32", "data.batch_size=2"], tmp_path / "run",
                       ckpt_path=Path(EVIL_NAME))


COMMANDS = {"ni-train resume": _ni_train_resume, "ni-eval": _ni_eval, "ni-infill": _ni_infill,
            "ni-nowcast": _ni_nowcast, "results scripts": _results_scripts}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_refuses_a_checkpoint_that_would_run_code(command, evil, small_store, tmp_path):
    with pytest.raises(CheckpointError) as err:
        COMMANDS[command](tmp_path, small_store)
    message = str(err.value)
    assert message.startswith(f"{EVIL_NAME}: refused to load"), message
    assert "io.open" in message and "\n" not in message, message
    assert not evil.exists(), f"{command} ran code from the checkpoint"


def test_lightning_resume_is_weights_only_without_the_vetting_too(evil, small_store, tmp_path, monkeypatch):
    # Defence in depth: with the up-front check switched off, Lightning's own load still refuses.
    import pickle

    import nowcast_infill.pipeline.fitting as fitting

    monkeypatch.setattr(fitting, "read_checkpoint", lambda path: None)
    with pytest.raises(pickle.UnpicklingError, match="io.open"):
        _ni_train_resume(tmp_path, small_store)
    assert not evil.exists()


@pytest.mark.parametrize("content,expect", [(b"not a checkpoint", "cannot be read as a PyTorch checkpoint"),
                                            ("list", "not a Lightning checkpoint")])
def test_a_file_that_is_no_checkpoint_is_one_clear_line(content, expect, tmp_path):
    path = tmp_path / "x.ckpt"
    if content == "list":
        torch.save([1, 2], path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expect) as err:
        read_checkpoint(str(path))
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


def _train_one_step(tmp_path: Path, store: Path, *extra: str) -> list[Path]:
    from nowcast_infill.pipeline.fitting import train

    train(compose_config("train", [*tiny_overrides(tmp_path, store), f"data.stats_path={tmp_path / 'stats.json'}", TINY_NET,
                                   *SMALL_WINDOWS, "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
                                   "+trainer.limit_val_batches=1", "test=false", *extra]))
    return sorted((tmp_path / "run").rglob("*.ckpt"))


@pytest.mark.slow  # 8-30 s per task, depending on the load
@pytest.mark.parametrize("task", ["infill", "nowcast"])
def test_checkpoints_of_every_variant_need_no_allow_listed_type(task, tmp_path):
    # Every network variant, with aux inputs, writes only plain types: nothing to allow-list,
    # and each checkpoint loads weights-only with torch's own list (CHECKPOINT_SAFE_GLOBALS is empty).
    assert CHECKPOINT_SAFE_GLOBALS == ()
    store = write_test_store(tmp_path / "train.zarr", n_time=40, ny=40, nx=40, aux=LINEAR_AUX)
    for variant in VARIANTS:
        ckpts = _train_one_step(tmp_path / variant, store, f"experiment={task}_{variant}", "data.aux=all")
        assert ckpts, variant
        for ckpt in ckpts:
            assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == [], (variant, ckpt.name)
            assert read_checkpoint(ckpt)["hyper_parameters"]["task"] == task
