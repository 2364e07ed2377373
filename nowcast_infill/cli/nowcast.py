"""`ni-nowcast`: write a nowcast product from the latest frames of a store (conf/nowcast.yaml)."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig

from nowcast_infill.cli.infill import model_choice

log = logging.getLogger(__name__)


def run(cfg: DictConfig):
    from nowcast_infill.inference.archive import load_predictor, write_nowcast

    model, options = model_choice(cfg)
    if not cfg.get("ckpt_path"):
        options.setdefault("n_leads", int(cfg.n_leads))
    predictor, info = load_predictor(model, "nowcast", **options)
    out = write_nowcast(
        predictor, cfg.input, cfg.output, past=int(cfg.past), n_leads=int(cfg.n_leads),
        issue_time=cfg.issue_time, model_info=info, overwrite=bool(cfg.overwrite),
    )
    msg = (f"ni-nowcast: {cfg.output}: {out.sizes['lead_time']} leads issued "
           f"{out.attrs['issue_time']} with {info['model']}")
    log.info(msg)
    print(msg)
    return out


@hydra.main(config_path="../../conf", config_name="nowcast", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
