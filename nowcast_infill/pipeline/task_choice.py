"""Which task `ni-eval` scores a checkpoint on: the one it was trained for, unless the user named one.

`ni-eval ckpt_path=X data.store=Y` needs no `task=`: the checkpoint's task (name, frame counts)
replaces the config's default. A task the user wrote (`task=...`, `task.past=...`) that
contradicts the checkpoint is an error naming both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from nowcast_infill.checkpoint_io import TrainedTask
from nowcast_infill.errors import BadValueError
from nowcast_infill.utils.config import CONFIG_DIR

# task keys that set the frame counts (conf/task/*.yaml)
FRAME_KEYS = ("past", "future", "context", "in_frames", "out_frames")
ALL_KEYS = frozenset({"name", *FRAME_KEYS})


def given_task_keys(overrides: Sequence[str] | None) -> frozenset[str]:
    """The task keys among the command line's `overrides` (`task=nowcast` sets the name,
    `task.past=2` the key past); None (overrides unknown, e.g. a config composed in a script)
    counts every task key as given."""
    if overrides is None:
        return ALL_KEYS
    keys = set()
    for override in overrides:
        key = override.lstrip("+~").split("=", 1)[0].strip()
        if key == "task":
            keys.add("name")
        elif key.startswith("task."):
            keys.add(key.split(".")[1])
    return frozenset(keys)


def adopt_checkpoint_task(cfg: DictConfig, trained: TrainedTask, ckpt_path: str, given: frozenset[str]) -> bool:
    """Make `cfg.task` the checkpoint's task `trained`, in place; True when it changed. BadValueError
    when a key in `given` (see `given_task_keys`) asks for another task or other frame counts."""
    asked = (str(cfg.task.name), int(cfg.task.in_frames), int(cfg.task.out_frames))
    have = (trained.name, trained.in_frames, trained.out_frames)
    if asked == have:
        return False
    name_given, frames_given = "name" in given, bool(given & set(FRAME_KEYS))
    if (name_given and asked[0] != have[0]) or (frames_given and asked[1:] != have[1:]):
        raise BadValueError(
            f"task={asked[0]} (in_frames={asked[1]}, out_frames={asked[2]}) was given, but {ckpt_path} was trained with "
            f"task={have[0]} (in_frames={have[1]}, out_frames={have[2]}); drop the task overrides (the checkpoint's task "
            "is taken) or pass a checkpoint of the task asked."
        )
    node = (
        OmegaConf.load(Path(CONFIG_DIR) / "task" / f"{trained.name}.yaml") if asked[0] != have[0] else cfg.task.copy()
    )
    with open_dict(node):
        node.update(task_frame_keys(trained))
    with open_dict(cfg):
        cfg.task = node
    return True


def task_frame_keys(trained: TrainedTask) -> dict[str, int]:
    """past/future/context and the frame counts of conf/task/<name>.yaml that give `trained`'s frames."""
    if trained.name == "infill":
        context = (trained.in_frames - 1) // 2
        return {
            "context": context,
            "past": context,
            "future": context,
            "in_frames": trained.in_frames,
            "out_frames": trained.out_frames,
        }
    return {
        "past": trained.in_frames,
        "future": trained.out_frames,
        "context": 0,
        "in_frames": trained.in_frames,
        "out_frames": trained.out_frames,
    }
