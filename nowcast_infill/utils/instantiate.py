"""Instantiation helpers for config nodes that carry keys meant for us, not for the target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf


def to_plain(node: Any) -> Any:
    """DictConfig/ListConfig -> resolved plain dict/list (checkpoint-safe), also inside plain
    dicts, lists and tuples; other values unchanged."""
    if isinstance(node, DictConfig) or OmegaConf.is_list(node):
        return OmegaConf.to_container(node, resolve=True)
    if isinstance(node, Mapping):
        return {k: to_plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [to_plain(v) for v in node]
    return node


def split_reserved(node: Mapping | None, reserved: Mapping[str, Any]) -> tuple[dict, dict]:
    """Split `node` into (target kwargs, our keys); `reserved` maps our keys to their defaults.

    E.g. the optimizer node carries `lr_scaling` for the framework next to `lr` for AdamW.
    """
    plain = dict(to_plain(node) or {})
    ours = {key: plain.pop(key, default) for key, default in reserved.items()}
    return plain, ours


def instantiate_callbacks(cfg: DictConfig | None) -> list:
    """One Lightning callback per child node with a `_target_`; nodes set to null are skipped."""
    return _instantiate_children(cfg, "callbacks")


def instantiate_loggers(cfg: DictConfig | None) -> list:
    """One Lightning logger per child node with a `_target_`; nodes set to null are skipped."""
    loggers = _instantiate_children(cfg, "logger")
    for logger in loggers:
        init = getattr(logger, "_wandb_init", None)
        if isinstance(init, dict) and init.get("anonymous") is None:
            # Lightning's WandbLogger passes anonymous=None, which wandb >= 0.19 answers with
            # "The anonymous setting has no effect" in every run; left out, nothing changes.
            init.pop("anonymous", None)
    return loggers


def without_logger_only_callbacks(callbacks: list, loggers: list) -> list:
    """`callbacks` less those that only feed a logger (LearningRateMonitor) when there is none:
    Lightning refuses a LearningRateMonitor without a logger, and `logger=none` is a valid choice."""
    if loggers:
        return callbacks
    from lightning.pytorch.callbacks import LearningRateMonitor

    return [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]


def _instantiate_children(cfg: DictConfig | None, group: str) -> list:
    if not cfg:
        return []
    if not isinstance(cfg, (DictConfig, Mapping)):
        raise TypeError(f"config group '{group}' must be a mapping of name -> node, got {type(cfg).__name__}")
    objects = []
    for key, node in cfg.items():
        name = str(key)  # a config key may be an int or an enum: named as the user wrote it
        if node is None:
            continue
        if not isinstance(node, (DictConfig, Mapping)) or "_target_" not in node:
            raise ValueError(
                f"'{group}.{name}' has no _target_; every entry of '{group}' must be an instantiable node "
                f"(or null to switch it off)."
            )
        objects.append(hydra.utils.instantiate(node))
    return objects


def finish_loggers(loggers) -> None:
    """Close loggers that keep a run open (W&B), so the next run in this process starts its own
    run instead of silently appending to the previous one."""
    for logger in loggers or []:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            if wandb.run is not None:
                wandb.finish()
        else:
            finalize = getattr(logger, "finalize", None)
            if callable(finalize):
                finalize("success")
