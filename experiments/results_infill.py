"""Infilling results: the four network variants against the classical infilling baselines.

For each dataset, every variant (pconv, lstm, attention, lstm_attention) is trained with
`ni-train`'s `train(cfg)` for the same fixed budget and each seed, and its last checkpoint is
scored on the test split by `ni-eval`'s `evaluate(cfg)`; the classical baselines (nearest,
linear, laplace, biharmonic; temporal_linear and temporal_flow, which read the neighbouring frames
like the LSTM variants) go through the very same `evaluate` (same windows, same fixed
evaluation masks, same metrics on hole pixels). The script writes
`experiments/results/infill.md` (every number in it comes from these runs), the raw metrics
`infill_runs.json` and figures under `experiments/results/figures/`.

Datasets:
- `synthetic`: the default synthetic store (`write_synthetic_store`, 192 frames of 128 x 128
  at 2 km), whose auxiliary wind and temperature fields drive the rain;
- `radolan_yw`: the real RADOLAN YW sequence of ../shared/data/radolan/yw (12 frames of
  1100 x 900 km at 5 min). It has no auxiliary fields, so the store used here gets two
  smooth noise fields drawn independently of the rain (`add_uninformative_aux`): all four
  variants run, but the attention branch has nothing to learn from on this dataset.

Usage::

    python experiments/results_infill.py                 # the stated budget (see --help)
    python experiments/results_infill.py --quick         # a tiny check of the whole pipeline
    python experiments/results_infill.py --datasets synthetic --steps 20 --seeds 0 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results_common import (  # noqa: E402
    SHARED_DATA, Budget, RunResult, add_budget_arguments, add_uninformative_aux, bar_chart, common_overrides,
    copy_figure, ensure_converted, evaluate_method, frame_split, group_by_method, log, metrics_table, provenance,
    provenance_block, require_inputs, run_methods, runs_folder, save_results, store_crop_note, winners_notes,
)

CLASSICAL = ("nearest", "linear", "laplace", "biharmonic", "temporal_linear", "temporal_flow")
COLUMNS = [("rmse", "RMSE mm/h"), ("mae", "MAE mm/h"), ("ame", "AME mm/h"), ("temporal_corr", "temporal corr"),
           ("spatial_corr", "spatial corr"), ("csi@1mmh", "CSI@1mm/h")]
VERDICTS = [("rmse", "RMSE", False), ("ame", "AME", False), ("temporal_corr", "temporal correlation", True),
            ("spatial_corr", "spatial correlation", True), ("csi@1mmh", "CSI@1mm/h", True)]
# RADOLAN YW sample: 12 frames. Explicit frame ranges [first, stop): 3 training windows,
# 1 validation window (required by the DataModule, unused: no selection), 2 test windows.
RADOLAN_SPLIT_FRAMES = {"train": (0, 5), "val": (5, 8), "test": (8, 12)}
# RADOLAN runs: the noise fields stand in for auxiliary data the real store lacks; holes are
# radar outages (conf/masks/radar_outage.yaml), in training and in the fixed evaluation masks
RADOLAN_EXTRA = ("data.aux=all", "masks=radar_outage")
# the dry hour every RADOLAN YW checkpoint is also scored on (zero-shot): bias in dry holes
DRY = "radolan_ry"
DATASET_NOTES = {
    DRY: (
        "Real DWD RADOLAN RY, 2020-01-01 15:00-16:00 UTC (13 frames of 900 x 900 km, 5 min, almost dry), never seen in "
        "training: every network is its RADOLAN YW checkpoint (task and normaliser from the checkpoint), the whole "
        "store is test (`data.split=test_only`), radar-outage holes. Bias = mean(prediction - truth) over hole "
        "pixels: the spurious rain a method puts into dry holes (issue goal: <= 0.005 mm/h)."
    ),
    "synthetic": (
        "Default synthetic store (`write_synthetic_store(seed=0)`: 192 frames of 128 x 128 px at 2 km, 5 min), "
        "with auxiliary wind u, v and temperature t that drive the rain (the attention variants can use them). "
        "Split of `conf/data/synthetic.yaml`: contiguous 70/15/15 % blocks with 12-frame gaps."
    ),
    "radolan_yw": (
        "Real DWD RADOLAN YW, 2017-08-16 00:55-01:50 UTC (12 frames of 1100 x 900 km, 5 min, 38 % no-data outside the "
        "coverage, which is never scored). Frames [0, 5) train, [5, 8) validation (unused), [8, 12) test: only 2 test "
        "windows, so the temporal correlation is over 2 hole means and says little. Holes: radar outages (the 150 km "
        "coverage disc of 1-2 DWD radars, conf/masks/radar_outage.yaml), in training and in the 32 fixed evaluation "
        "masks. **Auxiliary fields: none exist "
        "for this data; the attention variants get two smooth noise fields drawn independently of the rain, so "
        "attention cannot help here** (any difference to the plain variants is noise of training)."
    ),
}


def prepare_synthetic(work: Path, quick: bool) -> Path:
    from nowcast_infill.data.synthetic import write_synthetic_store

    store = work / ("synthetic_quick.zarr" if quick else "synthetic.zarr")
    if not store.exists():
        # quick: a small store of the same generator so that the whole pipeline runs in seconds
        write_synthetic_store(store, **({"n_times": 64, "ny": 64, "nx": 64} if quick else {}))
    return store


def prepare_radolan(work: Path) -> Path:
    folder = require_inputs(SHARED_DATA / "radolan" / "yw", "*", "RADOLAN YW")
    plain = ensure_converted(str(folder / "*"), work / "radolan_yw.zarr", "radolan")
    # the U-Net scores whole frames, whose sides must be multiples of 2**depth (8): 1100 x 900 is not
    return add_uninformative_aux(plain, work / "radolan_yw_noiseaux_crop8.zarr", seed=0, crop_multiple_of=8)


def prepare_dry(work: Path) -> Path:
    folder = require_inputs(SHARED_DATA / "radolan" / "ry", "*", "RADOLAN RY")
    plain = ensure_converted(str(folder / "*"), work / "radolan_ry.zarr", "radolan")
    # the same two noise fields as the YW store, so that every variant's checkpoint can run on it
    return add_uninformative_aux(plain, work / "radolan_ry_noiseaux_crop8.zarr", seed=0, crop_multiple_of=8)


def run_dry(store: Path, trained: list[RunResult], classical: list[str], work: Path,
            train_overrides: list[str] | None) -> list[RunResult]:
    """Score every RADOLAN YW checkpoint of `trained` and each classical method on the dry RADOLAN RY
    hour, zero-shot (task and normaliser from the checkpoint, the whole store is test): the bias in
    holes where there is (almost) no rain to find."""
    runs = runs_folder(work, DRY, train_overrides or [])

    def base(run_dir: Path) -> list[str]:
        return [*common_overrides(run_dir, store, run_dir / "stats.json", "radolan", []), *RADOLAN_EXTRA,
                "data.split=test_only"]

    results = []
    for net in trained:
        eval_dir = runs / f"{net.method}_seed{net.seed}_eval"
        results.append(evaluate_method(DRY, net.method, base(eval_dir), eval_dir, ckpt_path=Path(net.checkpoint),
                                       seed=net.seed))
    for method in classical:
        eval_dir = runs / f"{method}_eval"
        results.append(evaluate_method(DRY, method, [*base(eval_dir), "task=infill"], eval_dir))
    for result in results:
        log(f"{DRY}: {result.method} seed {result.seed}: bias in holes {result.metrics.get('bias'):.5f} mm/h")
    return results


def run_dataset(name: str, store: Path, budget: Budget, seeds: list[int], variants: list[str], classical: list[str],
                work: Path, quick: bool, train_overrides: list[str] | None = None) -> list[RunResult]:
    """Train and score every variant x seed, then score the classical baselines once."""
    split = None
    data_cfg = "synthetic"
    extra: list[str] = []
    if name == "radolan_yw":
        split = frame_split(store, **RADOLAN_SPLIT_FRAMES)
        data_cfg = "radolan"
        extra = list(RADOLAN_EXTRA)
    if quick:
        extra += ["data.eval_masks.n=4"]
    stats = work / f"{store.stem}.normalization.json"
    task = ["task=infill"]
    return run_methods(name, runs_folder(work, name, train_overrides or []),
                       lambda run_dir: common_overrides(run_dir, store, stats, data_cfg, task) + extra,
                       budget, seeds, variants, classical, split, train_extra=train_overrides or [])


def write_report(results: list[RunResult], budgets: dict[str, Budget], seeds: list[int], out: Path,
                 total_s: float, prov: dict, quick: bool = False, crop_notes: dict[str, str] | None = None,
                 train_overrides: list[str] | None = None) -> Path:
    figures = out / "figures"
    lines = [
        "# Infilling results",
        "",
        *(["**--quick run: 2 steps on a 64-frame 64 x 64 synthetic store; the numbers are meaningless.**", ""]
          if quick else []),
        "Written by `experiments/results_infill.py`; every number below comes from that run "
        "(raw values: `infill_runs.json`). Scores are on **hole pixels** only (hidden by the fixed, seeded "
        "evaluation masks and valid in the truth), on the test split, in mm/h. Networks: mean ± sample std over "
        "seeds of the last weights after the fixed budget (no early stopping or checkpoint selection). "
        "Classical baselines fill the hole of the centre frame from its observed pixels only and are deterministic. "
        "All methods are scored by `ni-eval` on exactly the same windows and masks.",
        "",
        provenance_block(prov, budgets, seeds, total_s),
        *([f"Network training overrides: `{' '.join(train_overrides)}`.", ""] if train_overrides else []),
    ]
    for name in budgets:
        groups = group_by_method(results, name)
        if not groups:
            continue
        note = (crop_notes or {}).get(name)
        lines += [f"## {name}", "", DATASET_NOTES[name] + (f" Grid: {note}." if note else ""), "",
                  metrics_table(groups, COLUMNS), ""]
        lines += ["Notes (generated from the table):", ""]
        lines += [f"- {n}" for n in winners_notes(groups, VERDICTS)]
        lines.append("")
        bar = bar_chart(groups, "rmse", "RMSE on hole pixels (mm/h)", f"infill, {name}: RMSE (mean ± std over seeds)",
                        figures / f"infill_{name}_rmse.png")
        lines += [f"![RMSE by method, {name}](figures/{bar.name})", ""]
        nets = [r for r in results if r.dataset == name and r.kind == "network" and r.figures]
        if nets:
            best = min(nets, key=lambda r: r.metrics.get("rmse", float("inf")))
            panel = copy_figure(best.figures[0], figures / f"infill_{name}_example.png")
            lines += [f"Example test window, {best.method} seed {best.seed} (input with hole, truth, prediction, error):", "",
                      f"![example infill, {name}](figures/{panel.name})", ""]
    dry = group_by_method(results, DRY)
    if dry:
        lines += [f"## {DRY}: dry hour, zero-shot", "", DATASET_NOTES[DRY], "",
                  metrics_table(dry, [("bias", "bias in holes mm/h"), ("mae", "MAE mm/h"), ("rmse", "RMSE mm/h")], digits=4),
                  ""]
    path = out / "infill.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["synthetic", "radolan_yw"], choices=["synthetic", "radolan_yw"])
    add_budget_arguments(parser, CLASSICAL, "infill.md",
                         "tiny check: 2 steps, small synthetic store, 4 evaluation masks (numbers meaningless)")
    args = parser.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    prov = provenance(None if argv is None else [__file__, *argv])
    steps = 2 if args.quick else args.steps
    start = time.perf_counter()
    stores = {}
    for name in args.datasets:
        stores[name] = prepare_synthetic(args.work, args.quick) if name == "synthetic" else prepare_radolan(args.work)
    results: list[RunResult] = []
    budgets = {}
    for name, store in stores.items():
        # 64 px = 128 km of synthetic data (2 km pixels); 96 px = 96 km of RADOLAN (1 km pixels)
        crop = 32 if args.quick else (64 if name == "synthetic" else 96)
        budgets[name] = Budget(steps=steps, batch_size=args.batch_size, crop_size=crop, encoder_channels=tuple(args.channels))
        results += run_dataset(name, store, budgets[name], args.seeds, args.variants, args.classical, args.work, args.quick,
                               args.train_override)
        save_results(results, args.out / "infill_runs.json")
    if "radolan_yw" in stores and not args.quick:
        trained = [r for r in results if r.dataset == "radolan_yw" and r.kind == "network"]
        results += run_dry(prepare_dry(args.work), trained, args.classical, args.work, args.train_override)
        save_results(results, args.out / "infill_runs.json")
    path = write_report(results, budgets, args.seeds, args.out, time.perf_counter() - start, prov, args.quick,
                        {name: store_crop_note(store) for name, store in stores.items()}, args.train_override)
    log(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
