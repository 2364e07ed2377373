"""Checks of the composed train/eval configs: typos and wrong types fail before anything runs.

(Not to be confused with `nowcast_infill.schema`, the metadata schema of the radar stores.)

Two layers, both raising `ConfigSchemaError` whose message names the full key and the fix:

1. Dataclass schemas for the nodes the framework itself reads (top level, `task`, `paths`),
   checked by merging into `OmegaConf.structured(...)` (unknown key or wrong type -> error).
2. Every node with a `_target_` is checked against the target's signature: an unknown key is
   refused unless the target takes `**kwargs`, and a value whose type contradicts the
   annotation (or the default's type when unannotated) is refused. This covers the Trainer,
   the DataModule, callbacks, loggers, the network, the optimiser and the scheduler without
   copying their argument lists here.

Between the two, `VALUE_RULES` bounds the numbers whose wrong value would otherwise fail
deep inside a run under another name (e.g. `data.batch_size=-1` as "per_device_batch").
Everything but layer 2 runs before torch / Lightning are imported, so a wrong value fails
in about a second.

`validate_config(cfg, kind)` runs them all on the resolved config; `validate_values` and
`validate_targets` are its light and heavy halves, for checks to run in between.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import types
import typing
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nowcast_infill.errors import BadValueError, ConfigSchemaError
from nowcast_infill.pipeline.inputs import config_dict
from nowcast_infill.tasks import get_task

__all__ = [
    "ConfigSchemaError",
    "validate_config",
    "validate_values",
    "validate_targets",
    "check_target_node",
    "check_values",
    "VALUE_RULES",
]


# ----------------------------------------------------------------------------- dataclasses
@dataclass
class TaskSchema:
    name: str = "infill"
    past: int = 0
    future: int = 0
    context: int = 0
    in_frames: int = 1
    out_frames: int = 1
    loss: Any = None


@dataclass
class PathsSchema:
    data_dir: str = "data"
    log_dir: str = "outputs"
    output_dir: str = "outputs"


@dataclass
class CommonSchema:
    run_name: str = "run"
    seed: int = 42
    ckpt_path: str | None = None
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    task: TaskSchema = field(default_factory=TaskSchema)
    paths: PathsSchema = field(default_factory=PathsSchema)
    # groups validated through their _target_ (layer 2)
    data: Any = None
    masks: Any = None
    model: Any = None
    trainer: Any = None
    callbacks: Any = None
    logger: Any = None
    hydra: Any = None


@dataclass
class TrainSchema(CommonSchema):
    fit: bool = True
    test: bool = True
    optimized_metric: str = "val/loss"
    optimized_metric_mode: str = "min"


@dataclass
class EvalSchema(CommonSchema):
    split: str = "test"
    n_figures: int = 4


SCHEMAS = {"train": TrainSchema, "eval": EvalSchema}


# --------------------------------------------------------------------------- validation
def validate_config(cfg: DictConfig, kind: str = "train") -> None:
    """Raise ConfigSchemaError naming the first bad key of `cfg` (a composed train/eval config)."""
    validate_targets(validate_values(cfg, kind))


def validate_values(cfg: DictConfig, kind: str = "train") -> dict[str, Any]:
    """The checks that import nothing heavy (top-level keys, task, VALUE_RULES); returns the
    resolved config as plain containers, for `validate_targets`."""
    if kind not in SCHEMAS:
        raise ValueError(f"kind must be one of {sorted(SCHEMAS)}, got {kind!r}")
    try:
        plain = config_dict(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigSchemaError(f"{key}: cannot be resolved ({err.msg if hasattr(err, 'msg') else err}).") from None
    plain.pop("hydra", None)
    _check_dataclass(plain, SCHEMAS[kind])
    _check_task(plain.get("task") or {})
    check_values(plain, VALUE_RULES)
    return plain


def validate_targets(plain: dict) -> None:
    """Layer 2: every `_target_` node against its target's signature (imports the targets)."""
    for group in ("data", "trainer"):
        if plain.get(group) is not None:
            check_target_node(plain[group], group)
    for group in ("callbacks", "logger"):
        for name, node in (plain.get(group) or {}).items():
            if node is not None:
                check_target_node(node, f"{group}.{name}")
    model = plain.get("model")
    if model is not None:
        _check_model(model)


def _check_dataclass(plain: dict, schema: type) -> None:
    top_fields = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(plain) - top_fields)
    if unknown:
        raise ConfigSchemaError(
            f"{unknown[0]}: unknown top-level key (valid: {', '.join(sorted(top_fields))}); check the spelling "
            "or remove the `+` override."
        )
    subset = {k: v for k, v in plain.items() if k in ("task", "paths") or not _is_group(schema, k)}
    try:
        OmegaConf.merge(OmegaConf.structured(schema), subset)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigSchemaError(f"{key}: {_first_line(err)}; set {key}= to a value of that type.") from None


def _is_group(schema: type, name: str) -> bool:
    types_ = {f.name: f.type for f in dataclasses.fields(schema)}
    return types_.get(name) in (Any, "Any")


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]


def _check_task(task: Mapping) -> None:
    """`task.name` and `task.in_frames`/`out_frames` against the task's rule (owned by nowcast_infill.tasks)."""
    try:
        rule = get_task(
            task.get("name", ""), past=task.get("past"), future=task.get("future"), context=task.get("context")
        )
        rule.check_frames(task.get("in_frames", -1), task.get("out_frames", -1), where="task")
    except BadValueError as err:
        raise ConfigSchemaError(str(err)) from None


# key -> (minimum, maximum, integer?, null allowed?); checked when the key is present.
VALUE_RULES: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "data.batch_size": (1, None, True, False),
    "data.num_workers": (0, None, True, False),
    "data.crop_size": (1, None, True, True),
    "data.eval_tile": (1, None, True, True),
    "data.min_valid_fraction": (0, 1, False, False),
    "data.input_hole_prob": (0, 1, False, False),
    "data.crop_attempts": (1, None, True, False),
    "data.sampling_floor": (0, 1, False, False),
    "data.stats_wait_s": (0, None, False, False),
    "trainer.max_epochs": (-1, None, True, True),
    "trainer.max_steps": (-1, None, True, False),
    "trainer.accumulate_grad_batches": (1, None, True, False),
    "trainer.num_nodes": (1, None, True, False),
    "trainer.log_every_n_steps": (1, None, True, False),
    "n_figures": (0, None, True, False),
}


def check_values(plain: Mapping, rules: Mapping[str, tuple]) -> None:
    """Raise ConfigSchemaError for the first key of `rules` whose value is of the wrong kind or out of range."""
    for key, (low, high, integer, nullable) in rules.items():
        node, found = plain, True
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                found = False
                break
            node = node[part]
        if not found or (node is None and nullable):
            continue
        bounds = [f">= {low}" if low is not None else "", f"<= {high}" if high is not None else ""]
        wanted = " ".join(["integer" if integer else "number", " and ".join(b for b in bounds if b)]).strip()
        wanted += " or null" if nullable else ""
        is_number = isinstance(node, (int, float)) and not isinstance(node, bool)
        if not is_number or (integer and not isinstance(node, int)) or node != node:  # node != node: NaN
            raise ConfigSchemaError(f"{key}: {node!r} is not a valid {wanted}; set {key}=<{wanted}>.")
        if (low is not None and node < low) or (high is not None and node > high):
            raise ConfigSchemaError(f"{key}: {node!r} is out of range; set {key}=<{wanted}>.")


def _check_model(model: Mapping) -> None:
    from nowcast_infill.training.lr import LR_SCALING_RULES, OPTIMIZER_RESERVED, SCHEDULER_RESERVED

    model = dict(model)
    if model.get("aux_channels", 0) is None:
        # null = taken from the DataModule's aux fields when the module is built
        model.pop("aux_channels")
    # network | classical (conf/model/_network.yaml, _classical.yaml): read by the pipeline to
    # pick the path, not an argument of the module
    kind = model.pop("kind", None)
    if kind not in ("network", "classical"):
        raise ConfigSchemaError(
            f"model.kind: {kind!r}; a model config sets kind: network or kind: classical "
            "(extend conf/model/_network.yaml or _classical.yaml)."
        )
    check_target_node(model, "model", skip_nested=True)
    completed = {"in_frames", "out_frames", "aux_channels"}
    if "net" in model and isinstance(model["net"], Mapping) and "_target_" in model["net"]:
        check_target_node(model["net"], "model.net", provided=completed)
    if isinstance(model.get("optimizer"), Mapping):
        check_target_node(model["optimizer"], "model.optimizer", provided={"params"}, reserved=set(OPTIMIZER_RESERVED))
        scaling = model["optimizer"].get("lr_scaling", "none")
        if scaling not in LR_SCALING_RULES:
            raise ConfigSchemaError(
                f"model.optimizer.lr_scaling: {scaling!r} is not one of {', '.join(LR_SCALING_RULES)}."
            )
    if isinstance(model.get("scheduler"), Mapping):
        check_target_node(
            model["scheduler"], "model.scheduler", provided={"optimizer"}, reserved=set(SCHEDULER_RESERVED)
        )


# ----------------------------------------------------------------- target signatures
_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def _resolve_target(node: Mapping, where: str):
    from hydra.utils import get_object

    try:
        return get_object(node["_target_"])
    except Exception as err:  # ImportError, AttributeError, ValueError from Hydra
        raise ConfigSchemaError(f"{where}._target_: cannot import {node['_target_']!r} ({_first_line(err)}).") from None


def check_target_node(
    node: Mapping,
    where: str,
    provided: AbstractSet[str] = frozenset(),
    reserved: AbstractSet[str] = frozenset(),
    skip_nested: bool = False,
) -> None:
    """Check the keys and value types of an instantiable node against its target's signature.

    `provided`: arguments the code passes at instantiation, so the config must not set them.
    `reserved`: keys the framework pops before instantiating. Nested nodes with a `_target_`
    are checked recursively.
    """
    if "_target_" not in node:
        raise ConfigSchemaError(f"{where}: has no _target_; it must name the class or function to build.")
    target = _resolve_target(node, where)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    params = signature.parameters
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    hints = _type_hints(target)
    for key, value in node.items():
        if key in _HYDRA_KEYS or key in reserved:
            continue
        full = f"{where}.{key}"
        if key in provided:
            raise ConfigSchemaError(
                f"{full}: is filled in by the framework (from task/data); remove it from the config."
            )
        if key not in params:
            if takes_kwargs:
                continue
            close = _close_match(key, [p for p in params if p not in ("self", "args", "kwargs")])
            hint = f"; did you mean '{close}'?" if close else ""
            raise ConfigSchemaError(f"{full}: unknown key, {node['_target_']} takes no argument '{key}'{hint}")
        if isinstance(value, Mapping) and "_target_" in value:
            if not skip_nested:
                check_target_node(value, full)
            continue
        expected = hints.get(key, inspect.Parameter.empty)
        if expected is inspect.Parameter.empty:
            default = params[key].default
            if isinstance(default, (bool, int, float, str)) and default is not None:
                expected = type(default)
            else:
                continue
        if not _matches(value, expected):
            raise ConfigSchemaError(
                f"{full}: {value!r} ({type(value).__name__}) is not a valid {_type_name(expected)} "
                f"for {node['_target_']}; fix the value."
            )


def _type_hints(target) -> dict:
    obj = target.__init__ if inspect.isclass(target) else target
    try:
        return typing.get_type_hints(obj)
    except Exception:  # unresolvable forward references: fall back to defaults' types
        return {}


def _close_match(key: str, names: Sequence[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(key, list(names), n=1, cutoff=0.75)
    return found[0] if found else None


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _matches(value, tp) -> bool:
    """Conservative check: False only when `value` clearly cannot be `tp`."""
    if tp is Any or tp is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    check = origin or tp
    if check in (list, tuple, Sequence, typing.Sequence) or check is getattr(typing, "List", None):
        return isinstance(value, (list, tuple, ListConfig))
    if check in (dict, Mapping, typing.Mapping):
        return isinstance(value, (dict, Mapping, DictConfig))
    if inspect.isclass(tp) and isinstance(value, str) and tp is not object:
        # a string can be a path but not e.g. a Tensor
        return issubclass(tp, (str, os.PathLike))
    return True  # other classes, protocols, callables: not judged here
