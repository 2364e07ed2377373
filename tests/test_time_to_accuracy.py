"""experiments/time_to_accuracy.py: the matrix layout, the targets and the time-to-target
arithmetic, on hand-made validation curves (the training runs themselves are the script's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

import time_to_accuracy as tta  # noqa: E402


def make_run(processes, batch, accumulation, rule, seed, rmse, val_every=64):
    setting = tta.Setting(processes, batch, accumulation, rule)
    run = tta.Run(setting, seed, lr=1e-3)
    for k, value in enumerate(rmse, start=1):
        run.samples.append(float(k * val_every))
        run.steps.append(k * val_every // setting.global_batch)
        run.train_s.append(float(k))
        run.val_rmse.append(value)
    return run


def test_layouts_and_settings():
    layouts = tta.parse_layouts(["8=1x8x1", "16=2x8x1", "32=2x8x2"])
    names = [s.name for s in tta.settings_of(layouts)]
    # batch 8 once (both rules give the same lr there), every larger batch with both rules
    assert names == ["gb8_linear", "gb16_linear", "gb16_none", "gb32_linear", "gb32_none"]
    with pytest.raises(SystemExit, match="2 x 8 x 2 = 32, not 16"):
        tta.parse_layouts(["8=1x8x1", "16=2x8x2"])
    with pytest.raises(SystemExit, match="must include the reference global batch 8"):
        tta.parse_layouts(["16=2x8x1"])


def test_targets_and_steps_to_target():
    runs = [
        make_run(1, 8, 1, "linear", 0, [0.40, 0.30, 0.25, 0.20]),
        make_run(1, 8, 1, "linear", 1, [0.40, 0.32, 0.24, 0.22]),
        make_run(2, 8, 2, "linear", 0, [0.35, 0.26, 0.21, 0.20]),
        make_run(2, 8, 2, "none", 0, [0.45, 0.40, 0.36, 0.33]),
    ]
    (loose, _), (tight, _) = tta.default_targets(runs)
    assert loose == 0.33  # the worst run's best value: every run reaches it
    assert tight == pytest.approx(0.221)  # 1.05 x mean final of batch 8 (0.21), rounded up
    assert runs[0].first_reaching(0.25) == 2 and runs[3].first_reaching(0.25) is None

    stats = tta.reach_stats(runs[:2], 0.25)
    # seed 0 at its 3rd validation (192 samples = 24 steps), seed 1 also at its 3rd (0.24)
    assert (stats["reached"], stats["steps"], stats["samples"]) == (2, 24, 192)

    table = tta.target_table(runs, 0.25)
    rows = {tuple(c.strip() for c in line.strip("|").split("|"))[:2]: line for line in table.splitlines()[2:]}
    # batch 32 linear reaches 0.25 at its 3rd validation too: 192 samples = 6 steps, 24 / 6 = 4x fewer
    assert "| 6 | 192 | 3.0 | 4.00x (4x) |" in rows[("32", "linear")]
    assert "not reached" in rows[("32", "none")]
    assert tta.verdict(runs, 0.25)[-1] == "- batch 32, lr none: 0/1 seeds reached the target."
