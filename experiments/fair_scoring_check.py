"""Scored pixels, fallbacks and tile double counting of the classical nowcasts on real KNMI tiles.

    PYTHONPATH=$PWD .venv/bin/python experiments/fair_scoring_check.py --start 201008260200

Reads `past + leads` consecutive KNMI RAD_NL25 frames from ../shared/data/knmi (pySTEPS'
importer, converted to mm/h like `ni-convert`), cuts the 765 x 700 grid into the 256 px
evaluation tiles of `conf/data/knmi.yaml` (edge tiles shifted inward) and, per method,
counts the pixel-leads that have a valid target (a) and an answer (b): with pySTEPS' NaN
outside rule (`fill_outside=False`, the behaviour before issue 12) and with the persistence
outside rule (the default). It also counts the windows that needed the persistence fallback
and the pixels each tiling scores with and without tile ownership.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

import numpy as np

KNMI = Path(__file__).resolve().parents[2] / "shared" / "data" / "knmi"


def read_frames(folder: Path, start: str, n: int) -> np.ndarray:
    """(n, H, W) float32 mm/h, NaN = no data, of the KNMI files from `start` (YYYYmmddHHMM) on."""
    from pysteps.io.importers import import_knmi_hdf5

    from nowcast_infill.io.pysteps_source import field_to_mm_h

    t0 = dt.datetime.strptime(start, "%Y%m%d%H%M")
    frames = []
    for k in range(n):
        path = folder / f"RAD_NL25_RAP_5min_{(t0 + dt.timedelta(minutes=5 * k)):%Y%m%d%H%M}.h5"
        values, _, meta = import_knmi_hdf5(str(path))
        frames.append(field_to_mm_h(path, np.asarray(values, np.float64), meta)[0])
    return np.stack(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=KNMI)
    parser.add_argument("--start", default="201008260200", help="first frame, YYYYmmddHHMM")
    parser.add_argument("--past", type=int, default=4)
    parser.add_argument("--leads", type=int, default=6)
    parser.add_argument("--tile", type=int, default=256)
    args = parser.parse_args()
    os.environ.setdefault("PYSTEPS_CONFIG_SILENT", "1")

    from nowcast_infill.baselines import get_baseline
    from nowcast_infill.data.datamodule import _tile_owners, _tiles

    seq = read_frames(args.folder, args.start, args.past + args.leads)
    past, future = seq[:args.past], seq[args.past:]
    height, width = seq.shape[1:]
    tiles = _tiles(height, width, args.tile)
    owners = _tile_owners(height, width, tiles)
    covered = sum(h * w for _, _, h, w in tiles)
    print(f"KNMI {args.start}, {args.past} past + {args.leads} leads, {height} x {width}, {len(tiles)} tiles of "
          f"{args.tile} px: {covered} tile pixels for {height * width} distinct ones "
          f"(with ownership: {int((owners >= 0).sum())})")
    print("| method | outside rule | pixel-leads with valid target | scored | unanswered | fallback windows |")
    print("|---|---|---|---|---|---|")
    for name in ("persistence", "extrapolation", "sprog"):
        for fill in ((None,) if name == "persistence" else (False, True)):
            options = {} if fill is None else {"fill_outside": fill}
            method = get_baseline(name, n_leads=args.leads, **options)
            valid = scored = 0
            for index, (y0, x0, h, w) in enumerate(tiles):
                rows, cols = slice(y0, y0 + h), slice(x0, x0 + w)
                owned = owners[rows, cols] == index
                try:
                    forecast = method(past[:, rows, cols])
                except ValueError:  # persistence on an all-no-data tile: nothing to forecast or score
                    forecast = np.full((args.leads, h, w), np.nan, np.float32)
                target_ok = np.isfinite(future[:, rows, cols]) & owned
                valid += int(target_ok.sum())
                scored += int((target_ok & np.isfinite(forecast)).sum())
            rule = "–" if fill is None else ("persistence" if fill else "NaN (before)")
            print(f"| {name} | {rule} | {valid} | {scored} | {valid - scored} ({100 * (valid - scored) / valid:.1f} %) "
                  f"| {getattr(method, 'fallbacks', 0)} |")


if __name__ == "__main__":
    main()
