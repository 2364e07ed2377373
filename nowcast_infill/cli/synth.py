"""`ni-synth`: Hydra shim over `nowcast_infill.pipeline.synth` (conf/synth.yaml).

ni-synth output=data/synthetic.zarr seed=0 n_times=192
"""

from __future__ import annotations

from omegaconf import DictConfig

from nowcast_infill.cli.errors import hydra_command
from nowcast_infill.pipeline.stores import synth


@hydra_command("synth")
def main(cfg: DictConfig) -> None:
    synth(cfg)


if __name__ == "__main__":
    main()
