"""What each `ni-*` command does, as plain functions of a composed config that return their results.

    train(cfg)     fit, then test the best checkpoint (ni-train)       pipeline.fitting
    evaluate(cfg)  score a checkpoint or a classical method (ni-eval)  pipeline.scoring
    infill(cfg)    infill an archive store (ni-infill)                 pipeline.products
    nowcast(cfg)   write a nowcast product (ni-nowcast)                pipeline.products
    convert(cfg)   radar files -> store (ni-convert)                   pipeline.stores
    synth(cfg)     the synthetic store (ni-synth)                      pipeline.stores
    demo(cfg)      the whole chain on synthetic data (ni-demo)         pipeline.end_to_end
    compare(paths) one table over runs (ni-compare)                    pipeline.summary

Each is imported on first use (`from nowcast_infill.pipeline import infill` loads only
pipeline.products): `ni-convert` and `ni-synth` must not pay for torch, which the training
modules bring, and each function imports its heavy libraries after its config checks, so a
mistake on the command line is reported in about a second.
"""

import importlib
from typing import Any

# name -> module of nowcast_infill.pipeline that defines it
_MODULES = {
    "train": "fitting",
    "evaluate": "scoring",
    "infill": "products",
    "nowcast": "products",
    "convert": "stores",
    "synth": "stores",
    "demo": "end_to_end",
    "compare": "summary",
}

__all__ = list(_MODULES)


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
