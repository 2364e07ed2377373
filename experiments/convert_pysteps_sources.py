"""Convert the shared BOM and RMI pySTEPS files and print what the stores hold.

    PYTHONPATH=$PWD .venv/bin/python experiments/convert_pysteps_sources.py [--data ../shared/data]

One line per network: frames, time range and step, accumulation interval, conversion,
min / max / mean rate (mm/h), NaN fraction and non-finite values other than NaN
(must be 0), converted with `ni-convert`'s engine into a temporary store.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from nowcast_infill.io.convert import convert

SOURCES = {  # name: (glob below the data folder, pySTEPS importer)
    "bom": ("pysteps/radar/bom/prcp-cscn/2/2018/06/16/*.nc", "bom_rf3"),
    "rmi": ("pysteps/radar/rmi/radqpe/20210704/*.hdf", "odim_hdf5"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data", help="the shared data folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name, (pattern, importer) in SOURCES.items():
            started = time.perf_counter()
            summary = convert(str(Path(args.data) / pattern), Path(tmp) / f"{name}.zarr", "pysteps", progress=False,
                              workers=1, pysteps_importer=importer)
            ds = xr.open_zarr(summary["output"])
            precip = ds["precip"].values
            times = ds["time"].values.astype("datetime64[m]")
            print(f"{name}: {summary['n_frames_written']} frames {times[0]}..{times[-1]} step {ds.attrs['time_step_s']} s, "
                  f"interval {ds.attrs['accumulation_interval_s']} s, {ds.attrs['conversion']!r}, "
                  f"min {np.nanmin(precip):.3g} max {np.nanmax(precip):.3g} mean {np.nanmean(precip):.3g} mm/h, "
                  f"NaN {np.isnan(precip).mean():.4f}, non-finite non-NaN {int((np.isinf(precip)).sum())}, "
                  f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
