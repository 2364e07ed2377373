"""The three recipes of docs/architecture.md, followed literally.

Each fenced block tagged `recipe-<name>` is written where its `path=` says (under a scratch
folder that stands for the user's project), and the `bash` block's commands are run as
written, with `<run>` replaced by the run folder and a small store. Nothing in the package is
edited: the registry lines of the recipe (`append=true` blocks) are made through the entry
points the recipe offers as the outside-the-package route, installed as a real `.dist-info`
on PYTHONPATH, so `ni-convert` / `ni-eval` find them exactly as they would find an installed
plugin. If the docs and the package drift apart, these tests fail.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from process_watch import scaled

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w+) (recipe-[\w-]+)([^\n]*)\n(.*?)^```", re.M | re.S)


def recipe_blocks(name: str) -> list[dict]:
    """[{lang, path, append, text}] of the blocks tagged recipe-`name`, in document order."""
    blocks = []
    for lang, tag, attrs, text in FENCE.findall(DOC.read_text()):
        if tag != f"recipe-{name}":
            continue
        options = dict(re.findall(r"(\w+)=(\S+)", attrs))
        blocks.append({"lang": lang, "path": options.get("path"), "append": options.get("append") == "true",
                       "text": text})
    assert blocks, f"docs/architecture.md has no recipe-{name} block"
    return blocks


def write_files(blocks: list[dict], project: Path) -> list[dict]:
    """Write the file blocks that are new files of the user's project; return the others."""
    rest = []
    for block in blocks:
        path = block["path"]
        if path and not block["append"] and not path.startswith(("nowcast_infill/", "conf/", "pyproject.toml")):
            target = project / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block["text"])
        else:
            rest.append(block)
    return rest


def install_entry_point(project: Path, group: str, line: str) -> None:
    """A minimal installed distribution whose entry point is `line` ("name = module:attr")."""
    dist = project / "recipe_plugin-0.0.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: recipe-plugin\nVersion: 0.0\n")
    with open(dist / "entry_points.txt", "a") as fh:
        fh.write(f"[{group}]\n{line}\n")


def registry_line(blocks: list[dict], kind: str) -> str:
    """The recipe's `register(kind, name, "module:attr")` line as an entry-point line."""
    for block in blocks:
        found = re.search(rf'register\("{kind}", "(\w+)", "([\w.:]+)"\)', block["text"])
        if found:
            return f"{found.group(1)} = {found.group(2)}"
    raise AssertionError(f"no register('{kind}', ...) line in the recipe")


def run_commands(text: str, project: Path, env: dict, substitutions: dict[str, str]) -> list[str]:
    """Run each command line of a bash block in `project`; returns their outputs."""
    outputs = []
    for raw in text.strip().splitlines():
        line = raw
        for key, value in substitutions.items():
            line = line.replace(key, value)
        words = shlex.split(line.replace("$PWD", str(project)))
        assignments = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w) and words.index(w) == 0)
        words = [w for w in words if not (re.match(r"^[A-Z_]+=", w) and w.split("=", 1)[0] in assignments)]
        command = [str(BIN / words[0]), *words[1:]]
        done = subprocess.run(command, cwd=project, env={**env, **assignments}, capture_output=True, text=True,
                              timeout=scaled(300))
        assert done.returncode == 0, f"{raw}\n-> exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout + done.stderr)
    return outputs


@pytest.fixture
def project(tmp_path) -> tuple[Path, dict]:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}",
           "HYDRA_FULL_ERROR": "1"}
    return tmp_path, env


@pytest.mark.slow
def test_recipe_add_a_network(project):
    root, env = project
    commands = write_files(recipe_blocks("network"), root)
    (bash,) = [b for b in commands if b["lang"] == "bash"]
    lines = bash["text"].strip().splitlines()
    # a small store and a few steps: the recipe's commands otherwise as written
    small = {"ni-synth output=data/synthetic.zarr": "ni-synth output=data/synthetic.zarr n_times=48 ny=64 nx=64"}
    budget = (" +trainer.limit_train_batches=2 +trainer.limit_val_batches=1 +trainer.limit_test_batches=1"
              " data.batch_size=2 data.num_workers=0 data.crop_size=32 paths.output_dir=" + str(root / "run"))
    train_line = next(i for i, line in enumerate(lines) if " ni-train " in f" {line}")
    run_commands(small.get(lines[0], lines[0]), root, env, {})
    run_commands(lines[train_line] + " data.store=data/synthetic.zarr test=false" + budget, root, env, {})
    checkpoint = root / "run" / "checkpoints" / "best.ckpt"
    assert checkpoint.exists(), sorted(p.name for p in (root / "run").rglob("*.ckpt"))
    eval_line = lines[train_line + 1]
    (output,) = run_commands(eval_line + " data.store=data/synthetic.zarr +trainer.limit_test_batches=1 data.num_workers=0"
                             f" paths.output_dir={root / 'eval'}", root, env, {"<run>": str(root / "run")})
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    assert "tiny" in json.dumps(metrics), "the evaluation does not name the recipe's network"
    rmse = [value for key, value in _flat(metrics).items() if key.endswith("test/rmse")]
    assert rmse and np.isfinite(rmse[0]), sorted(_flat(metrics))[:40]


@pytest.mark.slow
def test_recipe_add_a_radar_source(project):
    root, env = project
    blocks = recipe_blocks("source")
    rest = write_files(blocks, root)
    install_entry_point(root, "nowcast_infill.source", registry_line(rest, "source"))
    (data_yaml,) = [b for b in rest if b["path"] == "conf/data/my_radar.yaml"]
    assert "_store" in data_yaml["text"]
    files = root / "my_files"
    files.mkdir()
    rng = np.random.default_rng(0)
    n_frames = 72  # enough for train, val and test windows with the default split gaps
    for index in range(n_frames):
        stamp = np.datetime64("2024-06-01T12:00") + np.timedelta64(5 * index, "m")
        precip = rng.gamma(0.5, 2.0, (32, 40)).astype(np.float32)
        precip[:3, :3] = np.nan  # no data stays no data
        name = str(stamp).replace("-", "").replace("T", "").replace(":", "")
        np.savez(files / f"my_radar_{name}.npz", precip=precip, x=np.arange(40.0), y=np.arange(32.0),
                 proj4="+proj=stere +lat_0=90 +lon_0=10 +units=km", time=str(stamp))
    (bash,) = [b for b in rest if b["lang"] == "bash"]
    convert_line, train_line = bash["text"].strip().splitlines()[:2]
    run_commands(convert_line, root, env, {})
    import xarray as xr

    with xr.open_zarr(root / "data" / "my_radar.zarr") as ds:
        assert ds.sizes["time"] == n_frames
        stored = ds["precip"].values
    assert np.isnan(stored[:, :3, :3]).all() and np.isfinite(stored[:, 3:, 3:]).all()
    # the recipe's data yaml: inside the package it is conf/data/my_radar.yaml; here it sits in a
    # config folder of the project, added to Hydra's search path, so the package stays untouched
    (root / "my_conf" / "data").mkdir(parents=True)
    (root / "my_conf" / "data" / "my_radar.yaml").write_text(data_yaml["text"])
    budget = (f" hydra.searchpath=[file://{root / 'my_conf'}] paths.data_dir=data paths.output_dir={root / 'run'}"
              " 'model.net.encoder_channels=[8,16]' data.crop_size=32 data.eval_tile=32 data.batch_size=2 data.num_workers=0"
              " +trainer.limit_train_batches=2 +trainer.limit_val_batches=1 +trainer.limit_test_batches=1")
    (output,) = run_commands(train_line + budget, root, env, {})
    assert (root / "run" / "checkpoints" / "last.ckpt").exists(), output[-3000:]


@pytest.mark.slow
def test_recipe_add_a_metric(project, tmp_path):
    root, env = project
    rest = write_files(recipe_blocks("metric"), root)
    install_entry_point(root, "nowcast_infill.metric", registry_line(rest, "metric"))
    run_commands("ni-synth output=data/synthetic.zarr n_times=48 ny=64 nx=64", root, env, {})
    (output,) = run_commands(
        "ni-eval model=laplace data=synthetic data.store=data/synthetic.zarr +trainer.limit_test_batches=1 "
        f"data.num_workers=0 logger=csv paths.output_dir={root / 'eval'}", root, env, {})
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    scored = {key: value for key, value in _flat(metrics).items() if "wet_fraction_error" in key}
    assert scored, f"the registered metric is not in metrics.json: {sorted(_flat(metrics))[:40]}"
    assert all(-1.0 <= value <= 1.0 for value in scored.values()), scored


def _flat(record, prefix: str = "") -> dict:
    """{dotted key: number} of a nested metrics record."""
    out = {}
    for key, value in (record.items() if isinstance(record, dict) else []):
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out
