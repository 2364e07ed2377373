"""What a classical prior (`model.prior`) costs the training data path, side by side.

On the KNMI store of `results_nowcast.py` (the 92-frame RAD_NL25_RAP event, cropped to its
coverage, 424 x 424 px), a nowcast RadarDataModule (4 past -> 6 future frames, random 128 px
crops, num_workers 0, every window of the store a training window: `split=train_only`) yields
training samples with each prior: none, persistence,
extrapolation (motion cached per window, advection per sample) and sprog (whole-grid forecast
cached per window, a crop per sample). Per prior:

- fill: the one-off pass over every training window with an empty sidecar store (motion
  fields or S-PROG forecasts computed and written), seconds per window;
- samples/s afterwards (cache warm), median over `--repeats` interleaved rounds (each round
  times every prior in rotated order, so all see the same machine load) and the ratio to no
  prior in the same round.

Prints a Markdown table and a `BENCH_PRIORS {json}` line.

Usage: python experiments/bench_priors.py [--samples 48] [--repeats 3] [--store PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PRIORS = ("none", "persistence", "extrapolation", "sprog")
PAST, FUTURE, CROP = 4, 6, 128


def knmi_store(work: Path) -> Path:
    from results_common import SHARED_DATA, add_uninformative_aux, ensure_converted, require_inputs

    folder = require_inputs(SHARED_DATA / "knmi", "*.h5", "KNMI HDF5")
    plain = ensure_converted(str(folder / "*.h5"), work / "knmi.zarr", "pysteps", pysteps_importer="knmi_hdf5")
    return add_uninformative_aux(plain, work / "knmi_noiseaux_crop8.zarr", seed=0, crop_multiple_of=8)


def datamodule(store: Path, crop: int):
    from nowcast_infill.data.datamodule import RadarDataModule

    dm = RadarDataModule(store, task="nowcast", past=PAST, future=FUTURE, crop_size=crop, batch_size=1,
                         num_workers=0, split="train_only", seed=0)
    dm.setup("fit")
    return dm


def prior_of(name: str, cache: Path):
    from nowcast_infill.data.priors import WindowPrior

    return None if name == "none" else WindowPrior(name, "nowcast", FUTURE, cache_root=cache)


def time_samples(dataset, n: int) -> float:
    """Samples per second over `n` training samples (indices cycled)."""
    start = time.perf_counter()
    for i in range(n):
        dataset[i % len(dataset)]
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=48, help="samples timed per prior and round")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--crop", type=int, default=CROP)
    parser.add_argument("--store", type=Path, help="a nowcast store (default: the KNMI store of results_nowcast.py)")
    parser.add_argument("--work", type=Path, default=Path("experiments/results/_work"))
    args = parser.parse_args(argv)
    store = args.store or knmi_store(args.work)
    dm = datamodule(store, args.crop)
    train = dm.datasets["train"]
    n_windows = len(train.starts)
    result: dict = {"store": str(store), "windows": n_windows, "crop": args.crop, "fill_s_per_window": {},
                    "samples_per_s": {p: [] for p in PRIORS}, "ratio_to_none": {p: [] for p in PRIORS}}
    with tempfile.TemporaryDirectory() as tmp:
        priors = {name: prior_of(name, Path(tmp)) for name in PRIORS}
        for name, prior in priors.items():
            dm.attach_prior(prior)
            start = time.perf_counter()
            for index in range(n_windows):  # one sample per window: every cache entry computed once
                train[index]
            result["fill_s_per_window"][name] = (time.perf_counter() - start) / n_windows
        for round_index in range(args.repeats):
            order = PRIORS[round_index % len(PRIORS):] + PRIORS[:round_index % len(PRIORS)]
            rates = {}
            for name in order:
                dm.attach_prior(priors[name])
                rates[name] = time_samples(train, args.samples)
            for name in PRIORS:
                result["samples_per_s"][name].append(rates[name])
                result["ratio_to_none"][name].append(rates[name] / rates["none"])
    rows = ["| prior | fill (first pass), s per window | samples/s, warm (median) | ratio to none (median, range) |",
            "|---|---|---|---|"]
    for name in PRIORS:
        ratios = result["ratio_to_none"][name]
        rows.append(f"| {name} | {result['fill_s_per_window'][name]:.3f} | "
                    f"{statistics.median(result['samples_per_s'][name]):.1f} | "
                    f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |")
    print(f"{n_windows} training windows of {store}, {args.crop} px crops, {args.repeats} rounds x {args.samples} samples")
    print("\n".join(rows))
    print("BENCH_PRIORS " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
