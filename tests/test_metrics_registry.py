"""Adding a metric is one class and one registry line: a score defined here, in tests/, is
reported by the evaluation path (ClassicalModule under trainer.test) without package edits."""

from __future__ import annotations

from typing import ClassVar

import lightning as L
import pytest
import torch
from test_module import MASKS, store  # noqa: F401  (pytest fixture)

from nowcast_infill import registry
from nowcast_infill.data.datamodule import RadarDataModule
from nowcast_infill.evaluation.classical import ClassicalModule
from nowcast_infill.metrics.pieces import ScorePiece


class WetPixelShare(ScorePiece):
    """wet_share: the fraction of scored pixels where the answer has >= 0.1 mm/h."""

    states: ClassVar[dict[str, tuple[str, ...]]] = {"wet_pixels": (), "all_pixels": ()}

    def accumulate(self, frames, sums):
        sums["wet_pixels"] += ((frames.pred >= 0.1) & frames.scored).flatten(1).sum(1).to(torch.float64)
        sums["all_pixels"] += frames.n_scored

    def scores(self, state, thresholds, fss_scales):
        return {"wet_share": state["wet_pixels"] / state["all_pixels"].clamp(min=1)}


@pytest.fixture
def with_wet_share(monkeypatch):
    """Register the piece for this test only (the registry is process-wide)."""
    registry.method_names("metric")  # load the package's own entries first
    monkeypatch.setitem(registry._ENTRIES, "metric", dict(registry._ENTRIES["metric"]))
    registry.register("metric", "wet_share", WetPixelShare)  # the one registry line


def test_a_registered_metric_is_reported_by_evaluation(store, tmp_path, with_wet_share):  # noqa: F811
    dm = RadarDataModule(store, task="infill", context=1, crop_size=32, batch_size=2, masks=MASKS,
                         eval_masks={"n": 2}, split={"fractions": [0.7, 0.15, 0.15], "gap": 2}, aux=None)
    module = ClassicalModule("nearest", task="infill", in_frames=3, out_frames=1)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_test_batches=2,
                        default_root_dir=tmp_path)
    metrics = trainer.test(module, datamodule=dm, verbose=False)[0]
    assert 0.0 <= metrics["test/wet_share"] <= 1.0 and metrics["test/scored_pixels"] > 0
    assert "test/rmse" in metrics  # the package's own scores are still there


def test_unregistered_metric_names_are_listed():
    from nowcast_infill.metrics import RadarMetrics

    with pytest.raises(registry.UnknownMethodError, match="valid names: categorical, continuous, field_mean, fss"):
        RadarMetrics(scores=["continuous", "crps"])
    assert set(RadarMetrics(scores=["continuous"]).compute()) == {"rmse", "mae", "bias", "scored_pixels"}
