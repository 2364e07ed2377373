"""FigureCallback: which windows it draws, that the panels show something, where they go."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.pyplot as plt
import pytest
import torch
from test_module import make_module, normalizer  # noqa: F401, F811  (pytest fixture)

from nowcast_infill.evaluation.classical import ClassicalModule
from nowcast_infill.training.callbacks import FigureCallback


def fake_trainer(rank: int = 0) -> SimpleNamespace:
    """What FigureCallback reads of a Trainer: rank, sanity check, loggers, step."""
    return SimpleNamespace(global_rank=rank, sanity_checking=False, loggers=[], global_step=0)


def three_windows(normalizer, hw: int = 16) -> dict[str, torch.Tensor]:
    """Window 0 is all no-data, 1 valid and dry, 2 valid and wet (5 mm/h in an 8x8 square)."""
    y_mm_h = torch.zeros(3, 1, 1, hw, hw)
    y_mm_h[2, ..., 4:12, 4:12] = 5.0
    batch = {"x": normalizer.encode(torch.zeros(3, 3, 1, hw, hw)), "x_mask": torch.ones(3, 3, 1, hw, hw),
             "y": normalizer.encode(y_mm_h), "y_valid": torch.ones(3, 1, 1, hw, hw), "hole": torch.zeros(3, 1, 1, hw, hw)}
    batch["y_valid"][0] = 0.0
    batch["x_mask"][:, 1, :, 2:14, 2:14] = 0.0
    batch["hole"][:, :, :, 2:14, 2:14] = 1.0
    return batch


def test_keeps_the_wettest_mostly_valid_windows(normalizer, tmp_path):  # noqa: F811
    module = make_module(n_log_images=1)
    module.attach_normalizer(normalizer)
    batch = three_windows(normalizer)
    pred = torch.zeros(3, 1, 1, 16, 16)
    callback = FigureCallback(tmp_path, stage="test")  # n_figures from the module's n_log_images
    callback.on_test_batch_end(fake_trainer(), module, {"pred_mm_h": pred}, batch, 0)
    assert [torch.equal(kept["y"], batch["y"][2:3]) for _, kept in callback._pool] == [True]
    two = FigureCallback(tmp_path, n_figures=2, stage="test")
    two.on_test_batch_end(fake_trainer(), module, {"pred_mm_h": pred}, batch, 0)
    assert [float(score) for score, _ in two._pool] == pytest.approx([64 / 256, 0.0])
    # a validation-stage callback ignores test batches, and rank 1 keeps nothing
    FigureCallback(tmp_path, stage="val").on_test_batch_end(fake_trainer(), module, {"pred_mm_h": pred}, batch, 0)
    other_rank = FigureCallback(tmp_path, stage="test")
    other_rank.on_test_batch_end(fake_trainer(rank=1), module, {"pred_mm_h": pred}, batch, 0)
    assert other_rank._pool == []


def test_saved_panels_show_the_fields_not_a_blank_canvas(normalizer, tmp_path):  # noqa: F811
    module = make_module()
    module.attach_normalizer(normalizer)
    batch = three_windows(normalizer)
    pred = normalizer.decode(batch["y"]) * 0.5  # some rain where the truth has it
    callback = FigureCallback(tmp_path, n_figures=2, stage="test")
    callback.on_test_batch_end(fake_trainer(), module, {"pred_mm_h": pred}, batch, 0)
    callback.on_test_epoch_end(fake_trainer(), module)
    assert [p.name for p in callback.saved] == ["infill_sample0.png", "infill_sample1.png"]
    assert callback._pool == [] and plt.get_fignums() == []  # drawn once, figures closed
    wet_panel = plt.imread(str(callback.saved[0]))[..., :3]
    # the wet window's panel has the rain colours, not just white background and axes
    coloured = wet_panel.max(-1) - wet_panel.min(-1) > 0.2  # not white, grey or black
    assert coloured.sum() > 2000 and float(wet_panel.std()) > 0.05


def test_classical_module_goes_through_the_same_callback(normalizer, tmp_path):  # noqa: F811
    module = ClassicalModule("nearest", task="infill", in_frames=3, out_frames=1)
    module.attach_normalizer(normalizer)
    batch = three_windows(normalizer)
    outputs = module.evaluate_batch("test", module.predict_mm_h(batch), batch)
    callback = FigureCallback(tmp_path, n_figures=1, stage="test")
    callback.on_test_batch_end(fake_trainer(), module, outputs, batch, 0)
    callback.on_test_epoch_end(fake_trainer(), module)
    assert [p.name for p in callback.saved] == ["infill_sample0.png"]
