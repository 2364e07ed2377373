"""The result scripts (experiments/results_*.py): their helpers, and each script end to end at a
tiny budget on synthetic data (train -> ni-eval of networks and baselines -> report + figures)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

import results_common as rc  # noqa: E402


def test_mean_std_and_format_ignore_nan_and_say_so():
    assert rc.mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)), 2)
    mean, std, n = rc.mean_std([5.0])
    assert (mean, n) == (5.0, 1) and math.isnan(std)
    assert rc.format_mean_std([1.0, 3.0], digits=2) == "2.00 ± 1.41"
    assert rc.format_mean_std([1.0, float("nan")], digits=1) == "1.0 (n=1)"
    assert rc.format_mean_std([float("nan")]) == "n/a"


def _run(method, kind, seed, **metrics):
    return rc.RunResult("d", method, kind, seed, metrics)


def test_table_and_notes_report_a_winning_baseline():
    results = [_run("pconv", "network", 0, rmse=1.0), _run("pconv", "network", 1, rmse=1.2),
               _run("laplace", "baseline", None, rmse=0.5)]
    groups = rc.group_by_method(results, "d")
    table = rc.metrics_table(groups, [("rmse", "RMSE")]).splitlines()
    assert table[0].startswith("| method | kind | seeds | RMSE |")
    assert table[2].startswith("| pconv | network | 2 | 1.100 ± 0.141 |")
    assert table[3].startswith("| laplace | baseline | 1 | 0.500 |")
    note = rc.winners_notes(groups, [("rmse", "RMSE", False)])[0]
    assert "**laplace**" in note and "beats every network" in note
    note = rc.winners_notes(groups, [("rmse", "RMSE", True)])[0]
    assert "**pconv**" in note and "best classical baseline: laplace" in note


def test_git_commit_and_provenance():
    commit = rc.git_commit()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit), commit
    prov = rc.provenance(["experiments/results_infill.py", "--steps", "3"])
    assert prov["command"] == "python experiments/results_infill.py --steps 3"
    assert prov["date"].endswith("UTC") and "CPU cores" in prov["machine"]


def _store_without_aux(path: Path, seed: int, no_data_margins: bool = False) -> Path:
    """A synthetic store like the real ones here (RADOLAN YW, KNMI): no aux fields."""
    from nowcast_infill.data.synthetic import generate_synthetic

    ds = generate_synthetic(n_times=6, ny=48, nx=48, seed=seed)
    ds = ds.drop_vars([v for v in ds.data_vars if v.startswith("aux_")] + ["y_aux", "x_aux"])
    if no_data_margins:
        # no-data rows 0..9 and columns 35..47 in every frame, as outside a radar circle
        ds["precip"][:, :10, :] = np.nan
        ds["precip"][:, :, 35:] = np.nan
    ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=False)
    return path


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> Path:
    return _store_without_aux(tmp_path_factory.mktemp("store") / "s.zarr", seed=1, no_data_margins=True)


def test_uninformative_aux_depends_on_the_seed_only_and_crop_keeps_every_valid_pixel(small_store, tmp_path):
    other = _store_without_aux(tmp_path / "other_rain.zarr", seed=2)
    a = rc.add_uninformative_aux(small_store, tmp_path / "a.zarr", seed=5, factor=4)
    b = rc.add_uninformative_aux(other, tmp_path / "b.zarr", seed=5, factor=4)
    with xr.open_zarr(a) as da, xr.open_zarr(b) as db, xr.open_zarr(small_store) as src:
        assert sorted(v for v in da.data_vars if v.startswith("aux_")) == ["aux_n1", "aux_n2"]
        # different rain, same seed -> identical aux: the fields carry no information about the rain
        np.testing.assert_array_equal(da["aux_n1"].values, db["aux_n1"].values)
        assert da["aux_n1"].dims == ("time", "y_aux", "x_aux") and da.sizes["y_aux"] == 12
        np.testing.assert_array_equal(da["precip"].values, src["precip"].values)

    cropped = rc.add_uninformative_aux(small_store, tmp_path / "c.zarr", seed=5, factor=4, crop_multiple_of=8)
    with xr.open_zarr(cropped) as dc, xr.open_zarr(small_store) as src:
        full = src["precip"].values
        assert dc.sizes["y"] % 8 == 0 and dc.sizes["x"] % 8 == 0
        assert dc.sizes["y"] * dc.sizes["x"] < full.shape[1] * full.shape[2]
        assert np.isfinite(dc["precip"].values).sum() == np.isfinite(full).sum()
        assert rc.store_crop_note(cropped).endswith("valid pixel-frames cut away: 0")
        from nowcast_infill.schema import validate_store

        validate_store(dc)
    with pytest.raises(ValueError, match="already has aux fields"):
        rc.add_uninformative_aux(cropped, tmp_path / "d.zarr")


def test_frame_split_gives_inclusive_dates_and_refuses_out_of_range(small_store):
    split = rc.frame_split(small_store, train=(0, 3), val=(3, 4), test=(4, 6))
    times = rc.store_times(small_store)
    assert split["dates"]["train"] == [str(times[0])[:19], str(times[2])[:19]]
    assert split["dates"]["test"][1] == str(times[5])[:19]
    with pytest.raises(ValueError, match=r"test frames \[4, 9\)"):
        rc.frame_split(small_store, train=(0, 3), val=(3, 4), test=(4, 9))


def _check_report(md: Path, methods: list[str], figure_names: list[str]) -> str:
    text = md.read_text()
    assert "--quick run" in text and "- commit: `" in text and "- command: `python experiments/" in text
    for method in methods:
        assert re.search(rf"^\| {method} \| (network|baseline) \| \d \| [0-9.]", text, re.MULTILINE), method
    for name in figure_names:
        png = md.parent / "figures" / name
        assert png.is_file() and 0 < png.stat().st_size < rc.MAX_FIGURE_BYTES, name
        assert f"(figures/{name})" in text
    return text


def test_results_infill_quick_end_to_end(tmp_path):
    import results_infill

    md = results_infill.main(["--quick", "--datasets", "synthetic", "--seeds", "0", "1", "--variants", "pconv",
                              "lstm_attention", "--classical", "nearest", "laplace",
                              "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    text = _check_report(md, ["pconv", "lstm_attention", "nearest", "laplace"],
                         ["infill_synthetic_rmse.png", "infill_synthetic_example.png"])
    # two seeds -> a spread; the deterministic baselines have none
    assert re.search(r"^\| pconv \| network \| 2 \| [0-9.]+ ± [0-9.]+ \|", text, re.MULTILINE)
    assert (tmp_path / "out" / "infill_runs.json").is_file()


def test_results_nowcast_quick_end_to_end(tmp_path):
    import results_nowcast

    md = results_nowcast.main(["--quick", "--seeds", "0", "--variants", "pconv", "--classical", "persistence",
                               "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    text = _check_report(md, ["pconv", "persistence"], ["nowcast_synthetic_leadtime.png", "nowcast_synthetic_example.png"])
    assert text.count("### Lead time +") == results_nowcast.FUTURE
    assert "### Lead time +30 min" in text


def test_results_zero_shot_quick_end_to_end(shared_data, tmp_path, monkeypatch):
    """Trained on KNMI + BOM + RMI (data.stores, train_only), scored on RADOLAN YW with the task and
    normaliser of the checkpoint, beside extrapolation on the same pixels."""
    import results_zero_shot

    monkeypatch.setattr(rc, "SHARED_DATA", shared_data)
    monkeypatch.setattr(results_zero_shot, "SHARED_DATA", shared_data)
    monkeypatch.setenv("NOWCAST_INFILL_MOTION_CACHE", str(tmp_path / "motion"))
    md = results_zero_shot.main(["--quick", "--seeds", "0", "--classical", "extrapolation",
                                 "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    text = md.read_text()
    pooled = text.split("## Lead +")[0]  # the first table: all lead times pooled
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (pconv|extrapolation) \| \w+ \| 1 \|(.*)$", pooled, re.M)}
    assert set(rows) == {"pconv", "extrapolation"}, text
    # the same pixels scored for both (n_pixels column, after RMSE, MAE, CSI, CSI +30 min)
    n_pixels = {name: row.split("|")[4].strip() for name, row in rows.items()}
    assert n_pixels["pconv"] == n_pixels["extrapolation"] and int(n_pixels["pconv"]) > 0
    assert text.count("## Lead +") == results_zero_shot.FUTURE
    # nothing was fitted on the target store for the network: its evaluation wrote no statistics
    runs = tmp_path / "work" / "runs" / "zero_shot"
    assert not (runs / "pconv_seed0_eval" / "stats.json").exists()
    assert (runs / "extrapolation_eval" / "stats.json").exists()  # the path the network's evaluation had too
    # the infill twin: the same stores, radar-outage holes, scored beside temporal_flow
    md = results_zero_shot.main(["--quick", "--task", "infill", "--seeds", "0", "--classical", "temporal_flow",
                                 "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert md.name == "zero_shot_infill.md"
    rows = re.findall(r"^\| (pconv|temporal_flow) \| \w+ \| 1 \|", md.read_text(), re.M)
    assert sorted(rows) == ["pconv", "temporal_flow"]


def _raw_run(dataset, method, kind, seed, **metrics):
    return {"dataset": dataset, "method": method, "kind": kind, "seed": seed, "metrics": metrics}


def test_skill_goals_decide_from_the_runs_both_ways():
    import skill_goals

    def nowcast(net_rmse, net_csi):
        leads = {f"rmse/lead{k}": v for k, v in zip(range(1, 7), [0.2, 0.3, 0.35, 0.4, 0.45, 0.5])}
        runs = [_raw_run("knmi", "sprog", "baseline", None, rmse=0.4, **leads, **{"csi@1mmh/lead6": 0.58}),
                _raw_run("knmi", "extrapolation", "baseline", None, rmse=0.45, **{k: v + 0.05 for k, v in leads.items()},
                     **{"csi@1mmh/lead6": 0.53})]
        for seed, csi in enumerate(net_csi):
            runs.append(_raw_run("knmi", "pconv", "network", seed, rmse=0.3,
                             **{k: v + net_rmse for k, v in leads.items()}, **{"csi@1mmh/lead6": csi}))
        return skill_goals.report(runs, [], [])

    assert "**holds**" in nowcast(-0.01, [0.62, 0.61])
    assert "**does not hold**" in nowcast(+0.001, [0.62, 0.61])  # worse than S-PROG at every lead
    assert "**does not hold**" in nowcast(-0.01, [0.64, 0.56])  # mean - std below S-PROG
    infill = [_raw_run("radolan_yw", "temporal_flow", "baseline", None, rmse=0.6, **{"csi@1mmh": 0.8}),
              _raw_run("radolan_ry", "pconv", "network", 0, bias=0.004)]
    infill += [_raw_run("radolan_yw", m, "network", s, rmse=r + 0.01 * s, **{"csi@1mmh": 0.85})
               for m, r in [("pconv", 0.47), ("lstm", 0.5), ("attention", 0.49), ("lstm_attention", 0.52)] for s in (0, 1)]
    text = skill_goals.report([], [], infill)
    assert "ratio 0.79 | **holds**" in text and text.count("**holds**") == 3
    assert "lstm_attention 0.5250 ± 0.0071 > lstm 0.5050 ± 0.0071 (separated)" in text
    assert "attention 0.4950 ± 0.0071 > pconv 0.4750 ± 0.0071 (separated)" in text
    infill[1]["metrics"]["bias"] = 0.006
    assert "+0.0060 | **does not hold**" in skill_goals.report([], [], infill)
