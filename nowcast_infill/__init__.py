"""nowcast_infill: radar precipitation infilling and nowcasting with PyTorch Lightning.

The Python API (nowcast_infill/api.py), for notebooks and scripts:

    from nowcast_infill import compose, train, evaluate, load_predictor

`compose(name, overrides)` builds the config of `ni-<name>`, `train(cfg)` / `evaluate(cfg)`
run it, `load_predictor(ckpt)` infills or nowcasts numpy arrays and xarray Datasets.
"""

__version__ = "0.1.0"

_API = ("compose", "train", "evaluate", "load_predictor", "Predictor")


def __getattr__(name: str):
    # Imported on first use: `import nowcast_infill` (every ni-* command) stays light.
    if name in _API:
        from nowcast_infill import api

        return getattr(api, name)
    raise AttributeError(f"module 'nowcast_infill' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
