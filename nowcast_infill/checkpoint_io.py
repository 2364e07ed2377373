"""Checkpoints are loaded as data, never as code.

A `.ckpt` is a pickle: loaded with `torch.load(weights_only=False)` it can call any
function it names (`os.system`, `open`, ...) while it is read. Every path that reads a
checkpoint -- `ni-train` resuming (`ckpt_path=`), `ni-eval`, `ni-infill`, `ni-nowcast`,
the results scripts (through `ni-eval`) -- therefore loads it weights-only:

* `read_checkpoint(path)` loads it with `torch.load(weights_only=True)` first and turns a
  refusal into a `CheckpointError` naming the file (as the user wrote it) and what was
  refused, before Lightning ever sees the file;
* Lightning's own loads get `weights_only=True` as well (`Trainer.fit/validate/test`,
  `LightningModule.load_from_checkpoint`), so the environment variable
  `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD` cannot turn them back into full unpickling.

Weights-only unpickling accepts tensors and storages, dtypes, devices, `OrderedDict`
and the builtin containers and scalars; any other class or function must be on an
allow-list. Ours, `CHECKPOINT_SAFE_GLOBALS`, is empty on purpose: `ni-train` writes the
hyperparameters, the DataModule state (the normaliser), optimiser, scheduler, loop and
callback states as plain containers (see `utils.instantiate.to_plain`), and
tests/test_checkpoint_safety.py checks that the checkpoint of every variant and task
needs nothing more. Prefer making a new piece of checkpoint state plain over adding a
type here: an allow-listed class is trusted by every load path in the process.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from nowcast_infill.errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint cannot be used; the message names the file as the user wrote it, and the fix."""


# Classes / functions a checkpoint may name beyond torch's own weights-only set. Empty:
# see the module docstring. Registered process-wide so that Lightning's loads see the
# same list as `read_checkpoint`.
CHECKPOINT_SAFE_GLOBALS: tuple = ()
torch.serialization.add_safe_globals(list(CHECKPOINT_SAFE_GLOBALS))

# The global named in torch's refusal ("Unsupported global: GLOBAL posix.system was not ...").
_REFUSED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", re.DOTALL)


def _refused_globals(path: str | Path, err: Exception) -> list[str]:
    """The classes / functions the pickle names that weights-only loading refuses (static scan, nothing runs)."""
    try:
        found = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # not a zip checkpoint: fall back to the one torch stopped at
        found = []
    return found or _REFUSED_GLOBAL.findall(str(err))


def _one_line(err: Exception) -> str:
    text = str(err)
    match = _UNPICKLER_ERROR.search(text)
    text = match.group(1) if match else (text.strip().splitlines() or [type(err).__name__])[0]
    return " ".join(text.split())[:200]


def read_checkpoint(path: str | Path) -> dict:
    """The Lightning checkpoint at `path`, loaded weights-only onto the CPU.

    Raises CheckpointError naming `path` as given when the file is not a checkpoint, is
    not a Lightning checkpoint of a network (no `state_dict` / `hyper_parameters`), or
    names a class or function outside the weights-only allow-list (it is then never run).
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_globals(path, err)
        if refused:
            raise CheckpointError(
                f"{path}: refused to load: it names {', '.join(refused)}, which weights-only loading does not run and a "
                "checkpoint written by ni-train never holds; pass a .ckpt written by ni-train (do not load this file "
                "with weights_only=False unless you trust its source)."
            ) from None
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint ({_one_line(err)}); pass a .ckpt written by ni-train."
        ) from None
    except Exception as err:  # torch raises several types for a file that is not a checkpoint
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint ({_one_line(err)}); pass a .ckpt written by ni-train."
        ) from None
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(
            f"{path}: not a Lightning checkpoint of a RadarModule (no state_dict/hyper_parameters); "
            "pass a .ckpt written by ni-train."
        )
    return dict(ckpt)


# ----------------------------------------------------------------------------- what a checkpoint says
# `RadarModule.on_save_checkpoint` writes this payload (plain types only); checkpoints of
# earlier versions lack it and are read from the old layout (see `read_trained_model`).
PAYLOAD_KEY = "nowcast_infill"
PAYLOAD_FORMAT = 2
# The old layout: Lightning's saved DataModule state under the DataModule's class name, and
# the run's config.yaml two folders up (`<run>/checkpoints/x.ckpt` -> `<run>/config.yaml`).
LEGACY_DATAMODULE_KEY = "RadarDataModule"
LEGACY_FORMAT = 1
RETRAIN_FIX = "retrain it with this version of ni-train, or pass a .ckpt written by ni-train"


@dataclass(frozen=True)
class TrainedTask:
    """The task a network was trained for: its name and frame counts."""

    name: str
    in_frames: int
    out_frames: int


@dataclass
class TrainedModel:
    """What a checkpoint written by `ni-train` says about its network, whatever its layout.

    `format` is 2 for the `checkpoint["nowcast_infill"]` payload, 1 for the old layout.
    `normalizer_state` is a `Normalizer.state_dict()`, None when an old checkpoint holds
    none; `aux_names` the auxiliary fields in channel order, None when an old checkpoint
    does not record them. `run_config` is the old layout's run config.yaml (None otherwise).
    """

    path: str
    format: int
    task: TrainedTask
    normalizer_state: dict | None
    aux_names: list[str] | None
    model_name: str
    hyper_parameters: dict
    checkpoint: dict = field(repr=False)
    run_config: dict | None = field(default=None, repr=False)

    def load_module(self, module_class):
        """`module_class.load_from_checkpoint` on the CPU, weights-only (the file was vetted when read)."""
        return module_class.load_from_checkpoint(self.path, map_location="cpu", weights_only=True)

    def data_setting(self, key: str) -> tuple[Any, str] | None:
        """(value, where it was found) of the training DataModule's setting `key` (e.g. crop_size),
        from the checkpoint's `datamodule_hyper_parameters` or the old layout's run config.yaml;
        None when it was stored in neither."""
        return _data_setting(self.checkpoint, self.run_config, key)


def _data_setting(ckpt: Mapping, run_config: Mapping | None, key: str) -> tuple[Any, str] | None:
    dm_hparams = ckpt.get("datamodule_hyper_parameters") or {}
    if key in dm_hparams:
        return dm_hparams[key], "checkpoint datamodule_hyper_parameters"
    data = (run_config or {}).get("data") or {}
    if key in data:
        return data[key], "run config.yaml"
    return None


def read_trained_model(path: str | Path) -> TrainedModel:
    """The task, normaliser, aux fields and name of the network in the checkpoint at `path`.

    Reads the `nowcast_infill` payload (format 2); a checkpoint without it is read from the
    old layout (hyperparameters, the DataModule state "RadarDataModule", the run's
    config.yaml). Raises CheckpointError naming `path` as given, with the fix, when neither
    holds what a network needs, or the payload is of another format.
    """
    ckpt = read_checkpoint(path)
    hparams = dict(ckpt["hyper_parameters"])
    payload = checkpoint_payload(ckpt, str(path))
    if payload is not None:
        return _from_payload(str(path), ckpt, hparams, payload)
    return _from_old_layout(str(path), ckpt, hparams)


def checkpoint_payload(checkpoint: Mapping[str, Any], where: str = "checkpoint") -> dict[str, Any] | None:
    """The `checkpoint["nowcast_infill"]` payload, None for a checkpoint of the old layout;
    CheckpointError naming `where` (the file) for a payload of another format."""
    payload = checkpoint.get(PAYLOAD_KEY)
    if payload is None:
        return None
    if not isinstance(payload, Mapping) or payload.get("format") != PAYLOAD_FORMAT:
        found = payload.get("format") if isinstance(payload, Mapping) else type(payload).__name__
        raise CheckpointError(
            f"{where}: '{PAYLOAD_KEY}' is of format {found!r}, this version reads format "
            f"{PAYLOAD_FORMAT}; use the nowcast_infill version that wrote it, or {RETRAIN_FIX}."
        )
    return dict(payload)


def _from_payload(path: str, ckpt: dict, hparams: dict, payload: dict[str, Any]) -> TrainedModel:
    try:
        task = payload["task"]
        trained = TrainedTask(str(task["name"]), int(task["in_frames"]), int(task["out_frames"]))
        normalizer, aux, name = dict(payload["normalizer"]), payload["aux_names"], str(payload["model_name"])
        aux_names = [str(a) for a in aux]
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: '{PAYLOAD_KEY}' lacks or garbles {err} (it needs task.name/in_frames/"
            f"out_frames, normalizer, aux_names, model_name); {RETRAIN_FIX}."
        ) from None
    return TrainedModel(path, PAYLOAD_FORMAT, trained, normalizer, aux_names, name, hparams, ckpt)


def _from_old_layout(path: str, ckpt: dict, hparams: dict) -> TrainedModel:
    try:
        trained = TrainedTask(str(hparams["task"]), int(hparams["in_frames"]), int(hparams["out_frames"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: holds neither '{PAYLOAD_KEY}' nor the task in hyper_parameters ({err}); {RETRAIN_FIX}."
        ) from None
    state = (ckpt.get(LEGACY_DATAMODULE_KEY) or {}).get("normalizer")
    run_config = _run_config(Path(path))
    listed = _listed_aux(ckpt, run_config)
    return TrainedModel(
        path,
        LEGACY_FORMAT,
        trained,
        None if state is None else dict(state),
        listed,
        str(hparams.get("name", "")),
        hparams,
        ckpt,
        run_config,
    )


def _run_config(path: Path) -> dict | None:
    """The `config.yaml` ni-train wrote in the run folder (`<run>/checkpoints/x.ckpt`), if any."""
    candidate = path.resolve().parent.parent / "config.yaml"
    if not candidate.is_file():
        return None
    loaded = OmegaConf.to_container(OmegaConf.load(candidate), resolve=False)
    return loaded if isinstance(loaded, dict) else None


def _listed_aux(ckpt: Mapping, run_config: Mapping | None) -> list[str] | None:
    """The aux field list of the old layout's DataModule settings, None when not an explicit list."""
    setting = _data_setting(ckpt, run_config, "aux")
    listed = setting[0] if setting else None
    return [str(a) for a in listed] if isinstance(listed, (list, tuple)) and listed else None
