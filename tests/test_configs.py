"""Config tree: every experiment composes and validates; typos and wrong types fail naming the key."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from nowcast_infill.pipeline.config_checks import ConfigSchemaError, validate_config
from nowcast_infill.utils.config import devices_per_node, num_nodes, register_resolvers, run_id
from nowcast_infill.utils.lr import global_batch_size, scaled_learning_rate, warmup_cosine_schedule

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
TINY_NET = "model.net.encoder_channels=[8,16,16]"


def tiny_overrides(tmp_path: Path, store: Path | None = None) -> list[str]:
    """Overrides that make any train/eval config run in seconds on a tiny synthetic store."""
    out = [
        f"paths.output_dir={tmp_path / 'run'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "data.crop_size=32",
        "data.batch_size=2",
        "data.num_workers=0",
        "logger=csv",
    ]
    if store is not None:
        out.append(f"data.store={store}")
    return out


def compose_config(name: str, overrides: list[str]):
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(name, overrides=overrides)


def test_eight_experiments_exist():
    assert EXPERIMENTS == sorted(f"{t}_{m}" for t in ("infill", "nowcast") for m in ("baseline", "lstm", "attention", "lstm_attention"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_validates(experiment, tmp_path):
    cfg = compose_config("train", [f"experiment={experiment}", *tiny_overrides(tmp_path)])
    validate_config(cfg, "train")
    task, model = experiment.split("_", 1)
    assert cfg.task.name == task and cfg.model.name == model
    assert cfg.model.net.lstm == ("lstm" in model) and cfg.model.net.attention == ("attention" in model)
    assert cfg.model.in_frames == cfg.task.in_frames and cfg.model.out_frames == cfg.task.out_frames
    assert cfg.logger.csv.save_dir == str(tmp_path / "run")


@pytest.mark.parametrize("baseline,task", [("nearest", "infill"), ("biharmonic", "infill"), ("persistence", "nowcast"), ("sprog", "nowcast")])
def test_eval_baseline_configs_validate(baseline, task, tmp_path):
    cfg = compose_config("eval", [f"task={task}", f"model={baseline}", *tiny_overrides(tmp_path)])
    validate_config(cfg, "eval")
    assert cfg.model.name == baseline


def test_typo_in_trainer_key_fails_at_compose(tmp_path):
    with pytest.raises(ConfigCompositionException, match=r"trainer\.max_epoch"):
        compose_config("train", ["trainer.max_epoch=1", *tiny_overrides(tmp_path)])


def test_added_typo_key_is_refused_by_the_schema(tmp_path):
    cfg = compose_config("train", ["+trainer.max_epoch=1", *tiny_overrides(tmp_path)])
    with pytest.raises(ConfigSchemaError, match=r"^trainer\.max_epoch: unknown key.*did you mean 'max_epochs'"):
        validate_config(cfg, "train")


def test_wrong_type_names_the_key(tmp_path):
    cfg = compose_config("train", [*tiny_overrides(tmp_path), "data.batch_size=abc"])
    with pytest.raises(ConfigSchemaError, match=r"^data\.batch_size: 'abc'"):
        validate_config(cfg, "train")


@pytest.mark.parametrize(
    "override,key",
    [
        ("seed=abc", "seed"),
        ("+sed=1", "sed"),
        ("model.optimizer.lr=fast", "model.optimizer.lr"),
        ("model.optimizer.lr_scaling=cubic", "model.optimizer.lr_scaling"),
        ("+model.net.encoder_channel=[8]", "model.net.encoder_channel"),
        ("task.in_frames=4", "task.in_frames"),
        ("callbacks.early_stopping.patience=soon", "callbacks.early_stopping.patience"),
        ("trainer.max_epochs=1.5", "trainer.max_epochs"),
    ],
)
def test_bad_values_name_their_key(override, key, tmp_path):
    cfg = compose_config("train", [*tiny_overrides(tmp_path), override])
    with pytest.raises(ConfigSchemaError, match="^" + key.replace(".", r"\.") + ":"):
        validate_config(cfg, "train")


def test_global_batch_and_linear_lr_scaling():
    assert global_batch_size(4, devices=2, nodes=3, accumulate_grad_batches=2) == 48
    assert scaled_learning_rate(1e-3, 48, 8, "linear") == pytest.approx(6e-3)
    assert scaled_learning_rate(1e-3, 48, 8, "none") == 1e-3
    # square-root rule for adaptive optimisers: 1e-3 * sqrt(48 / 8)
    assert scaled_learning_rate(1e-3, 48, 8, "sqrt") == pytest.approx(2.449490e-3)
    with pytest.raises(ValueError, match="lr_scaling"):
        scaled_learning_rate(1e-3, 48, 8, "cubic")
    with pytest.raises(ValueError, match="devices"):
        global_batch_size(4, 0, 1, 1)


def test_warmup_cosine_schedule_shape():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine_schedule(opt, total_steps=10, warmup_steps=2, min_lr_ratio=0.1)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[2] == pytest.approx(1.0)  # start of the cosine
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    expected_last = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 8))
    assert lrs[-1] == pytest.approx(expected_last)


def test_warmup_length_precedence():
    from nowcast_infill.utils.lr import warmup_steps_for

    # steps win, then samples (ceil(samples / global batch)), then the fraction of all steps
    assert warmup_steps_for(100, warmup_steps=7, warmup_samples=64, warmup_fraction=0.5, global_batch=8) == 7
    assert warmup_steps_for(100, warmup_samples=64, warmup_fraction=0.5, global_batch=8) == 8
    assert warmup_steps_for(100, warmup_samples=65, global_batch=32) == 3
    assert warmup_steps_for(100, warmup_fraction=0.05) == 5
    assert warmup_steps_for(10, warmup_samples=1000, global_batch=8) == 10  # never longer than the run
    with pytest.raises(ValueError, match="warmup_samples needs the global batch"):
        warmup_steps_for(100, warmup_samples=64)
    with pytest.raises(ValueError, match="scheduler.warmup_steps must be >= 0"):
        warmup_steps_for(100, warmup_steps=-1)


def test_run_dir_agrees_across_ranks(monkeypatch, tmp_path):
    # Under srun every rank sees the same SLURM_JOB_ID; the run dir must not depend on the rank.
    for name in ("NI_RUN_ID", "SLURM_ARRAY_JOB_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert run_id() == "4242"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert run_id() == "77_3"
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun's value without --rdzv-id
    monkeypatch.setenv("RANK", "0")
    stamp = run_id()
    assert stamp != "none" and os.environ["NI_RUN_ID"] == stamp  # inherited by spawned ranks
    monkeypatch.setenv("RANK", "1")
    assert run_id() == stamp


def test_hydra_run_dir_uses_job_id(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "9001")
    monkeypatch.delenv("NI_RUN_ID", raising=False)
    cfg = compose_config("train", [*tiny_overrides(tmp_path)])
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        hcfg = compose("train", overrides=tiny_overrides(tmp_path), return_hydra_config=True)
    assert hcfg.hydra.run.dir.endswith("infill/runs/infill_baseline_9001")
    assert cfg.task.name == "infill"


def test_launcher_env_resolvers(monkeypatch):
    for name in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert (num_nodes(), devices_per_node()) == (2, 2)
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "3")
    monkeypatch.setenv("SLURM_TASKS_PER_NODE", "4(x3)")
    assert (num_nodes(), devices_per_node()) == (3, 4)


def test_keys_the_module_fills_in_are_refused(tmp_path):
    cfg = compose_config("train", [*tiny_overrides(tmp_path), "+model.net.in_frames=5"])
    with pytest.raises(ConfigSchemaError, match=r"^model\.net\.in_frames: is filled in by the framework"):
        validate_config(cfg, "train")


@pytest.mark.parametrize("launcher,target", [("local", "BasicLauncher"), ("slurm", "SlurmLauncher")])
def test_launchers_compose(launcher, target, tmp_path):
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}", "hparams_search=models_seeds", *tiny_overrides(tmp_path)],
                      return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.hydra.sweeper.params.model == "baseline,lstm,attention,lstm_attention"
