"""Config helpers: OmegaConf resolvers, the job-wide run id, printing/saving the config tree."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from nowcast_infill.study import METRIC_DEFAULTS, VARIANTS
from nowcast_infill.utils.logging import current_rank, get_logger, rank_zero_print

log = get_logger(__name__)

# Launcher ids first: a NI_RUN_ID left in the environment by an earlier run in the same shell
# or process must not rename a Slurm or torchrun job.
_RUN_ID_ENV = ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "NI_RUN_ID")


def run_id() -> str:
    """An id that every rank of one job agrees on, used to name the run directory.

    Under `srun` every rank sees the same SLURM_JOB_ID (array jobs: job id + task id); under
    `torchrun` every node gets the same TORCHELASTIC_RUN_ID (`--rdzv-id`). Without a launcher a
    timestamp is taken and exported as NI_RUN_ID, so processes that Lightning's DDP launcher
    spawns from this one inherit it instead of reading the clock a second later.
    """
    for name in _RUN_ID_ENV:
        value = os.environ.get(name, "")
        if value and value != "none":
            if name == "SLURM_ARRAY_JOB_ID" and os.environ.get("SLURM_ARRAY_TASK_ID"):
                value = f"{value}_{os.environ['SLURM_ARRAY_TASK_ID']}"
            return value
    value = time.strftime("%Y-%m-%d_%H-%M-%S")
    if current_rank() == 0:
        os.environ["NI_RUN_ID"] = value
    return value


def _first_int(*names: str, default: int = 1) -> int:
    for name in names:
        value = os.environ.get(name, "")
        # Slurm writes repeated counts as "2(x3)"; the leading number is the per-node count.
        digits = value.split("(")[0].split(",")[0]
        if digits.isdigit():
            return int(digits)
    return default


def num_nodes() -> int:
    """Nodes of this job: Slurm's allocation, else torchrun's WORLD_SIZE / LOCAL_WORLD_SIZE, else 1."""
    if os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES"):
        return _first_int("SLURM_JOB_NUM_NODES", "SLURM_NNODES")
    world, local = _first_int("WORLD_SIZE", default=0), _first_int("LOCAL_WORLD_SIZE", default=0)
    return max(world // local, 1) if world and local else 1


def devices_per_node() -> int:
    """Processes (devices) per node: Slurm's tasks per node, else torchrun's LOCAL_WORLD_SIZE, else 1."""
    return _first_int("SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "LOCAL_WORLD_SIZE")


# A folder name stays well below the 255-byte limit of common file systems.
MAX_DIRNAME_BYTES = 150


# Characters a path may hold and still be passed back unquoted as a Hydra override value
# (`ni-eval ckpt_path=<sweep>/<job>/checkpoints/...`): no '=', ',', '+', brackets or spaces.
_DIRNAME_UNSAFE = re.compile(r"[^A-Za-z0-9._:@-]+")


def dirname(text: str) -> str:
    """A multirun job's folder name: its swept overrides ('model-lstm_seed-2') when the sweep
    made them known (SweepSummary callback), else `text` (hydra.job.override_dirname: every
    override but the excluded keys, with the same separators). Characters Hydra would not read
    back in an unquoted path become '-'; a name longer than MAX_DIRNAME_BYTES is cut and ends
    with a hash of the whole, so two long names still differ."""
    import hashlib

    from nowcast_infill.utils.results import multirun_swept_overrides, override_key

    swept = multirun_swept_overrides()
    if swept:
        text = "_".join(f"{override_key(o)}-{o.split('=', 1)[1]}" for o in swept)
    name = _DIRNAME_UNSAFE.sub("-", str(text or "")).strip("-") or "defaults"
    if len(name) <= MAX_DIRNAME_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return name[: MAX_DIRNAME_BYTES - 9] + "-" + digest


def sweep_group(default: str) -> str:
    """W&B group: the sweep this run belongs to (multirun id or Slurm array job id), else `default`."""
    from nowcast_infill.utils.results import sweep_id

    return sweep_id() or str(default)


def run_tags(tags, store: str | None = None) -> list[str]:
    """W&B tags: the configured ones, the data (the store's name), and the overrides this run got
    from its sweep; W&B refuses tags over 64 characters, so longer ones are cut."""
    from nowcast_infill.utils.results import swept_overrides

    out = [str(t) for t in (tags or [])]
    if store:
        out.append(f"data={Path(str(store)).stem}")
    out += [o.lstrip("+") for o in swept_overrides()]
    unique = list(dict.fromkeys(t[:64] for t in out))
    return unique


def run_label(run_name: str, seed) -> str:
    """W&B run name: `<run_name>[_<swept overrides other than model/seed>]_seed<seed>`."""
    from nowcast_infill.utils.results import swept_overrides, variant_suffix

    return f"{run_name}{variant_suffix(swept_overrides())}_seed{seed}"


# (path, modification time) -> name: a run's name is resolved several times, and reading a
# checkpoint costs its whole size; a checkpoint rewritten in place is read again.
_CKPT_MODEL_CACHE: dict[tuple[str, float], str] = {}


def checkpoint_model(ckpt_path, default: str) -> str:
    """The variant name (`hparams.name`) stored in the checkpoint at `ckpt_path`, else `default`.

    An unreadable path gives `default` here: ni-eval's own check then names the file."""
    if not ckpt_path:
        return str(default)
    try:
        key = (str(ckpt_path), os.path.getmtime(str(ckpt_path)))
    except OSError:
        return str(default)
    if key not in _CKPT_MODEL_CACHE:
        try:
            from nowcast_infill.checkpoint_io import read_checkpoint

            name = read_checkpoint(key[0])["hyper_parameters"].get("name")
        except Exception:  # noqa: BLE001  (reported by ni-eval's checkpoint check, naming the file)
            return str(default)
        _CKPT_MODEL_CACHE[key] = str(name) if name else str(default)
    return _CKPT_MODEL_CACHE[key]


def variants(form: str = "list") -> list[str] | str:
    """`${ni.variants:}`: the study's network variants (`nowcast_infill.study.VARIANTS`) as a list;
    `${ni.variants:csv}`: as "pconv,lstm,..." for a sweeper's `params` (a comma-separated choice);
    `${ni.variants:choices}`: as "pconv|lstm|..." for help texts."""
    separators = {"csv": ",", "choices": "|"}
    if form == "list":
        return list(VARIANTS)
    if form in separators:
        return separators[form].join(VARIANTS)
    raise ValueError(
        f"${{ni.variants:{form}}}: unknown form {form!r}; use ${{ni.variants:}} (a list), "
        "${ni.variants:csv} or ${ni.variants:choices}."
    )


def metric_defaults(key: str) -> list:
    """`${ni.metric_defaults:thresholds}` / `${ni.metric_defaults:fss_scales}`: the study's
    verification thresholds (mm/h) and FSS window sizes (px) from `nowcast_infill.study`."""
    if key not in METRIC_DEFAULTS:
        raise ValueError(f"${{ni.metric_defaults:{key}}}: unknown key {key!r}; valid: {', '.join(METRIC_DEFAULTS)}.")
    return list(METRIC_DEFAULTS[key])


# Deprecated names already reported in this process: one warning per name, however often
# the config is resolved.
_WARNED_ALIASES: set[tuple[str, str]] = set()


def deprecated_alias(group: str, old: str, new: str, value):
    """`${ni.deprecated_alias:model,baseline,pconv,pconv}` in an alias config (a file that only
    `defaults:` to the new one): log "model=baseline is now model=pconv" (once per process) when
    the key holding it is resolved, and give `value`, the new config's own value of that key."""
    if (group, old) not in _WARNED_ALIASES:
        _WARNED_ALIASES.add((group, old))
        log.warning(f"{group}={old} is now {group}={new}; the old name still works but will be removed.")
    return value


_RESOLVERS: dict[str, Callable[..., Any]] = {
    "ni.variants": variants,
    "ni.metric_defaults": metric_defaults,
    "ni.deprecated_alias": deprecated_alias,
    "ni.dirname": dirname,
    "ni.sweep_group": sweep_group,
    "ni.tags": run_tags,
    "ni.run_label": run_label,
    "ni.checkpoint_model": checkpoint_model,
}


def register_resolvers() -> None:
    """Register `${ni.run_id:}`, `${ni.num_nodes:}`, `${ni.devices_per_node:}` and the naming
    resolvers of `_RESOLVERS` (idempotent)."""
    if not OmegaConf.has_resolver("ni.run_id"):
        # use_cache: one value per process even if the config is resolved several times
        OmegaConf.register_new_resolver("ni.run_id", run_id, use_cache=True)
    if not OmegaConf.has_resolver("ni.num_nodes"):
        OmegaConf.register_new_resolver("ni.num_nodes", num_nodes)
    if not OmegaConf.has_resolver("ni.devices_per_node"):
        OmegaConf.register_new_resolver("ni.devices_per_node", devices_per_node)
    for name, function in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)


def print_config_tree(cfg: DictConfig, save_to: str | Path | None = None, resolve: bool = True) -> str:
    """Print the full composed config, one block per top-level group, on rank 0; save it as YAML.

    Returns the printed text (on every rank) so callers can log it elsewhere.
    """
    # A DictConfig's container is a dict; a Hydra config's keys are strings.
    container = cast(dict[str, Any], OmegaConf.to_container(cfg, resolve=resolve, throw_on_missing=False))
    blocks = []
    for key, value in container.items():
        body = (
            OmegaConf.to_yaml(OmegaConf.create({key: value}))
            if isinstance(value, (dict, list))
            else f"{key}: {value}\n"
        )
        blocks.append(body)
    text = "".join(blocks)
    rank_zero_print("----- configuration -----\n" + text + "-------------------------")
    if save_to is not None and current_rank() == 0:
        path = Path(save_to)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(OmegaConf.to_yaml(OmegaConf.create(container)))
    return text


# Where a run writes when no Hydra run names the folder: the same place as hydra.run.dir
# (conf/hydra/default.yaml).
DEFAULT_RUN_DIR = "${paths.log_dir}/${task.name}/runs/${run_name}_${ni.run_id:}"


def output_dir_outside_hydra(cfg: DictConfig, run_dir: str | None = None) -> None:
    """Outside a Hydra run (a config from `hydra.compose`, in a notebook or test), replace
    `paths.output_dir: ${hydra:runtime.output_dir}`, which only a running Hydra app can
    resolve ("HydraConfig was not set"), with `run_dir` (default: the folder `ni-train`
    would use). An explicit `paths.output_dir` is kept; inside a Hydra run nothing changes."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    if HydraConfig.initialized() or "paths" not in cfg or "output_dir" not in cfg.paths:
        return
    paths = cast(dict[str, Any], OmegaConf.to_container(cfg.paths, resolve=False))  # cfg.paths is a DictConfig
    raw = paths.get("output_dir")
    if isinstance(raw, str) and "${hydra:" in raw:
        with open_dict(cfg):
            cfg.paths.output_dir = run_dir or DEFAULT_RUN_DIR


def _config_dir() -> str:
    """The Hydra config folder: `nowcast_infill/conf` (a copy in an installed wheel, a symlink
    to the repository's conf/ in a checkout), else the checkout's top-level conf/ (a checkout
    where the symlink did not survive, e.g. on a filesystem without symlinks)."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "conf", package.parent / "conf"):
        if (folder / "train.yaml").is_file():
            return str(folder)
    raise FileNotFoundError(
        f"no Hydra configs in {package / 'conf'} or {package.parent / 'conf'}: reinstall nowcast_infill"
    )


# Absolute: a relative `config_path` inside an installed console script is taken by Hydra as
# a Python package named `conf`, which does not exist.
CONFIG_DIR = _config_dir()


def compose_config(name: str, overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """conf/<name>.yaml with `overrides`, as `ni-<name>` would compose it.

    Inside a running Hydra app (`ni-demo` composing the runs it starts) Hydra's search path
    is already set up and is used as it is; elsewhere (notebook, script, test) the package's
    config folder is opened for this one composition.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return compose(name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=list(overrides), return_hydra_config=return_hydra_config)
