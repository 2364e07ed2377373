"""Framework helpers shared by the entry points and the LightningModules.

The names below are imported on first use (PEP 562): `nowcast_infill.utils.config`, which
every `ni-*` command needs before it can check its config, must not pull in torch.
"""

import importlib

_HOME = {
    "get_logger": "logging",
    "rank_zero_print": "logging",
    "print_config_tree": "config",
    "register_resolvers": "config",
    "run_id": "config",
    "global_batch_size": "lr",
    "scaled_learning_rate": "lr",
    "warmup_cosine_schedule": "lr",
    "instantiate_callbacks": "instantiate",
    "instantiate_loggers": "instantiate",
    "split_reserved": "instantiate",
}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)


__all__ = [
    "get_logger",
    "rank_zero_print",
    "print_config_tree",
    "register_resolvers",
    "run_id",
    "global_batch_size",
    "scaled_learning_rate",
    "warmup_cosine_schedule",
    "instantiate_callbacks",
    "instantiate_loggers",
    "split_reserved",
]
