"""Nowcasting results: the four network variants against persistence, extrapolation and S-PROG.

Every variant (pconv, lstm, attention, lstm_attention) is trained with `ni-train`'s
`train(cfg)` for the same fixed budget and each seed; its last checkpoint and the classical
nowcasts (Eulerian persistence, Lagrangian extrapolation, S-PROG; pysteps) are scored on the
test split by `ni-eval`'s `evaluate(cfg)`: the same windows, the same valid-pixel masks, the
same metrics, per lead time. The script writes `experiments/results/nowcast.md` (every number
in it comes from these runs), the raw metrics `nowcast_runs.json` and figures (CSI and FSS
against lead time, an example nowcast) under `experiments/results/figures/`.

Data: the KNMI RAD_NL25_RAP sequence of ../shared/data/knmi (92 frames of 765 x 700 km at
5 min, 2010-08-26 00:00-07:35 UTC), converted once with `source=pysteps
pysteps_importer=knmi_hdf5`, then cropped to the bounding box of the radar circle widened
to a multiple of 8 pixels (only rows and columns with no valid pixel in any frame go). Explicit split in frames: train
[0, 62), gap, validation [68, 78) (required by the DataModule, unused: no selection), gap,
test [80, 92). KNMI has no
auxiliary fields: the attention variants get two smooth noise fields drawn independently of
the rain (`add_uninformative_aux`), so attention cannot help on this data.

Usage::

    python experiments/results_nowcast.py                 # the stated budget (see --help)
    python experiments/results_nowcast.py --quick         # tiny check on a small synthetic store
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_common import (  # noqa: E402
    SHARED_DATA, Budget, RunResult, add_budget_arguments, add_uninformative_aux,
    common_overrides,
    copy_figure, ensure_converted, frame_split, group_by_method, lead_time_plot, log, metrics_table,
    provenance, provenance_block, require_inputs, run_methods, runs_folder, save_results, store_crop_note, winners_notes,
)

CLASSICAL = ("persistence", "extrapolation", "sprog")
PAST, FUTURE = 4, 6
STEP_MIN = 5.0
# frames [first, stop) of the 92-frame KNMI sequence; 6 frames (30 min) between train and
# validation and between validation and test (validation is never used for selection)
KNMI_SPLIT_FRAMES = {"train": (0, 62), "val": (68, 78), "test": (80, 92)}
FSS_KEY = "fss@1mmh_5px"
PER_LEAD = [("rmse", "RMSE mm/h"), ("csi@1mmh", "CSI@1mm/h"), (FSS_KEY, "FSS@1mm/h, 5 px")]
OVERALL = [("rmse", "RMSE mm/h"), ("mae", "MAE mm/h"), ("csi@1mmh", "CSI@1mm/h"), (FSS_KEY, "FSS@1mm/h, 5 px")]
DATASET_NOTES = {
    "knmi": (
        "KNMI RAD_NL25_RAP composite, 2010-08-26 00:00-07:35 UTC (92 frames of 765 x 700 km, 1 km pixels, 5 min; "
        "74 % no-data outside the radar circle, never scored; the grid is cropped to the circle's bounding box). "
        "Frames [0, 62) train, [68, 78) validation (unused), [80, 92) test: 3 test windows of 4 past + 6 future "
        "frames (few: the CPU budget of this run; the spread over seeds does not cover this sampling error). **Auxiliary fields: none exist for this data; "
        "the attention variants get two smooth noise fields drawn independently of the rain, so attention cannot "
        "help here.** Scores are over every valid target pixel. FSS uses a 5 x 5 px (5 km) window."
    ),
    "synthetic": (
        "Synthetic store of `write_synthetic_store` (with auxiliary wind and temperature that drive the rain); "
        "split of `conf/data/synthetic.yaml`."
    ),
}


def prepare_store(dataset: str, work: Path, quick: bool) -> Path:
    if dataset == "synthetic":
        from nowcast_infill.data.synthetic import write_synthetic_store

        store = work / ("synthetic_quick.zarr" if quick else "synthetic.zarr")
        if not store.exists():
            write_synthetic_store(store, **({"n_times": 64, "ny": 64, "nx": 64} if quick else {}))
        return store
    folder = require_inputs(SHARED_DATA / "knmi", "*.h5", "KNMI HDF5")
    plain = ensure_converted(str(folder / "*.h5"), work / "knmi.zarr", "pysteps", pysteps_importer="knmi_hdf5")
    # the U-Net scores whole frames, whose sides must be multiples of 2**depth (8)
    return add_uninformative_aux(plain, work / "knmi_noiseaux_crop8.zarr", seed=0, crop_multiple_of=8)


def run(dataset: str, store: Path, budget: Budget, seeds: list[int], variants: list[str], classical: list[str],
        work: Path, quick: bool = False, train_overrides: list[str] | None = None) -> list[RunResult]:
    """Train and score every variant x seed, then score the classical nowcasts once."""
    split = frame_split(store, **KNMI_SPLIT_FRAMES) if dataset == "knmi" else None
    data_cfg = "knmi" if dataset == "knmi" else "synthetic"
    extra = ["data.aux=all"]
    if dataset == "synthetic" and quick:
        # the small quick store must still hold one 10-frame window per split
        extra += ["data.split.fractions=[0.5,0.25,0.25]", "data.split.gap=2"]
    task = ["task=nowcast", f"task.past={PAST}", f"task.future={FUTURE}"]
    stats = work / f"{store.stem}.nowcast.normalization.json"
    runs = runs_folder(work, f"nowcast_{dataset}", train_overrides or [])
    return run_methods(dataset, runs,
                       lambda run_dir: common_overrides(run_dir, store, stats, data_cfg, task) + extra,
                       budget, seeds, variants, classical, split, train_extra=train_overrides or [])


def write_report(results: list[RunResult], dataset: str, budget: Budget, seeds: list[int], out: Path, total_s: float,
                 prov: dict, quick: bool = False, crop_note: str = "", train_overrides: list[str] | None = None) -> Path:
    figures = out / "figures"
    groups = group_by_method(results, dataset)
    lines = [
        "# Nowcasting results",
        "",
        *(["**--quick run: 2 steps on a 64-frame 64 x 64 synthetic store; the numbers are meaningless.**", ""]
          if quick else []),
        f"Written by `experiments/results_nowcast.py`; every number below comes from that run (raw values: "
        f"`nowcast_runs.json`). {PAST} past frames -> {FUTURE} lead times of {STEP_MIN:g} min, test split, mm/h, "
        "over valid target pixels. Networks: mean ± sample std over seeds of the last weights after the fixed budget "
        "(no early stopping or checkpoint selection). Persistence, extrapolation (pysteps Lucas-Kanade + "
        "semi-Lagrangian) and S-PROG are deterministic. All methods are scored by `ni-eval` on exactly the same "
        "windows.",
        "",
        provenance_block(prov, {dataset: budget}, seeds, total_s),
        *([f"Network training overrides: `{' '.join(train_overrides)}`.", ""] if train_overrides else []),
        f"## {dataset}",
        "",
        DATASET_NOTES[dataset] + (f" Grid: {crop_note}." if crop_note else ""),
        "",
        "### All lead times pooled",
        "",
        metrics_table(groups, OVERALL),
        "Notes (generated from the tables):",
        "",
        *[f"- {n}" for n in winners_notes(groups, [("rmse", "RMSE, all leads", False), ("csi@1mmh", "CSI@1mm/h, all leads", True),
                                                   (FSS_KEY, "FSS@1mm/h 5 px, all leads", True)])],
        *[f"- {n}" for n in winners_notes(groups, [(f"csi@1mmh/lead{FUTURE}", f"CSI@1mm/h at +{FUTURE * STEP_MIN:g} min", True)])],
        "",
    ]
    for lead in range(1, FUTURE + 1):
        columns = [(f"{key}/lead{lead}", label) for key, label in PER_LEAD]
        lines += [f"### Lead time +{lead * STEP_MIN:g} min", "", metrics_table(groups, columns)]
    plot = lead_time_plot(groups, [("csi@1mmh", "CSI @ 1 mm/h"), (FSS_KEY, "FSS @ 1 mm/h, 5 px"), ("rmse", "RMSE (mm/h)")],
                          FUTURE, STEP_MIN, f"nowcast, {dataset}: scores against lead time (mean ± std over seeds)",
                          figures / f"nowcast_{dataset}_leadtime.png")
    lines += [f"![CSI, FSS and RMSE against lead time, {dataset}](figures/{plot.name})", ""]
    nets = [r for r in results if r.dataset == dataset and r.kind == "network" and r.figures]
    if nets:
        best = min(nets, key=lambda r: r.metrics.get("rmse", float("inf")))
        strip = copy_figure(best.figures[0], figures / f"nowcast_{dataset}_example.png")
        lines += [f"Example test window, {best.method} seed {best.seed} (last input; truth and prediction per lead time):",
                  "", f"![example nowcast, {dataset}](figures/{strip.name})", ""]
    path = out / "nowcast.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="knmi", choices=["knmi", "synthetic"])
    parser.add_argument("--crop", type=int, default=128, help="training crop in pixels (KNMI: 1 km)")
    add_budget_arguments(parser, CLASSICAL, "nowcast.md", "tiny check: 2 steps on a small synthetic store (numbers meaningless)")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    prov = provenance(None if argv is None else [__file__, *argv])
    dataset = "synthetic" if args.quick else args.dataset
    start = time.perf_counter()
    store = prepare_store(dataset, args.work, args.quick)
    budget = Budget(steps=2 if args.quick else args.steps, batch_size=args.batch_size,
                    crop_size=32 if args.quick else (args.crop if dataset == "knmi" else 64),
                    encoder_channels=tuple(args.channels))
    results = run(dataset, store, budget, args.seeds, args.variants, args.classical, args.work, args.quick,
                  args.train_override)
    save_results(results, args.out / "nowcast_runs.json")
    path = write_report(results, dataset, budget, args.seeds, args.out, time.perf_counter() - start, prov, args.quick,
                        store_crop_note(store), args.train_override)
    log(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
