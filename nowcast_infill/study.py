"""The study's fixed choices, defined once: the network variants and how their forecasts are scored.

Configs read these through resolvers (`${ni.variants:}`, `${ni.metric_defaults:thresholds}`,
registered by `nowcast_infill.utils.config.register_resolvers`) and code imports them, so a
variant added here is swept by `hparams_search=models_seeds`, trained by `ni-demo` and listed by
the result scripts without another edit. Plain data, no imports: the lowest floor may read it.

- `VARIANTS`: the four networks compared in the study. Each is a model config
  (`conf/model/<variant>.yaml`) and one reported run per task (`conf/experiment/<task>_<variant>.yaml`).
- `VARIANT_NET_SWITCHES`: the partial-conv U-Net switches (`model.net.lstm`, `model.net.attention`)
  that make each variant; everything else in `conf/model/pconv.yaml` is shared.
- `METRIC_THRESHOLDS_MM_H`, `FSS_SCALES_PX`: the rain-rate thresholds (mm/h) of the categorical
  scores (CSI, POD, FAR, ...) and the window sizes (pixels, odd) of the fractions skill score.
"""

from __future__ import annotations

# The plain partial-convolution U-Net first: the others extend it by one switch each.
VARIANTS: tuple[str, ...] = ("pconv", "lstm", "attention", "lstm_attention")

VARIANT_NET_SWITCHES: dict[str, dict[str, bool]] = {
    "pconv": {"lstm": False, "attention": False},
    "lstm": {"lstm": True, "attention": False},
    "attention": {"lstm": False, "attention": True},
    "lstm_attention": {"lstm": True, "attention": True},
}

METRIC_THRESHOLDS_MM_H: tuple[float, ...] = (0.1, 1.0, 5.0, 10.0)
FSS_SCALES_PX: tuple[int, ...] = (1, 5, 11)

# The `model.metrics` node every model config gets (conf/model/_common.yaml).
METRIC_DEFAULTS: dict[str, list] = {"thresholds": list(METRIC_THRESHOLDS_MM_H), "fss_scales": list(FSS_SCALES_PX)}

__all__ = ["FSS_SCALES_PX", "METRIC_DEFAULTS", "METRIC_THRESHOLDS_MM_H", "VARIANTS", "VARIANT_NET_SWITCHES"]
