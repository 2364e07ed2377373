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
from pathlib import Path

import torch

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
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({_one_line(err)}); "
                              "pass a .ckpt written by ni-train.") from None
    except Exception as err:  # torch raises several types for a file that is not a checkpoint
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint ({_one_line(err)}); "
                              "pass a .ckpt written by ni-train.") from None
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint of a RadarModule (no state_dict/hyper_parameters); "
                              "pass a .ckpt written by ni-train.")
    return dict(ckpt)


def load_module(module_class, path: str | Path):
    """`module_class.load_from_checkpoint(path)` on the CPU, weights-only, after `read_checkpoint` vetted the file."""
    read_checkpoint(path)
    return module_class.load_from_checkpoint(path, map_location="cpu", weights_only=True)
