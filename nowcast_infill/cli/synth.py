"""ni-synth: write the embedded synthetic radar store (conf/synth.yaml).

    ni-synth output=data/synthetic.zarr seed=0 n_times=192
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nowcast_infill.cli.checks import config_bool, config_float, config_int, writable_output_store
from nowcast_infill.cli.errors import hydra_command

GENERATOR_KEYS = (
    "seed", "n_times", "ny", "nx", "spacing_km", "time_step_s", "start", "center_lat", "center_lon",
    "coverage_radius_km", "aux_factor", "wet_fraction", "missing_frame_indices",
)  # fmt: skip


def check_synth_config(cfg: DictConfig) -> None:
    """The values a user most often mistypes, and the output, before the data is generated."""
    for key, minimum in (("seed", 0), ("n_times", 1), ("ny", 1), ("nx", 1), ("time_step_s", 1), ("aux_factor", 1)):
        config_int(cfg, key, minimum=minimum)
    config_float(cfg, "wet_fraction", 0.0, 1.0, low_open=True)
    overwrite = config_bool(cfg, "overwrite")
    writable_output_store(cfg.output, "output", if_store_exists="overwrite" if overwrite else "refuse",
                          overwrite_key="overwrite")


@hydra_command("synth")
def main(cfg: DictConfig) -> None:
    check_synth_config(cfg)
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
