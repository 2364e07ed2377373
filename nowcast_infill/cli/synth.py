"""ni-synth: write the embedded synthetic radar store (conf/synth.yaml).

    ni-synth output=data/synthetic.zarr seed=0 n_times=192
"""

from __future__ import annotations

from pathlib import Path

import hydra

from nowcast_infill.cli import CONFIG_DIR
from omegaconf import DictConfig, OmegaConf

GENERATOR_KEYS = (
    "seed", "n_times", "ny", "nx", "spacing_km", "time_step_s", "start", "center_lat", "center_lon",
    "coverage_radius_km", "aux_factor", "wet_fraction", "missing_frame_indices",
)  # fmt: skip


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="synth")
def main(cfg: DictConfig) -> None:
    import numpy as np
    import xarray as xr

    from nowcast_infill.data.synthetic import write_synthetic_store

    options = {k: OmegaConf.to_container(cfg[k]) if OmegaConf.is_config(cfg[k]) else cfg[k] for k in GENERATOR_KEYS}
    chunks = OmegaConf.to_container(cfg.chunks) if cfg.chunks is not None else None
    # Hydra leaves the working directory alone (version_base 1.3), so a relative output
    # is relative to where the command was run.
    path = write_synthetic_store(Path(cfg.output), chunks=chunks, overwrite=bool(cfg.overwrite), **options)
    ds = xr.open_zarr(path)
    precip = ds["precip"].values
    covered = ~np.isnan(precip)
    print(
        f"wrote {path}: {ds.sizes['time']} frames of {ds.sizes['y']} x {ds.sizes['x']}, "
        f"no-data {1 - covered.mean():.1%}, wet {np.mean(precip[covered] > 0):.1%}, "
        f"max {np.nanmax(precip):.1f} mm/h, radars {', '.join(ds.attrs['radar_sites'])}"
    )


if __name__ == "__main__":
    main()
