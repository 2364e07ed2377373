"""Time eval mask generation: `make_eval_mask_set` of radar-outage masks on the 900x900 RADOLAN grid.

    PYTHONPATH=$PWD .venv/bin/python experiments/bench_masks.py --n 32 --repeats 3

The grid is the national RADOLAN 900x900 grid (lat/lon from RADOLAN_PROJ4, 1 km pixels);
every pixel is valid. Prints the median (min-max) seconds per mask set for two ways of
drawing it, interleaved: `cached` is `make_eval_mask_set` itself (one generator, whose
per-site disc fields are computed once per grid); `uncached` builds a fresh generator for
every mask, so every mask recomputes the great-circle distances to all sites, which is
what every mask cost before the cache.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def radolan_lat_lon(n: int = 900) -> tuple[np.ndarray, np.ndarray]:
    """(lat, lon) (n, n) degrees of the national RADOLAN grid's pixel centres."""
    from pyproj import Transformer

    from nowcast_infill.data.radar_sites import RADOLAN_GRID_ORIGIN_KM, RADOLAN_PROJ4

    x0, y0 = RADOLAN_GRID_ORIGIN_KM
    xs, ys = np.meshgrid(x0 + np.arange(n) + 0.5, y0 + np.arange(n) + 0.5)
    lon, lat = Transformer.from_crs(RADOLAN_PROJ4, "EPSG:4326", always_xy=True).transform(xs, ys)  # RADOLAN_PROJ4 is in km
    return lat, lon


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=32, help="masks per set")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from nowcast_infill.data.eval_masks import make_eval_mask_set
    from nowcast_infill.data.masks import build_mask_generator

    lat, lon = radolan_lat_lon()
    valid = np.ones(lat.shape, bool)
    spec = {"name": "radar_outage", "radius_km": 150, "n_sites": [1, 2]}
    fresh_per_mask = lambda rng, *a: build_mask_generator(spec)(rng, *a)  # noqa: E731
    times: dict[str, list[float]] = {"cached": [], "uncached": []}
    masks = {}
    for _ in range(args.repeats):
        for name, generator in (("cached", spec), ("uncached", fresh_per_mask)):
            start = time.perf_counter()
            masks[name] = make_eval_mask_set(generator, args.n, 0, valid, lat, lon)
            times[name].append(time.perf_counter() - start)
    if not np.array_equal(masks["cached"], masks["uncached"]):
        raise SystemExit("cached and uncached mask sets differ")
    for name, t in times.items():
        print(f"{name}: {args.n} radar_outage masks on {lat.shape}: median {np.median(t):.2f} s "
              f"(min {min(t):.2f}, max {max(t):.2f}) over {args.repeats} repeats")
    print(f"uncached / cached: {np.median(times['uncached']) / np.median(times['cached']):.1f}x; "
          f"hidden fraction {masks['cached'].mean():.3f}; load average {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
