"""Writers of small test input files for the ingestion tests (RADOLAN ASCII grids)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Lower-left corner of the 900x900 RADOLAN grid in metres (DWD format description).
RADOLAN_XLL_M = -523462.0
RADOLAN_YLL_M = -4658645.0


def write_radolan_ascii(
    folder: Path,
    depth_mm_south_first: np.ndarray,
    stamp: str,
    product: str = "RW",
    xll_m: float = RADOLAN_XLL_M,
    yll_m: float = RADOLAN_YLL_M,
) -> Path:
    """Write a DWD-style ESRI ASCII grid `PRODUCT_YYYYMMDD-HHMM.asc` and return its path.

    depth_mm_south_first: (H, W) mm, row 0 = southern edge, NaN = no data. It is written
    north first with integers in 0.1 mm and NODATA_value -1, as DWD publishes it.
    """
    nrows, ncols = depth_mm_south_first.shape
    ints = np.where(np.isnan(depth_mm_south_first), -1, np.round(depth_mm_south_first * 10)).astype(np.int64)
    lines = [
        f"ncols {ncols}",
        f"nrows {nrows}",
        f"xllcorner {xll_m:.0f}",
        f"yllcorner {yll_m:.0f}",
        "cellsize 1000",
        "NODATA_value -1",
    ]
    lines += [" ".join(map(str, row)) for row in ints[::-1]]
    path = Path(folder) / f"{product}_{stamp}.asc"
    path.write_text("\n".join(lines) + "\n")
    return path


def rain_field(rng: np.random.Generator, shape=(30, 20), nodata_fraction=0.2) -> np.ndarray:
    """(H, W) mm depths on a 0.1 mm grid, about half dry, with a NaN no-data corner block."""
    depth = np.round(rng.gamma(0.5, 2.0, size=shape) * (rng.random(shape) > 0.5), 1)
    h = int(round(shape[0] * np.sqrt(nodata_fraction)))
    depth[:h, :h] = np.nan
    return depth
