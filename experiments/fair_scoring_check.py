"""Scored pixels, fallbacks and tile double counting of the classical nowcasts on real KNMI tiles.

    PYTHONPATH=$PWD .venv/bin/python experiments/fair_scoring_check.py --start 201008260200

Reads `past + leads` consecutive KNMI RAD_NL25 frames from ../shared/data/knmi (pySTEPS'
importer, converted to mm/h like `ni-convert`), cuts the 765 x 700 grid into the 256 px
evaluation tiles of `conf/data/knmi.yaml` (edge tiles shifted inward) and, per method,
counts the pixel-leads that have a valid target (a) and an answer (b): with pySTEPS' NaN
outside rule (`fill_outside=False`, the behaviour before issue 12) and with the persistence
outside rule (the default). It also counts the windows that needed the persistence fallback
and the pixels each tiling scores with and without tile ownership.

    PYTHONPATH=$PWD .venv/bin/python experiments/fair_scoring_check.py --infill

`--infill` instead scores the spatial `laplace` against the temporal `temporal_linear` and
`temporal_flow` on the real RADOLAN YW frames of ../shared/data/radolan/yw: each inner
frame hidden by a seeded radar-outage mask (1 site, 150 km), holes scored where the truth
is valid (RMSE, CSI at 1 mm/h, counted fallback pixels, seconds per frame).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
from pathlib import Path

import numpy as np

KNMI = Path(__file__).resolve().parents[2] / "shared" / "data" / "knmi"
RADOLAN_YW = KNMI.parent / "radolan" / "yw"


def infill_check(folder: Path) -> None:
    """Hole RMSE / CSI@1 mm/h of spatial vs temporal infilling on the RADOLAN YW frames."""
    import time

    from nowcast_infill import registry
    from nowcast_infill.data.masks import build_mask_generator, hole_targets
    from nowcast_infill.io.radolan import RadolanImporter

    frames = [RadolanImporter().read(p)[0] for p in sorted(folder.glob("*yw*"))]
    seq = np.stack([f.precip for f in frames]).astype(np.float32)
    lat, lon = frames[0].grid.lat, frames[0].grid.lon
    outage = build_mask_generator({"name": "radar_outage", "radius_km": 150, "n_sites": 1})
    rng = np.random.default_rng(0)
    methods = {name: registry.get_method("classical", name) for name in ("laplace", "temporal_linear", "temporal_flow")}
    errors = {name: [] for name in methods}
    hits = {name: np.zeros(3) for name in methods}  # hits, misses, false alarms at 1 mm/h
    seconds = {name: 0.0 for name in methods}
    n_holes = 0
    for k in range(1, len(seq) - 1):
        truth = seq[k]
        hole = hole_targets(outage(rng, np.isfinite(truth), lat, lon), np.isfinite(truth))
        x = seq[k - 1:k + 2].copy()
        x[1][hole] = np.nan
        n_holes += int(hole.sum())
        for name, method in methods.items():
            start = time.perf_counter()
            pred = method(x, fill_mask=hole)[0][hole]
            seconds[name] += time.perf_counter() - start
            errors[name].append(pred - truth[hole])
            obs, fc = truth[hole] >= 1.0, pred >= 1.0
            hits[name] += [(obs & fc).sum(), (obs & ~fc).sum(), (~obs & fc).sum()]
    print(f"RADOLAN YW, {len(seq) - 2} inner frames, one 150 km radar outage each: {n_holes} hole pixels scored "
          "by every method")
    print("| method | hole RMSE mm/h | CSI@1mm/h | fallback pixels | s/frame |")
    print("|---|---|---|---|---|")
    for name, method in methods.items():
        err = np.concatenate(errors[name])
        h, m, f = hits[name]
        print(f"| {name} | {np.sqrt(np.mean(err ** 2)):.3f} | {h / max(h + m + f, 1):.3f} | "
              f"{getattr(method, 'fallbacks', 0)} | {seconds[name] / (len(seq) - 2):.1f} |")


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
    parser.add_argument("--infill", action="store_true", help="the temporal infilling check on RADOLAN YW instead")
    args = parser.parse_args()
    os.environ.setdefault("PYSTEPS_CONFIG_SILENT", "1")
    if args.infill:
        infill_check(RADOLAN_YW)
        return

    from nowcast_infill import registry
    from nowcast_infill.data.tiling import eval_tiles, tile_owners

    seq = read_frames(args.folder, args.start, args.past + args.leads)
    past, future = seq[:args.past], seq[args.past:]
    height, width = seq.shape[1:]
    tiles = eval_tiles(height, width, args.tile)
    owners = tile_owners(height, width, tiles)
    covered = sum(h * w for _, _, h, w in tiles)
    print(f"KNMI {args.start}, {args.past} past + {args.leads} leads, {height} x {width}, {len(tiles)} tiles of "
          f"{args.tile} px: {covered} tile pixels for {height * width} distinct ones "
          f"(with ownership: {int((owners >= 0).sum())})")
    print("| method | outside rule | pixel-leads with valid target | scored | unanswered | fallback windows |")
    print("|---|---|---|---|---|---|")
    for name in ("persistence", "extrapolation", "sprog"):
        for fill in ((None,) if name == "persistence" else (False, True)):
            options = {} if fill is None else {"fill_outside": fill}
            method = registry.get_method("classical", name, n_leads=args.leads, **options)
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
