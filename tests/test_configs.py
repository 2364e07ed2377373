"""Config tree: every experiment composes and validates; typos and wrong types fail naming the key."""

from __future__ import annotations

import inspect
import math
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from nowcast_infill import registry
from nowcast_infill.baselines import baseline_task
from nowcast_infill.cli.errors import user_error_message
from nowcast_infill.pipeline.config_checks import ConfigSchemaError, validate_config
from nowcast_infill.study import FSS_SCALES_PX, METRIC_DEFAULTS, METRIC_THRESHOLDS_MM_H, VARIANT_NET_SWITCHES, VARIANTS
from nowcast_infill.utils.config import devices_per_node, num_nodes, register_resolvers, run_id
from nowcast_infill.training.lr import global_batch_size, scaled_learning_rate, warmup_cosine_schedule

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
TASKS = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
# the selectable model configs (files starting with "_" are the bases they extend)
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if not p.stem.startswith("_"))
# the reported runs: one per variant and task
STUDY_EXPERIMENTS = [f"{task}_{variant}" for task in TASKS for variant in VARIANTS]
# deprecated names kept working (conf/model/baseline.yaml, conf/experiment/*_baseline.yaml)
ALIASES = {"model": {"baseline": "pconv"}, "experiment": {f"{task}_baseline": f"{task}_pconv" for task in TASKS}}
CONTRACT_TARGETS = {"network": "nowcast_infill.training.module.RadarModule",
                    "classical": "nowcast_infill.evaluation.classical.ClassicalModule"}
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


def compose_with_choices(name: str, overrides: list[str]):
    """The composed config and Hydra's record of the option each group got (hydra.runtime.choices)."""
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    return cfg, cfg.hydra.runtime.choices


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_to_an_existing_model_and_task(experiment, tmp_path):
    cfg, choices = compose_with_choices("train", [f"experiment={experiment}", *tiny_overrides(tmp_path)])
    assert (CONF_DIR / "model" / f"{choices.model}.yaml").is_file() and choices.model in MODELS
    assert (CONF_DIR / "task" / f"{choices.task}.yaml").is_file() and cfg.task.name == choices.task
    assert cfg.model.kind == "network" and cfg.model.name in VARIANTS, "a reported run trains one of the study's variants"
    canonical = ALIASES["experiment"].get(experiment, experiment)
    assert canonical == f"{cfg.task.name}_{cfg.model.name}", "an experiment is named <task>_<variant>"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_has_a_model_config_and_an_experiment_per_task(variant, tmp_path):
    assert (CONF_DIR / "model" / f"{variant}.yaml").is_file()
    for task in TASKS:
        assert f"{task}_{variant}" in EXPERIMENTS, f"conf/experiment/{task}_{variant}.yaml is missing"
    cfg = compose_config("train", [f"model={variant}", *tiny_overrides(tmp_path)])
    assert cfg.model.name == variant
    assert {key: cfg.model.net[key] for key in VARIANT_NET_SWITCHES[variant]} == VARIANT_NET_SWITCHES[variant]


def test_variant_lists_in_configs_come_from_the_study(tmp_path, monkeypatch):
    """ni-demo's variants and the models_seeds sweep follow nowcast_infill.study.VARIANTS: a
    variant added there is trained and swept without another edit."""
    for variants in (VARIANTS, ("pconv", "lstm")):
        monkeypatch.setattr("nowcast_infill.utils.config.VARIANTS", variants)
        demo = compose_config("demo", [f"paths.output_dir={tmp_path}"])
        assert list(demo.variants) == list(variants)
        cfg, _ = compose_with_choices("train", ["hparams_search=models_seeds", *tiny_overrides(tmp_path)])
        assert cfg.hydra.sweeper.params.model == ",".join(variants)


def test_metric_thresholds_are_defined_once(tmp_path, monkeypatch):
    """Every model config and RadarMetrics' defaults take the study's thresholds and FSS scales."""
    from nowcast_infill.metrics.radar_metrics import RadarMetrics

    defaults = inspect.signature(RadarMetrics).parameters
    assert (defaults["thresholds"].default, defaults["fss_scales"].default) == (METRIC_THRESHOLDS_MM_H, FSS_SCALES_PX)
    monkeypatch.setattr("nowcast_infill.utils.config.METRIC_DEFAULTS", {"thresholds": [2.0], "fss_scales": [3]})
    for model in ("pconv", "laplace"):
        cfg = compose_config("eval", [f"model={model}", *tiny_overrides(tmp_path)])
        assert OmegaConf.to_container(cfg.model.metrics, resolve=True) == {"thresholds": [2.0], "fss_scales": [3]}
    cfg = compose_config("eval", ["model=nearest", "model.metrics.thresholds=[0.5]", *tiny_overrides(tmp_path)])
    assert list(cfg.model.metrics.thresholds) == [0.5]


@pytest.mark.parametrize("model", MODELS)
def test_every_model_config_has_a_kind_and_the_contract_target(model, tmp_path):
    task = baseline_task(model) if model in registry.method_names("classical") else "infill"
    cfg = compose_config("eval", [f"model={model}", f"task={task}", *tiny_overrides(tmp_path)])
    assert cfg.model.kind in CONTRACT_TARGETS and cfg.model._target_ == CONTRACT_TARGETS[cfg.model.kind]
    assert (cfg.model.kind == "classical") == (model in registry.method_names("classical"))
    assert OmegaConf.to_container(cfg.model.metrics, resolve=True) == METRIC_DEFAULTS
    assert (cfg.model.in_frames, cfg.model.out_frames) == (cfg.task.in_frames, cfg.task.out_frames)
    if cfg.model.kind == "network":
        assert "_target_" in cfg.model.net
    else:
        assert "net" not in cfg.model and cfg.model.name == model


def test_a_model_config_without_its_kind_is_refused_naming_the_bases(tmp_path):
    cfg = compose_config("eval", ["model=nearest", "~model.kind", *tiny_overrides(tmp_path)])
    with pytest.raises(ConfigSchemaError, match=r"^model\.kind: None; .*_network\.yaml or _classical\.yaml"):
        validate_config(cfg, "eval")


def test_a_new_network_config_inherits_no_unet_keys(tmp_path):
    """conf/model/_network.yaml carries what every network shares; U-Net switches stay in pconv.yaml."""
    extra = tmp_path / "extra_conf"
    (extra / "model").mkdir(parents=True)
    (extra / "model" / "tiny.yaml").write_text(
        "defaults:\n  - _network\n  - _self_\nname: tiny\nnet:\n  _target_: my_pkg.TinyNet\n  _partial_: true\n")
    cfg = compose_config("train", [f"hydra.searchpath=[file://{extra}]", "model=tiny", *tiny_overrides(tmp_path)])
    assert OmegaConf.to_container(cfg.model.net) == {"_target_": "my_pkg.TinyNet", "_partial_": True}
    assert cfg.model.kind == "network" and cfg.model._target_ == CONTRACT_TARGETS["network"]
    unet = compose_config("train", ["model=pconv", *tiny_overrides(tmp_path)])
    assert set(cfg.model) == set(unet.model), "a network shares every model key but the net's own"


@pytest.mark.parametrize("group,old", [(group, old) for group, names in ALIASES.items() for old in names])
def test_deprecated_names_compose_as_the_new_ones_and_warn_once(group, old, tmp_path, caplog):
    from nowcast_infill.utils import config as config_utils

    new = ALIASES[group][old]
    config_utils._WARNED_ALIASES.clear()
    expected = OmegaConf.to_container(compose_config("train", [f"{group}={new}", *tiny_overrides(tmp_path)]), resolve=True)
    assert not caplog.records
    with caplog.at_level("WARNING"):
        for _ in range(2):  # a run resolves its config several times: one warning
            cfg = compose_config("train", [f"{group}={old}", *tiny_overrides(tmp_path)])
            assert OmegaConf.to_container(cfg, resolve=True) == expected
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [f"{group}={old} is now {group}={new}"]


@pytest.mark.parametrize("experiment", STUDY_EXPERIMENTS)
def test_experiment_composes_and_validates(experiment, tmp_path):
    cfg = compose_config("train", [f"experiment={experiment}", *tiny_overrides(tmp_path)])
    validate_config(cfg, "train")
    task, model = experiment.split("_", 1)
    assert cfg.task.name == task and cfg.model.name == model
    assert cfg.model.in_frames == cfg.task.in_frames and cfg.model.out_frames == cfg.task.out_frames
    assert cfg.logger.csv.save_dir == str(tmp_path / "run")


@pytest.mark.parametrize("baseline,task", [("nearest", "infill"), ("biharmonic", "infill"), ("persistence", "nowcast"), ("sprog", "nowcast")])
def test_eval_baseline_configs_validate(baseline, task, tmp_path):
    cfg = compose_config("eval", [f"task={task}", f"model={baseline}", *tiny_overrides(tmp_path)])
    validate_config(cfg, "eval")
    assert cfg.model.name == baseline


def test_typo_in_a_key_is_one_line_naming_it_and_the_fix(tmp_path):
    """Hydra refuses `trainer.max_epoch=1` at compose with a multi-line report; the ni-* commands
    turn it (nowcast_infill/cli/errors.py) into one line that names the key as written and the fix."""
    with pytest.raises(ConfigCompositionException) as caught:
        compose_config("train", ["trainer.max_epoch=1", *tiny_overrides(tmp_path)])
    line = user_error_message(caught.value)
    assert line is not None and "\n" not in line
    assert "'trainer.max_epoch'" in line and "+trainer.max_epoch=1" in line


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
    from nowcast_infill.training.lr import warmup_steps_for

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
    assert hcfg.hydra.run.dir.endswith("infill/runs/infill_pconv_9001")
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
    assert cfg.hydra.sweeper.params.model == ",".join(VARIANTS)
