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


# MeteoSwiss CCS4 grid that pysteps' mch_gif importer assumes (rows x columns).
MCH_SHAPE = (640, 710)


def write_mch_gif(path: Path, digital_numbers: np.ndarray) -> Path:
    """Write a MeteoSwiss-style 8-bit palette GIF holding `digital_numbers` (640, 710) uint8.

    pysteps' mch_gif importer maps AQC numbers through its look-up table (255 = no data,
    0-1 and 251-254 = 0 mm), so any uint8 array is a valid field.
    """
    from PIL import Image

    image = Image.fromarray(np.asarray(digital_numbers, dtype=np.uint8), mode="P")
    image.putpalette([v for i in range(256) for v in (i, i, i)])
    image.save(path, format="GIF")
    return Path(path)


def write_fmi_pgm_gz(path: Path, digital_numbers: np.ndarray) -> Path:
    """Write an FMI-style gzipped 8-bit PGM composite (255 = no data, dBZ = (n - 64) / 2).

    The header comments are those pysteps' fmi_pgm importer reads the stereographic
    grid from (FMI's Finland composite: 1 km pixels, corners in degrees).
    """
    import gzip

    numbers = np.asarray(digital_numbers, dtype=np.uint8)
    height, width = numbers.shape
    header = (
        "P5\n# type stereographic\n# centrallongitude 25\n# centrallatitude 90\n# truelatitude 60\n"
        "# bottomleft 18.600000 57.930000\n# topright 34.903000 69.005000\n"
        "# metersperpixel_x 999.674053\n# metersperpixel_y 999.62859\n"
        f"{width} {height}\n255\n"
    )
    with gzip.open(path, "wb") as fh:
        fh.write(header.encode() + numbers.tobytes())
    return Path(path)
