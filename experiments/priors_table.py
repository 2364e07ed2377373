"""Assemble experiments/results/priors.md's comparison table from `results_nowcast.py` runs.

Each run of `results_nowcast.py --out DIR` writes `DIR/nowcast_runs.json`; this script reads
several of them (label=path pairs) and prints RMSE per lead and CSI@1 mm/h at the last lead
for every network (mean ± std over the files' seeds) and classical method.

    python experiments/priors_table.py "prior null=experiments/results/priors/knmi_prior_null_runs.json" ...
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np

LEADS = 6


def main(pairs: list[str]) -> None:
    rows: dict[str, list[dict]] = defaultdict(list)
    for pair in pairs:
        label, path = pair.split("=", 1)
        for run in json.load(open(path)):
            name = f"{run['method']} ({label})" if run["kind"] == "network" else run["method"]
            if run["kind"] != "network" and rows.get(name):
                continue  # a deterministic method scored again by another run
            rows[name].append(run["metrics"])
    keys = [f"rmse/lead{lead}" for lead in range(1, LEADS + 1)] + ["rmse", f"csi@1mmh/lead{LEADS}", "csi@1mmh"]
    header = [f"RMSE +{5 * lead} min" for lead in range(1, LEADS + 1)] + ["RMSE all", f"CSI@1 +{5 * LEADS} min", "CSI@1 all"]
    print("| method | seeds | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 2) + "|")
    for name, metrics in rows.items():
        cells = []
        for key in keys:
            values = np.array([m[key] for m in metrics], float)
            cells.append(f"{values.mean():.3f}" + (f" ± {values.std(ddof=1):.3f}" if len(values) > 1 else ""))
        print(f"| {name} | {len(metrics)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
