"""Verify a `ni-nowcast` product with pySTEPS' own verification and plotting functions.

1. `ni-nowcast ... issue_times=all` issues a forecast at every frame of a store (skipped
   with --product when one exists already);
2. each forecast lead is paired with the observation at its valid time, on the pixels
   where both exist (missing radar data is never counted as "no rain"), and pySTEPS scores
   the pairs: `det_cat_fct` (CSI, POD, FAR at --threshold mm/h) and `det_cont_fct` (RMSE,
   ME, Pearson correlation), accumulated over all issue times per lead time;
3. the table goes to OUT/verification.md and .csv; `pysteps.visualization.plot_precip_field`
   draws the observation and each lead of one issue time into OUT/nowcast_vs_observed.png.

    python experiments/verify_nowcast_pysteps.py --store data/knmi.zarr --model sprog --out verify_knmi
    python experiments/verify_nowcast_pysteps.py --store data/synthetic.zarr --model extrapolation \\
        --ckpt outputs/nowcast/runs/<run>/checkpoints/best.ckpt --out verify_net

Without --store a small synthetic store is written in OUT (a quick check of the chain).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

CATEGORICAL = ("CSI", "POD", "FAR")
CONTINUOUS = ("RMSE", "ME", "corr_p")


def issue_nowcasts(store: Path, product: Path, model: str, ckpt: str | None, past: int | None, n_leads: int | None) -> None:
    """Run the `ni-nowcast` command (as a user would) for every issue time of `store`."""
    command = [sys.executable, "-m", "nowcast_infill.cli.nowcast", f"input={store}", f"output={product}",
               "issue_times=all", "overwrite=true"]
    command += [f"ckpt_path={ckpt}"] if ckpt else [f"model={model}"]
    command += [f"past={past}"] if past else []
    command += [f"n_leads={n_leads}"] if n_leads and not ckpt else []
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, env=dict(os.environ, HYDRA_FULL_ERROR="1"))


def verify(product: xr.Dataset, observed: xr.Dataset, threshold: float) -> list[dict]:
    """One row per lead time: pySTEPS scores accumulated over every issue time."""
    from pysteps.verification import det_cat_fct_accum, det_cat_fct_compute, det_cat_fct_init
    from pysteps.verification import det_cont_fct_accum, det_cont_fct_compute, det_cont_fct_init

    obs_times = observed["time"].values
    rows = []
    for k, lead in enumerate(product["lead_time"].values):
        table, errors = det_cat_fct_init(threshold), det_cont_fct_init()
        pairs = issues = 0
        for i in range(product.sizes["forecast_reference_time"]):
            valid_time = product["time"].values[i, k]
            hit = np.nonzero(obs_times == valid_time)[0]
            if hit.size == 0:
                continue  # valid after the end of the record: nothing to verify against
            forecast = product["precip"].values[i, k]
            obs = observed["precip"].values[hit[0]]
            both = np.isfinite(forecast) & np.isfinite(obs)
            if not both.any():
                continue
            # pySTEPS counts a NaN pair as a correct "no rain": pass only the pairs that exist.
            det_cat_fct_accum(table, forecast[both], obs[both])
            det_cont_fct_accum(errors, forecast[both], obs[both])
            pairs += int(both.sum())
            issues += 1
        categorical = det_cat_fct_compute(table, list(CATEGORICAL)) if issues else {}
        continuous = det_cont_fct_compute(errors, list(CONTINUOUS)) if issues else {}
        rows.append({"lead_min": int(lead / np.timedelta64(1, "m")), "issue_times": issues, "pixel_pairs": pairs,
                     **{f"{s}@{threshold:g}mmh": float(categorical.get(s, np.nan)) for s in CATEGORICAL},
                     **{s: float(continuous.get(s, np.nan)) for s in CONTINUOUS}})
    return rows


def write_tables(rows: list[dict], out: Path, title: str) -> None:
    keys = list(rows[0])
    with open(out / "verification.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    lines = [f"# {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |" for r in rows]
    (out / "verification.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot_issue(product: xr.Dataset, observed: xr.Dataset, out: Path) -> Path:
    """Top row: the observations at the issue time and at each valid time; bottom row: the
    forecast of each lead, in pySTEPS' precipitation colours (grey: no data)."""
    from nowcast_infill.viz import plt  # the package's one matplotlib set-up (Agg backend)
    from pysteps.visualization import plot_precip_field

    # the wettest issue time (a dry panel shows nothing) among those observed at every lead
    issues = product["forecast_reference_time"].values
    obs_times = observed["time"].values
    verifiable = [i for i in range(len(issues)) if np.isin(product["time"].values[i], obs_times).all()] or list(range(len(issues)))
    i = max(verifiable, key=lambda j: float(np.nansum(observed["precip"].sel(time=issues[j]).values)))
    n_leads = product.sizes["lead_time"]
    fig, axes = plt.subplots(2, n_leads + 1, figsize=(3.2 * (n_leads + 1), 6.4), squeeze=False)
    plot_precip_field(observed["precip"].sel(time=issues[i]).values, ax=axes[0, 0], colorbar=False, axis="off")
    axes[0, 0].set_title(f"observed at issue {np.datetime_as_string(issues[i], unit='m')}", fontsize=9)
    axes[1, 0].axis("off")
    for k in range(n_leads):
        lead_min = int(product["lead_time"].values[k] / np.timedelta64(1, "m"))
        valid = product["time"].values[i, k]
        if valid in obs_times:
            plot_precip_field(observed["precip"].sel(time=valid).values, ax=axes[0, k + 1], colorbar=False, axis="off")
            axes[0, k + 1].set_title(f"observed +{lead_min} min", fontsize=9)
        else:
            axes[0, k + 1].axis("off")
        plot_precip_field(product["precip"].values[i, k], ax=axes[1, k + 1], colorbar=False, axis="off")
        axes[1, k + 1].set_title(f"forecast +{lead_min} min", fontsize=9)
    path = out / "nowcast_vs_observed.png"
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="radar store (ni-convert / ni-synth); default: a small synthetic one in OUT")
    parser.add_argument("--model", default="extrapolation", help="ni-nowcast baseline: persistence, extrapolation, sprog")
    parser.add_argument("--ckpt", help="a nowcast checkpoint instead of --model")
    parser.add_argument("--past", type=int, help="past frames (baselines; default ni-nowcast's)")
    parser.add_argument("--n-leads", type=int, default=3, help="lead times (baselines)")
    parser.add_argument("--product", type=Path, help="an existing ni-nowcast product (issue_times) to verify as it is")
    parser.add_argument("--threshold", type=float, default=1.0, help="rain threshold of CSI/POD/FAR, mm/h")
    parser.add_argument("--out", type=Path, default=Path("verify_nowcast"))
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    store = args.store
    if store is None:
        from nowcast_infill.data.synthetic import write_synthetic_store

        store = args.out / "synthetic.zarr"
        if not store.exists():
            write_synthetic_store(store, n_times=16, ny=48, nx=48, seed=3)
    product_path = args.product or args.out / "nowcast.zarr"
    if args.product is None:
        issue_nowcasts(store, product_path, args.model, args.ckpt, args.past, args.n_leads)
    product, observed = xr.open_zarr(product_path), xr.open_zarr(store)
    if "forecast_reference_time" not in product.dims:
        raise SystemExit(f"{product_path}: one issue time only; write it with ni-nowcast issue_times=all (or [start, end]).")
    rows = verify(product, observed, args.threshold)
    title = f"{product.attrs['model']} on {store}: pySTEPS verification over {product.sizes['forecast_reference_time']} issue times"
    write_tables(rows, args.out, title)
    print(f"figure: {plot_issue(product, observed, args.out)}")
    return rows


if __name__ == "__main__":
    main()
