"""The layering of the commands: `cli/` is a set of Hydra shims over `nowcast_infill.pipeline`,
`inference/` has no import cycle, and a failing run still closes its loggers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from test_configs import TINY_NET, compose_config, tiny_overrides

PACKAGE = Path(__file__).resolve().parents[1] / "nowcast_infill"


def _imports(path: Path) -> list[tuple[str, int]]:
    """(imported nowcast_infill module or name, line) of every import in `path`, also those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nowcast_infill"):
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names if alias.name.startswith("nowcast_infill")]
    return found


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


def test_inference_modules_import_each_other_without_a_cycle_or_private_names():
    modules = {_module_name(p): p for p in (PACKAGE / "inference").glob("*.py") if p.name != "__init__.py"}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported, line in _imports(path):
            owner = next((m for m in modules if imported == m or imported.startswith(m + ".")), None)
            if owner is None or owner == name:
                continue
            assert not imported.rsplit(".", 1)[1].startswith("_"), f"{name}:{line} imports the private {imported}"
            targets.add(owner)
        graph[name] = targets

    def visit(node: str, path: list[str]) -> None:
        assert node not in path, "import cycle: " + " -> ".join([*path[path.index(node) :], node])
        for target in graph[node]:
            visit(target, [*path, node])

    for name in graph:
        visit(name, [])


def test_cli_is_shims_and_the_pipeline_never_imports_it():
    for path in (PACKAGE / "cli").glob("*.py"):
        if path.name != "errors.py":  # hydra_command: how every command reports a user mistake
            assert len(path.read_text().splitlines()) <= 30, f"{path.name} is more than a shim"
    for folder in ("pipeline", "inference", "data", "models", "io"):
        for path in (PACKAGE / folder).rglob("*.py"):
            text = path.read_text()
            assert "HydraConfig" not in text and "hydra.main" not in text, f"{path} knows Hydra's runtime"
            for imported, line in _imports(path):
                assert not imported.startswith("nowcast_infill.cli"), f"{path}:{line} imports {imported}"
    for path in (PACKAGE / "api.py", PACKAGE.parent / "experiments" / "results_common.py"):
        assert not any(i.startswith("nowcast_infill.cli") for i, _ in _imports(path)), path


@pytest.mark.parametrize(
    "imports",
    [
        "from nowcast_infill.pipeline import convert, synth, infill, nowcast",  # the store commands
        # the config checks (task frame rules included) run before torch is imported, so a wrong
        # value fails in about a second (nowcast_infill/pipeline/config_checks.py)
        "import nowcast_infill.pipeline.config_checks, nowcast_infill.tasks",
    ],
)
def test_store_commands_and_config_checks_load_no_torch(imports):
    code = f"import sys; {imports}; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_failing_train_still_finishes_its_wandb_run(tmp_path, monkeypatch):
    import lightning
    import wandb

    from nowcast_infill.data.synthetic import write_synthetic_store
    from nowcast_infill.pipeline import train

    store = write_synthetic_store(tmp_path / "s.zarr", n_times=40, ny=40, nx=40, seed=1)
    cfg = compose_config(
        "train",
        [
            *tiny_overrides(tmp_path, store),
            TINY_NET,
            "logger=wandb",
            "task.past=2",
            "task.future=2",
            f"data.stats_path={tmp_path / 'stats.json'}",
        ],
    )

    def fit_fails(*args, **kwargs):
        assert wandb.run is not None  # the logger's run was started (hyperparameters logged)
        raise RuntimeError("fit failed")

    monkeypatch.setattr(lightning.Trainer, "fit", fit_fails)
    try:
        with pytest.raises(RuntimeError, match="fit failed"):
            train(cfg)
        assert wandb.run is None, "the W&B run of the failed train was left open"
    finally:
        if wandb.run is not None:
            wandb.finish()


def test_model_kind_decides_what_is_trained_and_what_needs_a_checkpoint(tmp_path):
    from nowcast_infill.errors import BadValueError, ConfigSchemaError
    from nowcast_infill.pipeline import evaluate, train

    with pytest.raises(BadValueError, match="^model=laplace is a classical method .* `ni-eval model=laplace`"):
        train(compose_config("train", [*tiny_overrides(tmp_path), "model=laplace"]))
    with pytest.raises(BadValueError, match="^model=lstm is a trainable network: pass ckpt_path="):
        evaluate(compose_config("eval", [*tiny_overrides(tmp_path), "model=lstm"]))
    with pytest.raises(ConfigSchemaError, match="^model.kind: None .* is not network or classical"):
        evaluate(compose_config("eval", [*tiny_overrides(tmp_path), "model=laplace", "~model.kind"]))


def test_an_empty_or_removed_importer_node_means_no_options():
    from omegaconf import OmegaConf

    from nowcast_infill.pipeline.stores import importer_options

    assert importer_options(OmegaConf.create({"importer": {}})) == {}
    assert importer_options(OmegaConf.create({"importer": None})) == {}
    assert importer_options(OmegaConf.create({"importer": {"zr": [200, 1.6], "x": None}})) == {"zr": [200, 1.6]}
