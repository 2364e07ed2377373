"""Tasks: the one owner of frame counts, composition and the score mask."""

from __future__ import annotations

import pytest
import torch

from nowcast_infill.errors import BadValueError
from nowcast_infill.tasks import InfillTask, NowcastTask, get_task, task_from_frames


def test_frame_counts_come_from_past_future_context():
    infill = get_task("infill", past=1, future=1, context=2)
    assert (infill.name, infill.in_frames, infill.out_frames, infill.target_index) == ("infill", 5, 1, 2)
    nowcast = get_task("nowcast", past=4, future=6, context=0)
    assert (nowcast.name, nowcast.in_frames, nowcast.out_frames) == ("nowcast", 4, 6)
    assert isinstance(task_from_frames("infill", 3, 1), InfillTask)
    assert isinstance(task_from_frames("nowcast", 2, 3), NowcastTask)


def test_bad_names_and_counts_name_the_key_and_fix():
    with pytest.raises(BadValueError, match="task.name: 'forecast' is not one of infill, nowcast"):
        get_task("forecast")
    with pytest.raises(BadValueError, match=r"model.in_frames=4 but task=infill needs an odd in_frames"):
        task_from_frames("infill", 4, 1)
    with pytest.raises(BadValueError, match=r"task.out_frames: is 2 but task=infill needs 1 = 1; set task.out_frames=1"):
        get_task("infill", context=1).check_frames(3, 2)
    with pytest.raises(BadValueError, match=r"task.in_frames: is 3 but task=nowcast needs past = 4"):
        get_task("nowcast", past=4, future=2).check_frames(3, 2)


def test_infill_composition_keeps_observations_even_next_to_nan():
    task = get_task("infill", context=1)
    x = torch.tensor([1.0, 2.0, float("nan"), 4.0]).view(1, 1, 1, 1, 4).repeat(1, 3, 1, 1, 1)
    x_mask = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 1, 1, 4).repeat(1, 3, 1, 1, 1)
    raw = torch.full((1, 1, 1, 1, 4), 9.0)
    assert task.compose(raw, {"x": x, "x_mask": x_mask}).flatten().tolist() == [1.0, 2.0, 9.0, 9.0]
    hole = torch.tensor([0.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 1, 4)
    assert torch.equal(task.score_mask({"hole": hole}), hole)
    owned = torch.zeros(1, 1, 1, 1, 4)
    assert not task.score_mask({"hole": hole, "owned": owned}).any()
