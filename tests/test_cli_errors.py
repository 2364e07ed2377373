"""Every `ni-*` command answers an ordinary mistake with one line and exit status 2.

Each case runs the console script as a subprocess on tiny inputs and checks: status 2, no
traceback, stderr is exactly one line `ni-<cmd>: error: ...`, and that line names the key or
path as written on the command line and says how to fix it. With `HYDRA_FULL_ERROR=1` or
`-v` the traceback comes first. The cases run two at a time (the commands check before
loading torch, so most take about a second).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# (command, arguments, [texts the error line must contain: the key/path as written, then the fix])
# Paths are relative to the scratch folder the commands run in (see `scratch`):
# tiny.zarr: a 8-frame 16x16 synthetic store; old.zarr: another (empty) store; plain/: a folder
# holding a file; afile: a regular file (so afile/x cannot be created); linked/: a symlink to
# a folder with a bad RADOLAN ASCII file.
CASES = [
    ("train", ["trainer.max_epochs=abc"], ["trainer.max_epochs: 'abc'", "set trainer.max_epochs="]),
    ("train", ["data.store=tiny.zarr", "data.batch_size=-1"], ["data.batch_size: -1", "set data.batch_size="]),
    ("train", ["seed=abc"], ["seed:", "set seed="]),
    ("train", ["trainer.max_epoch=3"], ["'trainer.max_epoch'", "+trainer.max_epoch=3"]),
    ("train", ["model=nosuch"], ["model=nosuch", "choose model= one of", "lstm_attention"]),
    ("train", ["trainer.max_epochs=[1,"], ["trainer.max_epochs=[1,", "write key=value"]),
    ("train", ["data=zarr"], ["data.store: required", "pass data.store="]),
    ("train", ["data.store=tiny.zarr", "ckpt_path=missing.ckpt"], ["ckpt_path=missing.ckpt", "point it at a .ckpt"]),
    ("train", ["data.store=nowhere.zarr"], ["data.store=nowhere.zarr", "ni-synth output=nowhere.zarr"]),
    ("train", ["paths.output_dir=afile/run"], ["paths.output_dir=afile/run", "choose a writable folder"]),
    ("eval", ["model=nearest", "data.store=tiny.zarr", "ckpt_path=missing.ckpt"], ["ckpt_path=missing.ckpt", "point it at"]),
    ("eval", ["model=nearest", "split=train"], ["split=train", "set split=test or split=val"]),
    ("eval", ["model=attention"], ["model=attention", "pass ckpt_path="]),
    ("eval", ["model=nearest", "data.store=nowhere.zarr"], ["data.store=nowhere.zarr", "fix data.store="]),
    ("infill", ["input=tiny.zarr"], ["output: required", "pass output="]),
    ("infill", ["input=nowhere.zarr", "output=o.zarr"], ["input=nowhere.zarr", "ni-convert"]),
    ("infill", ["input=tiny.zarr", "output=./tiny.zarr/"], ["output=./tiny.zarr/", "input=tiny.zarr", "write to a new path"]),
    ("infill", ["input=tiny.zarr", "output=plain"], ["output=plain", "not a Zarr store", "does not exist yet"]),
    ("infill", ["input=tiny.zarr", "output=afile/o.zarr"], ["output=afile/o.zarr", "choose another output="]),
    ("infill", ["input=tiny.zarr", "output=o.zarr", "ckpt_path=missing.ckpt"], ["ckpt_path=missing.ckpt", "point it at"]),
    ("infill", ["input=tiny.zarr", "output=o.zarr", "coverage_min_fraction=abc"],
     ["coverage_min_fraction='abc'", "set coverage_min_fraction="]),
    ("infill", ["input=tiny.zarr", "output=o.zarr", "model=extrapolation"], ["model='extrapolation'", "choose model="]),
    ("nowcast", ["input=nowhere.zarr", "output=n.zarr"], ["input=nowhere.zarr", "ni-synth"]),
    ("nowcast", ["input=tiny.zarr", "output=tiny.zarr"], ["output=tiny.zarr", "write to a new path"]),
    ("nowcast", ["input=tiny.zarr", "output=old.zarr"], ["output=old.zarr", "pass overwrite=true"]),
    ("nowcast", ["input=tiny.zarr", "output=n.zarr", "issue_time=yesterday"], ["issue_time=yesterday", "ISO time"]),
    ("nowcast", ["input=tiny.zarr", "output=n.zarr", "past=abc"], ["past='abc'", "set past="]),
    ("convert", ["inputs=x", "output=c.zarr", "workers=abc"], ["workers='abc'", "set workers="]),
    ("convert", ["inputs=x"], ["output: required", "pass output="]),
    ("convert", ["inputs=nothing/*", "output=c.zarr"], ["nothing/*", "check the path or glob"]),
    ("convert", ["inputs=x", "output=plain"], ["output=plain", "does not exist yet"]),
    ("convert", ["inputs=x", "output=afile/c.zarr"], ["output=afile/c.zarr", "choose another output="]),
    ("convert", ["source=nope", "inputs=x", "output=c.zarr"], ["'nope'", "valid names: pysteps, radolan"]),
    ("convert", ["source=radolan_ascii", "inputs=linked/*.asc", "output=c.zarr", "progress=false", "workers=1"],
     ["linked/RY_20221018-0005.asc", "has all six keys"]),
    ("synth", ["output=t.zarr", "n_times=abc"], ["n_times='abc'", "set n_times="]),
    ("synth", ["output=old.zarr"], ["output=old.zarr", "pass overwrite=true"]),
    ("synth", ["output=afile/t.zarr"], ["output=afile/t.zarr", "choose another output="]),
    ("demo", ["variants=[nosuch]"], ["'nosuch'", "choose from attention,", "pconv"]),
    ("demo", ["paths.output_dir=afile/demo"], ["paths.output_dir=afile/demo", "choose a writable folder"]),
    ("demo", ["synthetic.n_times=abc"], ["synthetic.n_times='abc'", "set synthetic.n_times="]),
]
# The same mistakes with the traceback asked for: it comes first, the one line last.
VERBOSE_CASES = [
    ("infill", ["input=nowhere.zarr", "output=o.zarr"], {"HYDRA_FULL_ERROR": "1"}, "input=nowhere.zarr"),
    ("train", ["model=nosuch"], {"HYDRA_FULL_ERROR": "1"}, "model=nosuch"),
    ("convert", ["-v", "inputs=x", "output=c.zarr", "workers=abc"], {}, "workers='abc'"),
]


def _case_id(case) -> str:
    return f"ni-{case[0]} " + " ".join(case[1])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    from nowcast_infill.data.synthetic import write_synthetic_store

    root = tmp_path_factory.mktemp("cli_errors")
    write_synthetic_store(root / "tiny.zarr", n_times=8, ny=16, nx=16, seed=0)
    (root / "old.zarr").mkdir()
    (root / "old.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    (root / "plain").mkdir()
    (root / "plain" / "notes.txt").write_text("not a store")
    (root / "afile").write_text("a file, not a folder")
    real = root / "real_folder"
    real.mkdir()
    (real / "RY_20221018-0005.asc").write_text("ncols 3\n")  # truncated header
    (root / "linked").symlink_to(real)
    return root


def _run(command: str, args: list[str], cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
               NI_LOG_DIR=str(cwd / "logs"), WANDB_MODE="offline")
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(extra_env or {})
    return subprocess.run([str(BIN / f"ni-{command}"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def results(scratch) -> dict:
    """Every case run once, two at a time; prints the total wall time."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {_case_id(c): pool.submit(_run, c[0], c[1], scratch) for c in CASES}
        futures.update({"verbose " + _case_id(c): pool.submit(_run, c[0], c[1], scratch, c[2]) for c in VERBOSE_CASES})
        done = {key: future.result() for key, future in futures.items()}
    print(f"\n{len(done)} ni-* command runs in {time.perf_counter() - started:.1f} s (2 at a time)")
    return done


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_user_mistake_is_one_line_with_status_2(case, results):
    command, _, wanted = case
    result = results[_case_id(case)]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith(f"ni-{command}: error: "), line
    for text in wanted:
        assert text in line, f"{text!r} not in {line!r}"
    assert result.returncode == 2, result.stderr


def test_batch_size_is_named_as_the_user_wrote_it(results):
    # It used to fail late, inside the run, as "per_device_batch must be >= 1".
    stderr = results[_case_id(CASES[1])].stderr
    assert "per_device" not in stderr and stderr.startswith("ni-train: error: data.batch_size: -1"), stderr


@pytest.mark.parametrize("case", VERBOSE_CASES, ids=lambda c: " ".join(f"{k}={v}" for k, v in c[2].items()) + " " + _case_id(c))
def test_full_error_or_verbose_flag_shows_the_traceback(case, results):
    command, _, _, key = case
    result = results["verbose " + _case_id(case)]
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Traceback"), result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ni-{command}: error: ") and key in last, last


def test_mistakes_fail_before_any_output_is_written(scratch, results):
    # no half-made store or run folder next to the inputs
    leftovers = {"o.zarr", "n.zarr", "c.zarr", "t.zarr"} & {p.name for p in scratch.iterdir()}
    assert not leftovers
    assert sorted(p.name for p in (scratch / "plain").iterdir()) == ["notes.txt"]
    assert sorted(p.name for p in (scratch / "old.zarr").iterdir()) == ["zarr.json"]
