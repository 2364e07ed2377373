"""The one checkpoint reader (`checkpoint_io.read_trained_model`): the `nowcast_infill` payload
(format 2), the old layout (DataModule state + run config.yaml) for checkpoints of earlier
versions, and one-line errors naming the file and the fix; and a predictor built from the
payload alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nowcast_infill.checkpoint_io import CheckpointError, read_trained_model
from nowcast_infill.data.normalization import Normalizer

NORMALIZER = Normalizer().fit(np.random.default_rng(0).exponential(1.0, size=(4, 16, 16)).astype(np.float32))


def payload(**changes) -> dict:
    out = {
        "format": 2,
        "task": {"name": "nowcast", "in_frames": 2, "out_frames": 3},
        "normalizer": NORMALIZER.state_dict(),
        "aux_names": ["orography", "t2m"],
        "model_name": "lstm",
    }
    return {**out, **changes}


def save(path: Path, **contents) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": contents.pop("hyper_parameters", {}), **contents}, path)
    return str(path)


def test_payload_gives_task_normaliser_aux_and_name(tmp_path):
    # The old layout's keys say otherwise: the payload wins.
    old_hparams = {"task": "infill", "in_frames": 3, "out_frames": 1, "name": "baseline"}
    path = save(
        tmp_path / "run" / "checkpoints" / "best.ckpt",
        nowcast_infill=payload(),
        hyper_parameters=old_hparams,
        RadarDataModule={"normalizer": {"kind": "log1p_zscore"}},
    )
    trained = read_trained_model(path)
    assert trained.format == 2 and trained.path == path
    assert (trained.task.name, trained.task.in_frames, trained.task.out_frames) == ("nowcast", 2, 3)
    assert trained.normalizer_state == NORMALIZER.state_dict()
    assert trained.aux_names == ["orography", "t2m"] and trained.model_name == "lstm"


def test_old_layout_reads_hparams_datamodule_state_and_run_config(tmp_path):
    run = tmp_path / "run"
    path = save(
        run / "checkpoints" / "last.ckpt",
        hyper_parameters={"task": "infill", "in_frames": 3, "out_frames": 1, "name": "attention"},
        RadarDataModule={"normalizer": NORMALIZER.state_dict()},
    )
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"crop_size": 48, "aux": ["t2m"]}}))
    trained = read_trained_model(path)
    assert trained.format == 1
    assert (trained.task.name, trained.task.in_frames, trained.task.out_frames) == ("infill", 3, 1)
    assert trained.normalizer_state == NORMALIZER.state_dict() and trained.model_name == "attention"
    assert trained.aux_names == ["t2m"]
    assert trained.data_setting("crop_size") == (48, "run config.yaml")


def test_old_layout_without_normaliser_or_aux_list_leaves_them_unknown(tmp_path):
    path = save(
        tmp_path / "x.ckpt",
        hyper_parameters={"task": "infill", "in_frames": 1, "out_frames": 1, "name": "b"},
        datamodule_hyper_parameters={"aux": "all", "crop_size": 32},
    )
    trained = read_trained_model(path)
    assert trained.normalizer_state is None and trained.aux_names is None
    assert trained.data_setting("crop_size") == (32, "checkpoint datamodule_hyper_parameters")


@pytest.mark.parametrize(
    "contents,expect",
    [
        ({"hyper_parameters": {"name": "x"}}, "holds neither 'nowcast_infill' nor the task in hyper_parameters"),
        ({"nowcast_infill": payload(format=3)}, "'nowcast_infill' is of format 3, this version reads format 2"),
        (
            {"nowcast_infill": {k: v for k, v in payload().items() if k != "normalizer"}},
            "lacks or garbles 'normalizer'",
        ),
        ({"nowcast_infill": payload(task={"name": "nowcast"})}, "lacks or garbles 'in_frames'"),
    ],
)
def test_unreadable_checkpoint_is_one_line_naming_the_file_and_the_fix(contents, expect, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save(tmp_path / "ckpts" / "x.ckpt", **contents)
    with pytest.raises(CheckpointError) as err:
        read_trained_model("ckpts/x.ckpt")  # named as given, not resolved
    message = str(err.value)
    assert message.startswith("ckpts/x.ckpt: ") and expect in message and "\n" not in message, message
    assert "ni-train" in message  # the fix


def test_predictor_from_a_payload_checkpoint_without_the_old_datamodule_state(tmp_path):
    # A checkpoint as RadarModule.on_save_checkpoint writes it: no "RadarDataModule" key, no run config.
    import lightning

    from nowcast_infill.inference.checkpoint import load_checkpoint_predictor
    from nowcast_infill.training.module import RadarModule

    module = RadarModule(
        net={
            "_target_": "nowcast_infill.models.components.unet.PConvUNet",
            "encoder_channels": [8, 16],
            "lstm": False,
            "attention": False,
        },
        task="infill",
        in_frames=3,
        out_frames=1,
        aux_channels=0,
        loss={"name": "infill", "preset": "valid_hole", "distance": "l2"},
        name="baseline",
    )
    module.net.set_output_floor(NORMALIZER.floor)
    ckpt = save(
        tmp_path / "model.ckpt",
        state_dict=module.state_dict(),
        hyper_parameters=dict(module.hparams),
        **{
            "pytorch-lightning_version": lightning.__version__,
            "nowcast_infill": payload(
                task={"name": "infill", "in_frames": 3, "out_frames": 1}, aux_names=[], model_name="baseline"
            ),
        },
    )
    predictor, info = load_checkpoint_predictor(ckpt, "infill", tile=16, device="cpu")
    assert (predictor.task, predictor.in_frames, predictor.out_frames) == ("infill", 3, 1)
    assert predictor.normalizer.state_dict() == NORMALIZER.state_dict() and predictor.aux_names == []
    frames = np.random.default_rng(1).exponential(1.0, size=(3, 32, 32)).astype(np.float32)
    frames[1, 8:20, 8:20] = np.nan
    filled = predictor(frames, np.ones((32, 32), bool), frame_index=None)
    assert filled.shape == (1, 32, 32) and np.isfinite(filled[0, 8:20, 8:20]).all()
    with pytest.raises(CheckpointError, match="trained for task='infill'; ni-nowcast needs"):
        load_checkpoint_predictor(ckpt, "nowcast", tile=16, device="cpu")
