"""What a task predicts and scores: `InfillTask`, `NowcastTask`, `get_task(name, ...)`.

A task object is the single owner of three facts that the DataModule, the networks, the
trainable module, the classical methods and the evaluation all need:

* its frame counts `in_frames` (`T_in`) and `out_frames` (`T_out`), from `past`/`future`/`context`
  (the window offsets those frames come from are data's business: `data.datamodule.frames_needed`);
* `compose(raw, batch)`: the answer a method gives, observed pixels kept where the task keeps them;
* `score_mask(batch)`: the pixels every method of a comparison is scored on.

Tensors follow docs/schema.md § Samples, batched to `(B, T, C, H, W)`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from nowcast_infill.data.splits import window_offsets
from nowcast_infill.errors import BadValueError

if TYPE_CHECKING:  # the frame rules are read by the config checks, which run before torch is loaded
    import torch


class Task:
    """Base of the two tasks; `name`, `in_frames`, `out_frames` are plain attributes."""

    name: str = ""
    in_frames: int
    out_frames: int
    # the config keys `in_frames`/`out_frames` must equal, as text for error messages
    frame_rules: ClassVar[Mapping[str, str]] = {}

    def check_frames(self, in_frames: int, out_frames: int, where: str = "task") -> None:
        """Raise `BadValueError` naming `<where>.in_frames`/`out_frames` when they differ from this task's."""
        for key, have, want in (("in_frames", in_frames, self.in_frames), ("out_frames", out_frames, self.out_frames)):
            if int(have) != want:
                raise BadValueError(
                    f"{where}.{key}: is {have} but task={self.name} needs {self.frame_rules[key]} = {want}; "
                    f"set {where}.{key}={want}."
                )

    def compose(self, raw: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The final answer `(B, T_out, 1, H, W)` from a method's output `raw` of that shape
        (`x` and `raw` in the same units: normalised for networks, mm/h for classical methods)."""
        return raw

    def score_mask(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """0/1 `(B, T_out, 1, H, W)`: the pixels scored. Tiled evaluation (`eval_tile`) multiplies
        by the tile's `owned` mask, so a pixel covered by two overlapping edge tiles is scored once."""
        mask = self._scored_pixels(batch)
        if "owned" in batch:
            mask = mask * batch["owned"]
        return mask

    def _scored_pixels(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(in_frames={self.in_frames}, out_frames={self.out_frames})"


class InfillTask(Task):
    """Reconstruct the holes of the centre frame of `2*context+1` frames; `T_out = 1`.

    The answer is the observation where the target frame's `x_mask` is 1 and the method's
    output elsewhere; scored on `hole` pixels (hidden and valid in the truth).
    """

    name = "infill"
    frame_rules: ClassVar[Mapping[str, str]] = {"in_frames": "2*context+1", "out_frames": "1"}

    def __init__(self, context: int = 1) -> None:
        if int(context) != context or context < 0:
            raise BadValueError(f"task.context: is {context!r}; it must be an integer >= 0 (frames on each side).")
        self.context = int(context)
        # the window arithmetic lives once, in data/ (the DataModule cuts windows with it)
        _, inputs, targets = window_offsets(self.name, past=0, future=0, context=self.context)
        self.in_frames, self.out_frames = len(inputs), len(targets)

    @property
    def target_index(self) -> int:
        """Index of the target frame among the `T_in` input frames."""
        return self.context

    def compose(self, raw: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        # where(), not a blend: `x` may be NaN where unobserved (mm/h inputs of classical methods);
        # for finite inputs and a 0/1 mask both give the same numbers.
        c = self.target_index
        observed = batch["x_mask"][:, c : c + 1] > 0
        return batch["x"][:, c : c + 1].where(observed, raw)

    def _scored_pixels(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return batch["hole"]


class NowcastTask(Task):
    """Predict `future` frames from `past` frames (which may have holes themselves).

    Scored on valid target pixels that are also observed in the latest input frame with any
    data, the frame persistence and extrapolation start from: every method answers those (the
    classical methods' outside rule fills pixels advected in from outside the tile with
    persistence, nowcast_infill/baselines/nowcast.py), so networks and classical methods are
    scored on exactly the same pixels.
    """

    name = "nowcast"
    frame_rules: ClassVar[Mapping[str, str]] = {"in_frames": "past", "out_frames": "future"}

    def __init__(self, past: int = 4, future: int = 6) -> None:
        for key, value in (("past", past), ("future", future)):
            if int(value) != value or value < 1:
                raise BadValueError(f"task.{key}: is {value!r}; it must be an integer >= 1 (frames).")
        self.past, self.future = int(past), int(future)
        _, inputs, targets = window_offsets(self.name, past=self.past, future=self.future, context=0)
        self.in_frames, self.out_frames = len(inputs), len(targets)

    def _scored_pixels(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        import torch  # here, not at the top: importing the task's frame rules must not load torch

        observed = batch["x_mask"] > 0  # (B, T_in, 1, H, W)
        has_data = observed.flatten(2).any(2)  # (B, T_in)
        positions = torch.arange(has_data.shape[1], device=has_data.device)
        latest = torch.where(has_data, positions, -1).amax(1).clamp(min=0)  # (B,)
        start_frame = observed[torch.arange(observed.shape[0], device=observed.device), latest]  # (B, 1, H, W)
        return batch["y_valid"] * start_frame[:, None].to(batch["y_valid"].dtype)


TASKS: dict[str, type[Task]] = {"infill": InfillTask, "nowcast": NowcastTask}


def get_task(name: str, past: int | None = None, future: int | None = None, context: int | None = None) -> Task:
    """The task `name` (`infill`: `context`; `nowcast`: `past`, `future`); other keys are ignored
    (a task config carries all three). A missing key takes the task's default."""
    if name not in TASKS:
        raise BadValueError(
            f"task.name: {name!r} is not one of {', '.join(TASKS)}; choose task=infill or task=nowcast."
        )
    if name == "infill":
        return InfillTask(**({} if context is None else {"context": context}))
    return NowcastTask(**{k: v for k, v in (("past", past), ("future", future)) if v is not None})


def task_from_frames(name: str, in_frames: int, out_frames: int, where: str = "model") -> Task:
    """The task `name` with these frame counts (a saved model knows its counts, not `past`/`context`);
    raises `BadValueError` naming `<where>.in_frames`/`out_frames` when the task cannot have them."""
    if name not in TASKS:
        raise BadValueError(f"{where}.task={name!r} is not one of {', '.join(TASKS)}; set task=infill or task=nowcast.")
    if name == "infill":
        if int(in_frames) % 2 != 1 or int(in_frames) < 1:
            raise BadValueError(
                f"{where}.in_frames={in_frames} but task=infill needs an odd in_frames (2*context+1); check task.context."
            )
        task: Task = InfillTask(context=(int(in_frames) - 1) // 2)
    else:
        if int(in_frames) < 1 or int(out_frames) < 1:
            raise BadValueError(
                f"{where}.in_frames/out_frames: are {in_frames}/{out_frames}; task=nowcast needs both >= 1."
            )
        task = NowcastTask(past=int(in_frames), future=int(out_frames))
    task.check_frames(in_frames, out_frames, where)
    return task


__all__ = ["TASKS", "InfillTask", "NowcastTask", "Task", "get_task", "task_from_frames"]
