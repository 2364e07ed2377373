"""Verification metrics: pure reference scores (`scores`) and the torchmetrics `RadarMetrics`."""

from nowcast_infill.metrics import scores
from nowcast_infill.metrics.radar_metrics import RadarMetrics
from nowcast_infill.metrics.scores import format_threshold
from nowcast_infill.metrics.window_sums import box_sum, box_sums

__all__ = ["RadarMetrics", "box_sum", "box_sums", "format_threshold", "scores"]
