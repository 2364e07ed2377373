"""The skill goals of issue 12, checked against the result scripts' raw runs.

Reads the `*_runs.json` files that `results_nowcast.py`, `results_zero_shot.py` and
`results_infill.py` write, and prints (or writes, `--out`) a Markdown table: each goal, the
numbers it is decided on, and whether it holds. No number is typed in: every one is computed
here from the runs.

    python experiments/skill_goals.py --nowcast experiments/results/nowcast_runs.json \\
        --zero-shot experiments/results/zero_shot_runs.json --infill experiments/results/infill_runs.json \\
        --out experiments/results/skill_goals.md
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

LEADS = 6  # the nowcast scripts' lead times (+5 ... +30 min)
CSI = "csi@1mmh"
NETWORK_ORDER = ("pconv", "lstm", "attention", "lstm_attention")


def load(path: Path | None) -> list[dict]:
    return [] if path is None else json.loads(Path(path).read_text())


def by_method(runs: Sequence[dict], dataset: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for run in runs:
        if run["dataset"] == dataset:
            out.setdefault(run["method"], []).append(run)
    return out


def stat(runs: Sequence[dict], key: str) -> tuple[float, float]:
    """Mean and sample std (0 for one run) of metric `key` over `runs`."""
    values = np.array([float(r["metrics"].get(key, math.nan)) for r in runs])
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def fmt(mean: float, std: float, runs: Sequence[dict]) -> str:
    return f"{mean:.3f} ± {std:.3f}" if len(runs) > 1 else f"{mean:.3f}"


def networks(groups: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {m: rs for m, rs in groups.items() if rs[0]["kind"] == "network"}


def classical(groups: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {m: rs for m, rs in groups.items() if rs[0]["kind"] != "network"}


def verdict(ok: bool) -> str:
    return "**holds**" if ok else "**does not hold**"


def nowcast_goal(runs: list[dict]) -> list[str]:
    groups = by_method(runs, "knmi")
    nets, refs = networks(groups), classical(groups)
    missing = [m for m in ("extrapolation", "sprog") if m not in refs]
    if not nets or missing:
        return [f"| KNMI nowcast | runs lack {missing or 'networks'} | – |"]
    best = min(nets, key=lambda m: stat(nets[m], "rmse")[0])
    rows, ok = [], True
    for lead in range(1, LEADS + 1):
        key = f"rmse/lead{lead}"
        mean, std = stat(nets[best], key)
        others = {m: stat(refs[m], key)[0] for m in ("extrapolation", "sprog")}
        beats = all(mean < v for v in others.values())
        ok &= beats
        rows.append(f"+{lead * 5} min RMSE {fmt(mean, std, nets[best])} vs extrapolation {others['extrapolation']:.3f}, "
                    f"S-PROG {others['sprog']:.3f}")
    key = f"{CSI}/lead{LEADS}"
    mean, std = stat(nets[best], key)
    sprog_csi = stat(refs["sprog"], key)[0]
    csi_ok = mean - std > sprog_csi and len(nets[best]) >= 2
    rows.append(f"CSI@1 mm/h +30 min {fmt(mean, std, nets[best])} (mean − std {mean - std:.3f}) vs S-PROG {sprog_csi:.3f} "
                f"over {len(nets[best])} seeds")
    return [f"| KNMI nowcast: best network (`{best}`) beats extrapolation and S-PROG on RMSE at every lead and on "
            f"CSI@1 mm/h at +30 min by one std | {'<br>'.join(rows)} | {verdict(ok and csi_ok)} |"]


def zero_shot_goal(runs: list[dict]) -> list[str]:
    groups = by_method(runs, "radolan_yw")
    nets, refs = networks(groups), classical(groups)
    if not nets or "extrapolation" not in refs:
        return ["| zero-shot | runs lack networks or extrapolation | – |"]
    key = f"{CSI}/lead{LEADS}"
    best = max(nets, key=lambda m: stat(nets[m], key)[0])
    mean, std = stat(nets[best], key)
    ref = {m: stat(rs, key)[0] for m, rs in refs.items()}
    detail = f"`{best}` {fmt(mean, std, nets[best])} vs " + ", ".join(f"{m} {v:.3f}" for m, v in ref.items())
    return [f"| zero-shot nowcast, trained on KNMI + BOM + RMI, scored on RADOLAN YW: CSI@1 mm/h at +30 min ≥ "
            f"extrapolation | {detail} | {verdict(mean >= ref['extrapolation'])} |"]


def infill_goals(runs: list[dict]) -> list[str]:
    groups = by_method(runs, "radolan_yw")
    nets, refs = networks(groups), classical(groups)
    if not nets or not refs:
        return ["| RADOLAN infill | runs lack networks or classical methods | – |"]
    best = min(nets, key=lambda m: stat(nets[m], "rmse")[0])
    mean, std = stat(nets[best], "rmse")
    ref = min(refs, key=lambda m: stat(refs[m], "rmse")[0])
    ref_rmse = stat(refs[ref], "rmse")[0]
    ratio = mean / ref_rmse
    best_csi = max(nets, key=lambda m: stat(nets[m], CSI)[0])
    csi_mean, csi_std = stat(nets[best_csi], CSI)
    ref_csi = max(refs, key=lambda m: stat(refs[m], CSI)[0])
    ref_csi_value = stat(refs[ref_csi], CSI)[0]
    rows = [
        f"| RADOLAN YW infill (radar-outage holes): best network hole-RMSE ≤ 0.8 × best classical | `{best}` "
        f"{fmt(mean, std, nets[best])} vs `{ref}` {ref_rmse:.3f}: ratio {ratio:.2f} | {verdict(ratio <= 0.8)} |",
        f"| RADOLAN YW infill: best network CSI@1 mm/h ≥ best classical | `{best_csi}` {fmt(csi_mean, csi_std, nets[best_csi])} "
        f"vs `{ref_csi}` {ref_csi_value:.3f} | {verdict(csi_mean >= ref_csi_value)} |",
    ]
    dry = networks(by_method(runs, "radolan_ry"))
    if dry:
        biases = {m: stat(rs, "bias") for m, rs in dry.items()}
        worst = max(abs(b[0]) for b in biases.values())
        detail = ", ".join(f"`{m}` {b[0]:+.4f}" for m, b in biases.items())
        rows.append(f"| dry hour (RADOLAN RY, zero-shot): every network's mean bias in holes ≤ 0.005 mm/h | {detail} | "
                    f"{verdict(worst <= 0.005)} |")
    return rows


def ordering_rows(runs: list[dict]) -> list[str]:
    rows = []
    # the dry hour is a bias check, not a ranking: only the data the networks were trained for
    for dataset in sorted({r["dataset"] for r in runs if r["kind"] == "network"} - {"radolan_ry"}):
        nets = networks(by_method(runs, dataset))
        if not all(m in nets for m in NETWORK_ORDER):
            continue
        s = {m: stat(nets[m], "rmse") for m in NETWORK_ORDER}
        seeds = len(nets["pconv"])

        def pair(a: str, b: str) -> str:
            holds = s[a][0] <= s[b][0]
            # within one std of either side: the seeds do not separate the two
            separated = abs(s[a][0] - s[b][0]) > max(s[a][1], s[b][1])
            return (f"{a} {s[a][0]:.4f} ± {s[a][1]:.4f} {'≤' if holds else '>'} {b} {s[b][0]:.4f} ± {s[b][1]:.4f}"
                    f" ({'separated' if separated else 'within one std'})")

        rows.append(f"| {dataset} ({seeds} seeds) | {pair('lstm_attention', 'lstm')} | {pair('attention', 'pconv')} |")
    return rows


def report(nowcast: list[dict], zero_shot: list[dict], infill: list[dict]) -> str:
    lines = [
        "| goal | measured | verdict |",
        "|---|---|---|",
        *(nowcast_goal(nowcast) if nowcast else []),
        *(zero_shot_goal(zero_shot) if zero_shot else []),
        *(infill_goals(infill) if infill else []),
        "",
    ]
    ordering = ordering_rows(infill)
    if ordering:
        lines += ["Seed ordering of the published study (lstm_attention ≤ lstm, attention ≤ pconv on hole RMSE), "
                  "mean ± sample std over seeds:", "",
                  "| infill data | lstm_attention vs lstm | attention vs pconv |", "|---|---|---|", *ordering, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nowcast", type=Path, help="nowcast_runs.json of results_nowcast.py (KNMI)")
    parser.add_argument("--zero-shot", type=Path, help="zero_shot_runs.json of results_zero_shot.py")
    parser.add_argument("--infill", type=Path, help="infill_runs.json of results_infill.py")
    parser.add_argument("--out", type=Path, help="write the table here (else print it)")
    args = parser.parse_args(argv)
    text = report(load(args.nowcast), load(args.zero_shot), load(args.infill))
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return text


if __name__ == "__main__":
    main()
