"""Checks the `ni-*` commands run on their config before any heavy import or input read.

Each raises a `UserError` subclass whose message starts with the key and the value as the
user wrote them (`output=../x.zarr`, never a resolved path) and ends with the fix.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from nowcast_infill.errors import (
    BadValueError,
    MissingInputError,
    OutputExistsError,
    OutputPathError,
)

# Files at the root of a Zarr store (v3, v2): a folder without one is not a store.
ZARR_ROOT_FILES = ("zarr.json", ".zgroup", ".zattrs", ".zarray")


def config_value(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=True)


def config_dict(node: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """A mapping node of a composed config as a plain dict, nested nodes plain too; its keys are
    the YAML / override keys, so strings."""
    plain = OmegaConf.to_container(node, resolve=resolve)
    assert isinstance(plain, dict), f"a {type(node).__name__} converted to {type(plain).__name__}, not a dict"
    return cast(dict[str, Any], plain)


def config_int(
    cfg: DictConfig, key: str, minimum: int | None = None, none_ok: bool = False, meaning: str = ""
) -> int | None:
    """`cfg.<key>` as an int >= `minimum` (None allowed when `none_ok`), else BadValueError."""
    value = config_value(cfg, key)
    if value is None and none_ok:
        return None
    bound = "" if minimum is None else f" >= {minimum}"
    extra = f" ({meaning})" if meaning else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValueError(f"{key}={value!r}: not an integer; set {key}=<integer{bound}>{extra}.")
    if minimum is not None and value < minimum:
        raise BadValueError(f"{key}={value}: must be{bound}; set {key}=<integer{bound}>{extra}.")
    return value


def config_float(cfg: DictConfig, key: str, low: float, high: float, low_open: bool = False) -> float:
    """`cfg.<key>` as a number within [low, high] ((low, high] when `low_open`), else BadValueError."""
    value = config_value(cfg, key)
    span = f"{'(' if low_open else '['}{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise BadValueError(f"{key}={value!r}: not a number; set {key}=<number in {span}>.")
    if value > high or value < low or (low_open and value == low):
        raise BadValueError(f"{key}={value}: outside {span}; set {key}=<number in {span}>.")
    return float(value)


def config_bool(cfg: DictConfig, key: str) -> bool:
    value = config_value(cfg, key)
    if not isinstance(value, bool):
        raise BadValueError(f"{key}={value!r}: not a boolean; set {key}=true or {key}=false.")
    return value


def existing_input(path_text: Any, key: str, what: str = "store", fix: str = "") -> Path:
    """`path_text` as a Path when it exists, else MissingInputError naming `key=path_text`."""
    if path_text is None or str(path_text) == "":
        raise MissingInputError(f"{key}: empty; pass {key}=<path of the {what}>.")
    path = Path(os.path.expanduser(str(path_text)))
    if not path.exists():
        raise MissingInputError(
            f"{key}={path_text}: no such {what}; {fix or f'check the path (relative to {os.getcwd()})'}."
        )
    return path


def is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any((path / name).exists() for name in ZARR_ROOT_FILES)


def writable_output_store(
    path_text: Any,
    key: str,
    inputs: Iterable[tuple[str, Any]] = (),
    if_store_exists: str = "append",
    overwrite_key: str | None = None,
) -> Path:
    """Check that the Zarr store `key=path_text` can be written, before any input is read.

    inputs: (key, path) pairs the output must not be (compared after resolving symlinks).
    if_store_exists: "append" (an existing store is added to or resumed), "refuse" (an
    existing store is an error naming `overwrite_key`), "overwrite" (it will be replaced).
    Refused: an output that is an input, an existing file or non-store folder (not
    empty), and a place where a file cannot be created. Nothing is created.
    """
    if path_text is None or str(path_text) == "":
        raise OutputPathError(f"{key}: empty; pass {key}=<NAME>.zarr.")
    path = Path(os.path.expanduser(str(path_text)))
    real = os.path.realpath(path)
    for input_key, input_text in inputs:
        if input_text is not None and os.path.realpath(os.path.expanduser(str(input_text))) == real:
            raise OutputPathError(
                f"{key}={path_text}: is the input {input_key}={input_text}; "
                f"write to a new path, e.g. {key}={_sibling(str(path_text))}."
            )
    if path.exists():
        if not path.is_dir():
            raise OutputPathError(f"{key}={path_text}: exists and is a file, not a Zarr store; choose another {key}=.")
        if is_zarr_store(path):
            if if_store_exists == "refuse":
                raise OutputExistsError(
                    f"{key}={path_text}: the store exists; pass {overwrite_key}=true to replace it "
                    f"or choose another {key}=."
                )
        elif any(path.iterdir()):
            raise OutputPathError(
                f"{key}={path_text}: exists and is a folder that is not a Zarr store (no zarr.json); "
                f"choose a path that does not exist yet, e.g. {key}={str(path_text).rstrip('/')}/new.zarr."
            )
        _probe_writable(path, key, path_text)
        return path
    _probe_writable(_nearest_existing(path), key, path_text)
    return path


def writable_output_dir(path_text: Any, key: str) -> Path:
    """Create the run folder `key=path_text` (as the command would) and check a file can be written in it."""
    path = Path(os.path.expanduser(str(path_text)))
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{key}={path_text}: exists and is a file, not a folder; choose another {key}=.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputPathError(
            f"{key}={path_text}: cannot be created ({err.strerror}); choose a writable folder with {key}=."
        ) from None
    _probe_writable(path, key, path_text)
    return path


def _probe_writable(folder: Path, key: str, path_text: Any) -> None:
    """Create and remove a file in `folder`: os.access says yes to root on read-only mounts."""
    if not folder.is_dir():
        raise OutputPathError(
            f"{key}={path_text}: {folder} is not a folder, so nothing can be created there; choose another {key}=."
        )
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ni-write-check-"):
            pass
    except OSError as err:
        raise OutputPathError(
            f"{key}={path_text}: cannot write in {folder} ({err.strerror}); choose a writable place with {key}=."
        ) from None


def _nearest_existing(path: Path) -> Path:
    # lexists: a dangling symlink is "there" (and not a folder, which the probe reports)
    for parent in (path, *path.parents):
        if os.path.lexists(parent):
            return parent
    return Path(".")


def _sibling(path_text: str) -> str:
    stem = path_text.rstrip("/")
    return stem[: -len(".zarr")] + "_out.zarr" if stem.endswith(".zarr") else stem + "_out.zarr"


def check_checkpoint(cfg: DictConfig, key: str = "ckpt_path") -> Path | None:
    """`cfg.<key>` as an existing file, None when unset; MissingInputError otherwise."""
    text = config_value(cfg, key)
    if text is None or text == "":
        return None
    path = Path(os.path.expanduser(str(text)))
    if not path.is_file():
        what = "is a folder, not a checkpoint file" if path.is_dir() else "no such checkpoint file"
        raise MissingInputError(
            f"{key}={text}: {what}; point it at a .ckpt written by ni-train (e.g. <run dir>/checkpoints/last.ckpt)."
        )
    return path


def check_run_inputs(cfg: DictConfig) -> None:
    """ni-train / ni-eval: the checkpoint and the data store named by the config exist."""
    check_checkpoint(cfg)
    stores = OmegaConf.select(cfg, "data.stores", default=None)
    named = [(f"data.stores[{i}]", s) for i, s in enumerate(stores)] if stores else []
    if not named:
        named = [("data.store", OmegaConf.select(cfg, "data.store", default=None))]
    for key, store in named:
        if store is not None:
            existing_input(
                store,
                key,
                "store",
                fix=f"write it with `ni-synth output={store}` (synthetic) or `ni-convert ... output={store}`, "
                f"or fix {key}=",
            )
