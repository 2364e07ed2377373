"""slurm/convert_array.sbatch on the local 2-node Slurm cluster: conversion by a job array.

- a 2-task array conversion equals a single-process conversion bit for bit;
- a killed task is named by its time range at finalise, and rerunning it alone completes the store;
- a missing file inside a task's range is an explicit gap (missing_frame).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

from slurm_cluster import slurm_cluster  # noqa: F401  (pytest fixture)
from test_archive_convert import TINY, TINY_OPTIONS, assert_same_store, write_synthetic_archive
from nowcast_infill.io.convert import convert
from nowcast_infill.io.region_writer import IncompleteConversionError, finalise_store, plan_store

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[1]
ONE_CPU_NO_GPU = ["--cpus-per-task=1", "--gpus-per-node=0", "--time=10"]


def _sbatch_array(env, tmp_path, store: Path, array: str, wait: bool = True) -> tuple[int, str]:
    cmd = ["sbatch", "--parsable", f"--array={array}", f"--output={tmp_path}/%x-%A_%a.out", *ONE_CPU_NO_GPU,
           *(["--wait"] if wait else []), "slurm/convert_array.sbatch", str(store)]
    env = dict(env, NI_CONVERT=f"{sys.executable} -m nowcast_infill.cli.convert", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    job = proc.stdout.strip().split(";")[0]
    assert job, proc.stderr
    return proc.returncode, job


def _logs(tmp_path: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.out")))


@pytest.mark.slow
def test_array_conversion_equals_one_process_and_a_killed_task_is_rerun_alone(slurm_cluster, tmp_path):  # noqa: F811
    # 12 steps in 3 bundles, step 9 missing: task 1 (steps 6-11) holds a gap
    bundles = write_synthetic_archive(tmp_path / "a", n_frames=12, shape=TINY, frames_per_bundle=4, skip_steps=[9])
    one = convert(bundles, tmp_path / "one.zarr", source="radolan", workers=1, progress=False, max_gap_s=None, **TINY_OPTIONS)
    store = tmp_path / "array.zarr"
    plan = plan_store(bundles, store, "radolan", tasks=2, **TINY_OPTIONS)
    assert [len(t["inputs"]) for t in plan["tasks"]] == [2, 1]

    # task 1 killed while queued or running: no record, so finalise names its range
    _, job = _sbatch_array(slurm_cluster, tmp_path, store, "0-1", wait=False)
    subprocess.run(["scancel", f"{job}_1"], env=slurm_cluster, check=True, timeout=30)
    subprocess.run(["sbatch", "--wait", "--dependency", f"afterany:{job}", "--output=/dev/null", "--wrap", "true",
                    *ONE_CPU_NO_GPU], env=slurm_cluster, cwd=tmp_path, timeout=300)
    with pytest.raises(IncompleteConversionError) as err:
        finalise_store(store)
    assert [k for k, *_ in err.value.incomplete] == [1], _logs(tmp_path)
    assert "task 1: 2017-08-16T00:45:00 to 2017-08-16T01:00:00" in str(err.value)

    code, _ = _sbatch_array(slurm_cluster, tmp_path, store, "1")  # the one task, alone
    assert code == 0, _logs(tmp_path)[-4000:]
    done = finalise_store(store)
    assert done["missing_times"] == one["missing_times"] == ["2017-08-16T00:50:00"]
    assert_same_store(tmp_path / "one.zarr", store)
    with xr.open_zarr(store) as ds:
        assert ds["missing_frame"].values.tolist() == [i == 9 for i in range(12)]


@pytest.mark.slow
def test_bash_route_plans_a_time_split_runs_the_array_and_finalises_after_it(slurm_cluster, tmp_path):  # noqa: F811
    # 8 steps in 2 bundles; time_range one step wider at the end: an explicit gap
    write_synthetic_archive(tmp_path / "a", n_frames=8, shape=TINY, frames_per_bundle=4)
    pattern = str(tmp_path / "a" / "YW-*.tar.gz")
    store = tmp_path / "time.zarr"
    env = dict(slurm_cluster, NI_CONVERT=f"{sys.executable} -m nowcast_infill.cli.convert", PYTHONPATH=str(REPO))
    # from tmp_path: the jobs' logs land there (the script's --output is relative to the submit directory)
    proc = subprocess.run(["bash", str(REPO / "slurm" / "convert_array.sbatch"), str(store), "split=time", "tasks=3",
                           f"inputs={pattern}", "time_range=['2017-08-16T00:05','2017-08-16T00:45']",
                           "importer.allow_nonstandard_grid=true"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    finalise_job = proc.stdout.split("finalise job ")[1].split()[0]
    subprocess.run(["sbatch", "--wait", "--dependency", f"afterany:{finalise_job}", "--output=/dev/null", "--wrap", "true",
                    *ONE_CPU_NO_GPU], env=slurm_cluster, cwd=tmp_path, timeout=300)
    assert not (tmp_path / "time.zarr.conversion").exists(), _logs(tmp_path)[-4000:]  # finalised
    assert '"frames_from_tasks": 8' in _logs(tmp_path) and '"frames_read": 0' in _logs(tmp_path)
    one = convert(sorted((tmp_path / "a").glob("*.tar.gz")), tmp_path / "one.zarr", source="radolan", workers=1,
                  progress=False, max_gap_s=None, **TINY_OPTIONS)
    assert one["n_frames_written"] == 8
    with xr.open_zarr(store) as ds:
        assert ds["missing_frame"].values.tolist() == [False] * 8 + [True]
        xr.testing.assert_identical(ds.isel(time=slice(0, 8)).drop_attrs()[["precip", "frame_valid_count", "frame_wet_count"]],
                                    xr.open_zarr(tmp_path / "one.zarr").drop_attrs()[["precip", "frame_valid_count",
                                                                                      "frame_wet_count"]])
