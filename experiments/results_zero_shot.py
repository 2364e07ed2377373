"""Zero-shot nowcasting (or infilling): trained on three radar networks, scored on a fourth it never saw.

A nowcast network (`--task infill`: an infill network, radar-outage holes) is trained with
`ni-train`'s `train(cfg)` on several stores at once (`data.stores`: KNMI, BOM, RMI events of
../shared/data, each its own grid; one normaliser over all their training frames), and its
last checkpoint is scored by `ni-eval`'s `evaluate(cfg)` on the RADOLAN YW sequence, a German
radar composite, another day and another country: the normaliser comes from the checkpoint
(nothing is fitted on the target), and the whole target store is the test split
(`data.split=test_only`). Extrapolation
and S-PROG (infill: temporal_flow, temporal_linear, laplace) are scored on exactly the same
windows and pixels. The script writes `experiments/results/zero_shot.md` (infill:
`zero_shot_infill.md`; every number in it comes from the run) and the raw metrics
`zero_shot_runs.json` (`zero_shot_infill_runs.json`).

Time steps differ (KNMI, RMI, RADOLAN 5 min; BOM 6 min): the network sees frames, so a BOM
lead time is 6 min; the report says so.

Usage::

    python experiments/results_zero_shot.py                      # the stated budget (see --help)
    python experiments/results_zero_shot.py --quick              # a tiny check (numbers meaningless)
    python experiments/results_zero_shot.py --task infill --train-override model.prior=temporal_flow
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_common import (  # noqa: E402
    SHARED_DATA, Budget, RunResult, add_budget_arguments, add_uninformative_aux, ensure_converted, group_by_method,
    log, metrics_table, provenance, provenance_block, require_inputs, run_methods, runs_folder, save_results,
    winners_notes,
)

PAST, FUTURE = 4, 6
CLASSICAL = {"nowcast": ("extrapolation", "sprog"), "infill": ("temporal_flow", "temporal_linear", "laplace")}
# the task keys of every training and evaluation
TASK = {"nowcast": ["task=nowcast", f"task.past={PAST}", f"task.future={FUTURE}"], "infill": ["task=infill"]}
# data keys of every run of a task: infill holes are radar outages (conf/masks/radar_outage.yaml)
DATA = {"nowcast": [], "infill": ["masks=radar_outage"]}
INFILL_COLUMNS = [("rmse", "RMSE mm/h"), ("mae", "MAE mm/h"), ("bias", "bias mm/h"), ("csi@1mmh", "CSI@1mm/h")]
# name: (folder below the shared data, file pattern, ni-convert source, importer options, what)
SOURCES = {
    "knmi": ("knmi", "*.h5", "pysteps", {"pysteps_importer": "knmi_hdf5"},
             "KNMI RAD_NL25_RAP, 2010-08-26, 92 frames of 5 min"),
    "bom": ("pysteps/radar/bom/prcp-cscn/2/2018/06/16", "*.nc", "pysteps", {"pysteps_importer": "bom_rf3"},
            "BOM composite (Australia), 2018-06-16, 61 frames of 6 min"),
    "rmi": ("pysteps/radar/rmi/radqpe/20210704", "*.hdf", "pysteps", {"pysteps_importer": "odim_hdf5"},
            "RMI radar QPE (Belgium), 2021-07-04, 39 frames of 5 min"),
    "radolan_yw": ("radolan/yw", "*", "radolan", {},
                   "DWD RADOLAN YW (Germany), 2017-08-16 00:55-01:50 UTC, 12 frames of 5 min"),
}
TRAIN_STORES = ("knmi", "bom", "rmi")
TARGET = "radolan_yw"
# every frame of the training stores trains (no validation: no selection; the test store is
# another radar network)
TRAIN_SPLIT = ["data.split=train_only"]
PER_LEAD = [("rmse", "RMSE mm/h"), ("csi@1mmh", "CSI@1mm/h"), ("fss@1mmh_5px", "FSS@1mm/h, 5 px")]


def prepare_store(name: str, work: Path) -> Path:
    """The converted store of `name`, cut to its coverage's bounding box (sides multiples of 8,
    whole-frame scoring). `add_uninformative_aux` is used only for that cut: its noise fields
    are not given to the network (`data.aux` stays null)."""
    folder, pattern, source, options, what = SOURCES[name]
    inputs = require_inputs(SHARED_DATA / folder, pattern, what)
    plain = ensure_converted(str(inputs / pattern), work / f"{name}.zarr", source, **options)
    return add_uninformative_aux(plain, work / f"{name}_noiseaux_crop8.zarr", seed=0, crop_multiple_of=8)


def base_overrides(run_dir: Path, store_overrides: list[str], stats: Path) -> list[str]:
    return [
        "data=zarr",
        *store_overrides,
        f"data.stats_path={stats}",
        "data.num_workers=0",
        "data.eval_tile=null",
        f"paths.output_dir={run_dir}",
        f"paths.log_dir={run_dir.parent}",
        "logger=csv",
    ]


def run(stores: dict[str, Path], budget: Budget, seeds: list[int], variants: list[str], classical: list[str],
        work: Path, train_overrides: list[str], task_name: str = "nowcast", quick: bool = False) -> list[RunResult]:
    runs = runs_folder(work, "zero_shot" if task_name == "nowcast" else f"zero_shot_{task_name}", train_overrides)
    train_list = "[" + ",".join(str(stores[n]) for n in TRAIN_STORES) + "]"
    stats = work / f"zero_shot_train.{task_name}.normalization.json"
    task = TASK[task_name]
    data = [*DATA[task_name], *(["data.eval_masks.n=2"] if quick else [])]
    target = [f"data.store={stores[TARGET]}", "data.split=test_only", *data]
    log(f"zero-shot: networks train on {', '.join(TRAIN_STORES)}, every method is scored on {TARGET}")
    # the target's statistics path is never written for a network: its checkpoint brings the normaliser
    return run_methods(
        TARGET, runs,
        lambda run_dir: [*base_overrides(run_dir, [f"data.stores={train_list}", *TRAIN_SPLIT, *data], stats), *task],
        budget, seeds, variants, classical, train_extra=train_overrides,
        eval_overrides=lambda run_dir: [*base_overrides(run_dir, target, run_dir / "stats.json"), *task])


def write_report(results: list[RunResult], budget: Budget, seeds: list[int], out: Path, total_s: float, prov: dict,
                 train_overrides: list[str], quick: bool, task_name: str = "nowcast") -> Path:
    groups = group_by_method(results, TARGET)
    name = "zero_shot" if task_name == "nowcast" else f"zero_shot_{task_name}"
    if task_name == "nowcast":
        what = (f"{PAST} past frames -> {FUTURE} lead times, mm/h, over valid target pixels of the whole RADOLAN YW "
                "store (`data.split=test_only`: 12 frames, 3 windows)")
        references = ("Extrapolation and S-PROG: the same windows, the same pixels (outside rule of "
                      "nowcast_infill/baselines/nowcast.py).")
        stores_note = "BOM's frames are 6 min apart, the others' 5 min: the network learns per frame."
    else:
        what = ("Hole pixels of the whole RADOLAN YW store (`data.split=test_only`: 12 frames, 10 windows of 3 frames, "
                "32 fixed radar-outage masks), mm/h")
        references = "The classical methods: the same windows, masks and pixels."
        stores_note = "Radar-outage holes."
    lines = [
        f"# Zero-shot {task_name.replace('nowcast', 'nowcasting').replace('infill', 'infilling')}: trained on "
        "KNMI + BOM + RMI, scored on RADOLAN YW",
        "",
        *(["**--quick run: the numbers are meaningless.**", ""] if quick else []),
        f"Written by `experiments/results_zero_shot.py --task {task_name}`; every number below comes from that run "
        f"(raw values: `{name}_runs.json`). {what}, which no training run saw. Networks: mean ± sample std over seeds "
        f"of the last weights after the fixed budget; the checkpoint brings its normaliser. {references}",
        "",
        provenance_block(prov, {"training stores": budget}, seeds, total_s),
        *([f"Network training overrides: `{' '.join(train_overrides)}`.", ""] if train_overrides else []),
        "Training stores (`data.stores`, each cut to its coverage, every frame trains: `data.split=train_only`): "
        + "; ".join(SOURCES[n][4] for n in TRAIN_STORES) + f". {stores_note}",
        f"Target: {SOURCES[TARGET][4]}.",
        "",
    ]
    if task_name == "nowcast":
        lead = f"csi@1mmh/lead{FUTURE}"
        lines += ["## All lead times pooled", "",
                  metrics_table(groups, [("rmse", "RMSE mm/h"), ("mae", "MAE mm/h"), ("csi@1mmh", "CSI@1mm/h"),
                                         (lead, f"CSI@1mm/h +{FUTURE * 5} min")])]
        verdicts = [("rmse", "RMSE, all leads", False), (lead, f"CSI@1mm/h at +{FUTURE * 5} min", True)]
    else:
        lines += [metrics_table(groups, INFILL_COLUMNS)]
        verdicts = [("rmse", "RMSE", False), ("csi@1mmh", "CSI@1mm/h", True)]
    lines += ["Notes (generated from the table):", "", *[f"- {n}" for n in winners_notes(groups, verdicts)], ""]
    if task_name == "nowcast":
        for step in range(1, FUTURE + 1):
            lines += [f"## Lead +{step * 5} min", "",
                      metrics_table(groups, [(f"{key}/lead{step}", label) for key, label in PER_LEAD])]
    path = out / f"{name}.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crop", type=int, default=128, help="training crop in pixels")
    parser.add_argument("--task", default="nowcast", choices=list(TASK))
    every_classical = list(dict.fromkeys(m for methods in CLASSICAL.values() for m in methods))
    add_budget_arguments(parser, every_classical, "zero_shot.md", "tiny check: 2 steps, 64 px crops (numbers meaningless)")
    parser.set_defaults(variants=["pconv"], classical=None)
    args = parser.parse_args(argv)
    classical = args.classical or list(CLASSICAL[args.task])
    os.environ.setdefault("WANDB_MODE", "offline")
    prov = provenance(None if argv is None else [__file__, *argv])
    start = time.perf_counter()
    stores = {name: prepare_store(name, args.work) for name in SOURCES}
    budget = Budget(steps=2 if args.quick else args.steps, batch_size=args.batch_size,
                    crop_size=64 if args.quick else args.crop, encoder_channels=tuple(args.channels))
    results = run(stores, budget, args.seeds, args.variants, classical, args.work, args.train_override, args.task,
                  args.quick)
    name = "zero_shot" if args.task == "nowcast" else f"zero_shot_{args.task}"
    save_results(results, args.out / f"{name}_runs.json")
    path = write_report(results, budget, args.seeds, args.out, time.perf_counter() - start, prov, args.train_override,
                        args.quick, args.task)
    log(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
