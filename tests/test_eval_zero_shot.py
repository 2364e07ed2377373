"""Zero-shot evaluation: `ni-eval ckpt_path=X data.store=Y` scores a checkpoint on a store it never
saw with the task and the normaliser the checkpoint brings, with no `task=` restated and no
statistics fitted for the new store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_configs import TINY_NET, compose_config, tiny_overrides

from nowcast_infill.data.synthetic import write_synthetic_store
from nowcast_infill.errors import BadValueError
from nowcast_infill.pipeline import evaluate, train

REPO = Path(__file__).resolve().parents[1]
NOWCAST = ["task=nowcast", "task.past=2", "task.future=2"]
SMALL = ["data.split.gap=2", "data.eval_masks.n=4"]


@pytest.fixture(scope="module")
def nowcast_checkpoint(tmp_path_factory) -> Path:
    """A nowcast network (2 frames in, 2 out) trained for one step on one synthetic store."""
    tmp = tmp_path_factory.mktemp("train")
    store = write_synthetic_store(tmp / "train.zarr", n_times=40, ny=40, nx=40, seed=3)
    trained = train(
        compose_config(
            "train",
            [
                *tiny_overrides(tmp, store),
                TINY_NET,
                *NOWCAST,
                *SMALL,
                f"data.stats_path={tmp / 'train.stats.json'}",
                "trainer.max_epochs=1",
                "+trainer.limit_train_batches=1",
                "+trainer.limit_val_batches=1",
                "test=false",
            ],
        )
    )
    return Path(trained["last_model_path"])


@pytest.fixture(scope="module")
def unseen_store(tmp_path_factory) -> Path:
    return write_synthetic_store(tmp_path_factory.mktemp("unseen") / "unseen.zarr", n_times=40, ny=40, nx=40, seed=11)


def eval_overrides(tmp_path: Path, store: Path, ckpt: Path, *extra: str) -> list[str]:
    return [
        *tiny_overrides(tmp_path, store),
        *SMALL,
        f"ckpt_path={ckpt}",
        f"data.stats_path={tmp_path / 'unseen.stats.json'}",
        "+trainer.limit_test_batches=1",
        "n_figures=1",
        *extra,
    ]


@pytest.mark.slow  # a ni-eval process: 15-40 s on a busy 2-core machine
def test_ni_eval_takes_task_and_normaliser_from_the_checkpoint(nowcast_checkpoint, unseen_store, tmp_path):
    overrides = eval_overrides(tmp_path, unseen_store, nowcast_checkpoint)
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    done = subprocess.run(
        [sys.executable, "-m", "nowcast_infill.cli.eval", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["task"] == "nowcast" and record["split"] == "test"
    assert {"test/rmse/lead1", "test/rmse/lead2"} <= set(record["metrics"]), sorted(record["metrics"])
    assert "test/rmse/lead3" not in record["metrics"]  # the checkpoint's 2 leads, not the default task's
    # The checkpoint's normaliser: nothing fitted on, or written for, the unseen store.
    assert not (tmp_path / "unseen.stats.json").exists()


def test_task_from_checkpoint_when_the_overrides_name_none(nowcast_checkpoint, unseen_store, tmp_path):
    overrides = eval_overrides(tmp_path, unseen_store, nowcast_checkpoint)
    results = evaluate(compose_config("eval", overrides), overrides=overrides)
    assert results["row"]["task"] == "nowcast" and "test/rmse/lead2" in results
    assert not (tmp_path / "unseen.stats.json").exists()


@pytest.mark.parametrize("given", [["task=infill"], ["task=nowcast", "task.past=2", "task.future=3"], None])
def test_a_task_given_against_the_checkpoint_is_an_error_naming_both(given, nowcast_checkpoint, unseen_store, tmp_path):
    # None: a config composed in a script, whose (default infill) task counts as given
    overrides = eval_overrides(tmp_path, unseen_store, nowcast_checkpoint, *(given or []))
    with pytest.raises(BadValueError) as err:
        evaluate(compose_config("eval", overrides), overrides=None if given is None else overrides)
    message = str(err.value)
    assert f"{nowcast_checkpoint} was trained with task=nowcast (in_frames=2, out_frames=2)" in message, message
    asked = {"task=infill": "task=infill (in_frames=3", "task.future=3": "task=nowcast (in_frames=2, out_frames=3)"}
    assert asked[(given or ["task=infill"])[-1]] in message, message
