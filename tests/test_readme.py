"""Every command in a ```bash block of README.md works as written.

- `test_readme_ni_commands_compose`: each `ni-*` command's overrides compose (and, for
  ni-train / ni-eval, pass the config schema) in-process: a misspelt key fails in seconds.
- `test_readme_commands_run` (slow): every command runs, in README order, in a fresh
  folder holding the synthetic store, with tiny limits appended (one batch, a tiny net,
  csv logger): `make` targets as a dry run (`make -n`: `make test` inside the suite would
  recurse), commands on real data with ../shared/data (skipped when it is absent), and
  `sbatch` / `bash slurm/*.sbatch` lines checked by the local Slurm cluster with
  `sbatch --test-only` (the templates run for real in test_slurm.py).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT, SHARED_DATA
from slurm_cluster import slurm_cluster  # noqa: F401  (pytest fixture, requested only by the slow test)

README = REPO_ROOT / "README.md"
VENV_BIN = ".venv/bin/"
RUN_PLACEHOLDER = "<run>"
# ni-compare takes folders, not Hydra overrides; the README's sweep folders are placeholders
# that the run test fills with the multirun the README's own sweep line made.
NOT_HYDRA = {"ni-compare"}
SWEEP_PLACEHOLDERS = ("<id>", "<other_id>")
ARRAY_PLACEHOLDER = "<array_job_id>"

TINY_TRAIN = ["trainer.max_epochs=1", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1",
              "+trainer.limit_test_batches=1", "data.batch_size=2", "data.num_workers=0", "data.crop_size=32",
              "data.eval_masks.n=2", "model.net.encoder_channels=[8,16]", "logger=csv"]
TINY_EVAL = ["+trainer.limit_test_batches=1", "data.num_workers=0", "data.eval_masks.n=2", "n_figures=1", "logger=csv"]
TINY = {"ni-train": TINY_TRAIN, "ni-eval": TINY_EVAL, "ni-convert": ["progress=false"], "ni-infill": ["progress=false"]}


def readme_commands() -> list[list[str]]:
    """The commands of README.md's ```bash blocks, in order, split like a shell (comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                commands.append(argv)
    return commands


def ni_verb(argv: list[str]) -> str | None:
    """`ni-train` for `.venv/bin/ni-train ...`, None for any other program."""
    name = argv[0].removeprefix(VENV_BIN)
    return name if name.startswith("ni-") else None


def uses_real_data(argv: list[str]) -> bool:
    """Reads the RADOLAN / KNMI samples of ../shared/data (or a store converted from them)."""
    return any("radolan" in a or "knmi" in a for a in argv)


def is_script(argv: list[str]) -> bool:
    """`.venv/bin/python experiments/<script>.py ...`"""
    return argv[0] == VENV_BIN + "python" and len(argv) > 1 and argv[1].startswith(("experiments/", "examples/"))


def test_readme_has_every_kind_of_command():
    commands = readme_commands()
    programs = {ni_verb(c) or c[0] for c in commands}
    assert {"make", "ni-convert", "ni-train", "ni-eval", "ni-infill", "sbatch", "bash"} <= programs, programs
    unknown = [c for c in commands if not (ni_verb(c) or is_script(c) or c[0] in ("make", "sbatch", "bash"))]
    assert not unknown, f"README commands this test does not know how to run: {unknown}"


def first_sweep_values(overrides: list[str]) -> list[str]:
    """`model=a,b` -> `model=a` (compose takes no sweeps)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else o.input_line
            for o in parsed]


@pytest.mark.parametrize("argv", [c for c in readme_commands() if ni_verb(c) and ni_verb(c) not in NOT_HYDRA],
                         ids=lambda c: " ".join(c)[:80])
def test_readme_ni_commands_compose(argv, tmp_path):
    from nowcast_infill.pipeline.config_checks import validate_config
    from test_configs import compose_config

    verb = ni_verb(argv)
    overrides = [a.replace(RUN_PLACEHOLDER, str(tmp_path / "run")) for a in argv[1:] if not a.startswith("-")]
    overrides = [o for o in first_sweep_values(overrides) if not o.startswith("hydra")]
    cfg = compose_config(verb.removeprefix("ni-"), [*overrides, f"paths.output_dir={tmp_path / 'out'}"]
                         if verb in ("ni-train", "ni-eval") else overrides)
    if verb in ("ni-train", "ni-eval"):
        validate_config(cfg, verb.removeprefix("ni-"))


# ---------------------------------------------------------------------------------------
# Running them


def _prepare_folder(folder: Path) -> None:
    """A fresh working folder: the synthetic store in data/, and the input files the README's
    conversion examples name (RADOLAN ASCII, MeteoSwiss GIF; KNMI from ../shared/data)."""
    import numpy as np

    from data_factories_io import MCH_SHAPE, rain_field, write_mch_gif, write_radolan_ascii
    from nowcast_infill.data.synthetic import write_synthetic_store

    # 96 frames: the val and test splits keep a window for each of the 2 DDP ranks
    write_synthetic_store(folder / "data" / "synthetic.zarr", n_times=96, ny=32, nx=32, seed=3)
    rng = np.random.default_rng(0)
    for hour in range(2):
        write_radolan_ascii(folder, rain_field(rng), f"20170816-0{hour}50")
    (folder / "mch").mkdir()
    for minute in (0, 5, 10):  # AQC yy jjj HH MM ?: 2016, day 193, 21:00 ... 21:10
        write_mch_gif(folder / "mch" / f"AQC1619321{minute:02d}V_00005.801.gif", rng.integers(0, 140, MCH_SHAPE).astype(np.uint8))
    if SHARED_DATA.is_dir():
        (folder / "knmi").mkdir()
        # 8 frames: nowcasts issued at 4 of them (past=4) are verified against the later ones
        for path in sorted((SHARED_DATA / "knmi").glob("*.h5"))[:8]:
            (folder / "knmi" / path.name).symlink_to(path)


def _slurm_cpus(env: dict[str, str]) -> int:
    out = subprocess.run(["sinfo", "-h", "-o", "%c"], env=env, capture_output=True, text=True, timeout=30).stdout
    return min(int(n) for n in out.split()) if out.split() else 1


def _to_run(argv: list[str], folder: Path, slurm_env: dict | None, cuda: bool) -> list[str] | str:
    """The command line to run for README command `argv`, or the reason it is not run."""
    verb = ni_verb(argv)
    if argv[0] == "make":
        return ["make", "-n", *argv[1:]]
    if argv[0] in ("sbatch", "bash"):
        if slurm_env is None:
            return "no local Slurm cluster"
        cpus = str(_slurm_cpus(slurm_env))
        fitted = [re.sub(r"^--cpus-per-task=\d+$", f"--cpus-per-task={cpus}", a) for a in argv[1:]]
        fitted = [re.sub(r"^--gpus-per-node=[1-9]\d*$", "--gpus-per-node=0", a) for a in fitted]
        # The GPU examples ask the CPU-only test cluster for what it has (the documented CPU flags).
        cpu_flags = ["--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=0", f"--cpus-per-task={cpus}"]
        if argv[0] == "sbatch":
            script = next(i for i, a in enumerate(fitted) if not a.startswith("-"))
            given = {a.split("=")[0] for a in fitted[:script]}
            return ["sbatch", "--test-only", *[f for f in cpu_flags if f.split("=")[0] not in given], *fitted]
        return ["bash", fitted[0], "--test-only", f"--cpus-per-task={cpus}", *fitted[1:]]
    if uses_real_data(argv) and not SHARED_DATA.is_dir():
        return f"real radar data folder {SHARED_DATA} is absent"
    if any(ARRAY_PLACEHOLDER in a for a in argv):
        return "needs a Slurm array's job id (the array line above runs with --test-only)"
    if any(p in a for a in argv for p in SWEEP_PLACEHOLDERS):
        if "wandb_report.py" in " ".join(argv):
            return "the README's runs here log with logger=csv (tests/test_results.py runs it on offline W&B runs)"
        sweeps = sorted((folder / "outputs" / "infill" / "multiruns").glob("*"), key=lambda p: p.stat().st_mtime)
        if not sweeps:
            return "no multirun was made before it"
        ids = {"<id>": sweeps[-1].name, "<other_id>": sweeps[-2].name if len(sweeps) > 1 else sweeps[-1].name}
        argv = [argv[0], *[functools.reduce(lambda a, kv: a.replace(*kv), ids.items(), a) for a in argv[1:]]]
    if is_script(argv):
        return [str(REPO_ROOT / argv[0]), str(REPO_ROOT / argv[1]), *argv[2:]]
    if verb in NOT_HYDRA:
        return [str(REPO_ROOT / VENV_BIN / verb), *argv[1:]]
    assert verb, argv
    args = [a.replace("/path/to/radolan/yw/*", f"{SHARED_DATA}/radolan/yw/*") for a in argv[1:]]
    if "--multirun" in args and "hydra/launcher=slurm" in args:
        if slurm_env is None:
            return "no local Slurm cluster"
        if "trainer=gpu" in args:
            return "a GPU sweep: the local Slurm cluster has no GPUs (the CPU line below runs)"
        args = [re.sub(r"cpus_per_task=\d+", f"cpus_per_task={_slurm_cpus(slurm_env)}", a) for a in args]
        args += ["hydra.launcher.timeout_min=10", "hydra.launcher.mem_gb=1"]
    if not cuda:
        # The GPU example on CPU processes (same strategy, DDP over gloo, 2 processes).
        args = ["trainer=cpu" if a == "trainer=gpu" else "trainer.devices=2" if a.startswith("trainer.devices=") else a
                for a in args]
    if "--multirun" in args:
        args = [re.sub(r"^seed=[\d,]+$", "seed=1", a) for a in args]  # one seed per variant
    return [str(REPO_ROOT / VENV_BIN / verb), *args, *TINY.get(verb, [])]


def _latest_run(folder: Path) -> Path:
    """The newest training run (a run directory with checkpoints/)."""
    runs = sorted((p.parent for p in (folder / "outputs").glob("*/runs/*/checkpoints")), key=lambda p: p.stat().st_mtime)
    assert runs, f"no run directory under {folder / 'outputs'} for {RUN_PLACEHOLDER}"
    return runs[-1]


@pytest.mark.slow
def test_readme_commands_run(tmp_path, request):
    import torch

    folder = tmp_path / "fresh"
    folder.mkdir()
    _prepare_folder(folder)
    try:
        slurm_env = dict(request.getfixturevalue("slurm_cluster"))
    except pytest.skip.Exception:
        slurm_env = None
    env = dict(slurm_env or os.environ, PYTHONPATH=str(REPO_ROOT), WANDB_MODE="offline", NI_LOG_DIR=str(folder / "outputs"),
               NI_DATA_DIR=str(folder / "data"), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    env.pop("NI_RUN_ID", None)
    ran, not_run = [], []
    for argv in readme_commands():
        command = _to_run(argv, folder, slurm_env, torch.cuda.is_available())
        if isinstance(command, str):
            not_run.append(f"{shlex.join(argv)}: {command}")
            continue
        if any(RUN_PLACEHOLDER in a for a in command):
            command = [a.replace(RUN_PLACEHOLDER, str(_latest_run(folder))) for a in command]
        cwd = REPO_ROOT if argv[0] in ("make", "sbatch", "bash") else folder
        started = time.monotonic()
        done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"README command failed: {shlex.join(argv)}\nran: {shlex.join(command)}\n" \
                                     f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        ran.append(f"{time.monotonic() - started:.0f} s: {shlex.join(argv)}")
    print(f"ran {len(ran)} README commands:", *ran, f"not run: {not_run}", sep="\n")
    assert len(ran) >= 10, (ran, not_run)
    # The README names <run>/checkpoints/best.ckpt: it exists after a run.
    assert (_latest_run(folder) / "checkpoints" / "best.ckpt").is_file()


# ---------------------------------------------------------------------------------------
# Help texts

VERBS = ["train", "eval", "convert", "synth", "infill", "nowcast", "demo"]


@pytest.mark.parametrize("verb", VERBS)
def test_help_template_says_what_the_command_does(verb):
    from hydra import compose, initialize_config_dir

    from nowcast_infill.utils.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(verb, return_hydra_config=True)
    template = cfg.hydra.help.template
    assert template.startswith(f"ni-{verb}: "), template[:200]
    assert "Main keys" in template and "Examples:" in template and f"  ni-{verb}" in template.replace("make demo", "")


def test_ni_train_help_is_printed_first():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run([sys.executable, "-m", "nowcast_infill.cli.train", "--help"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ni-train: fit a model"), done.stdout[:300]
    assert "Examples:\n  ni-train experiment=infill_lstm data=radolan" in done.stdout


def test_make_help_has_no_colour_codes_when_piped():
    done = subprocess.run(["make", "-s", "help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "demo" in done.stdout, done.stderr
    assert "\x1b" not in done.stdout, repr(done.stdout[:200])
