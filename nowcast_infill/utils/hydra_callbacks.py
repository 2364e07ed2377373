"""Hydra callbacks (registered in conf/hydra/default.yaml).

`SweepSummary`: a multirun (basic or Slurm launcher) tells its runs which keys it sweeps
(for their W&B tags and names) and ends with one table over all its runs, printed and written
as `summary.md` / `summary.csv` / `runs.csv` into the sweep folder (`ni-compare <sweep folder>`
rebuilds it later).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nowcast_infill.utils.logging import get_logger
from nowcast_infill.utils.results import SWEPT_KEYS_ENV, override_key, write_summary

log = get_logger(__name__)


def swept_keys(config: DictConfig) -> list[str]:
    """Keys a multirun sweeps: command-line sweeps (`model=a,b`) and the sweeper's `params`."""
    parsed = OverridesParser.create().parse_overrides([str(o) for o in config.hydra.overrides.task])
    keys = [override_key(o.get_key_element()) for o in parsed if o.is_sweep_override()]
    params = config.hydra.sweeper.get("params") or {}
    keys += [override_key(str(k)) for k in params if override_key(str(k)) not in keys]
    return keys


class SweepSummary(Callback):
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._previous_env: str | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Read by nowcast_infill.utils.results.swept_overrides in each job: the basic launcher
        # runs jobs in this process, submitit's sbatch passes the environment on.
        self._previous_env = os.environ.get(SWEPT_KEYS_ENV)
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept_keys(config))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._previous_env is None:
            os.environ.pop(SWEPT_KEYS_ENV, None)
        else:
            os.environ[SWEPT_KEYS_ENV] = self._previous_env
        if not self.enabled:
            return
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            log.warning(f"sweep folder {sweep_dir} does not exist: no run finished, no summary written")
            return
        md_path, markdown, records = write_summary(sweep_dir, [sweep_dir])
        if not records:
            log.warning(f"no run of {sweep_dir} wrote metrics.json (test=false, or every run failed): no summary")
            return
        print(
            f"\n{markdown}\nsweep summary of {len(records)} runs: {md_path} (+ summary.csv, runs.csv); "
            f"rebuild with `ni-compare {sweep_dir}`",
            flush=True,
        )
