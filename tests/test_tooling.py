"""The tools that keep the package's shape: the import floors, `make lint`, the pre-commit hooks.

The floors are docs/architecture.md's (from the redesign plan, issue 10): a module may import
modules of its own floor or lower ones, never a higher one -- at any depth, function-level
imports included (a function-level import that dodges a cycle is still the cycle).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "nowcast_infill"

# Dotted-name prefix -> floor (1 = lowest). The longest matching prefix wins.
FLOORS: dict[str, int] = {
    # 1: no dependencies inside the package
    f"{PACKAGE}.errors": 1,
    f"{PACKAGE}.registry": 1,
    f"{PACKAGE}.schema": 1,
    f"{PACKAGE}.study": 1,
    f"{PACKAGE}.utils": 1,
    f"{PACKAGE}.checkpoint_io": 1,  # safe torch.load of a checkpoint file: a small helper
    # 2: sources -> store
    f"{PACKAGE}.io": 2,
    # 3: classical methods, pure numpy (data/'s priors use them)
    f"{PACKAGE}.baselines": 3,
    # 4: windows, masks, normalisation, tiling, DataModule
    f"{PACKAGE}.data": 4,
    # 5: components, networks, the network Protocol, losses
    f"{PACKAGE}.models": 5,
    # 6: what a task predicts and scores
    f"{PACKAGE}.tasks": 6,
    # 7: the LightningModule and callbacks, metrics, the shared evaluation path, figures
    f"{PACKAGE}.training": 7,
    f"{PACKAGE}.metrics": 7,
    f"{PACKAGE}.evaluation": 7,
    f"{PACKAGE}.viz": 7,
    # 8: checkpoint predictor, archive infill/nowcast, distributed inference
    f"{PACKAGE}.inference": 8,
    # 9: plain functions train(cfg), evaluate(cfg), ... and the config checks
    f"{PACKAGE}.pipeline": 9,
    # 10: the front doors: Hydra shims and the Python API (it composes configs as the CLI does)
    f"{PACKAGE}.cli": 10,
    f"{PACKAGE}.api": 10,
}
TOP_FLOOR = max(FLOORS.values())


def floor_of(module: str) -> int | None:
    """Floor of a dotted module name; None for a module no floor claims.

    The package root (`nowcast_infill/__init__.py`) holds `__version__` when imported, so
    importing it is floor 1; its lazy public names (PEP 562 `__getattr__`) are api's, and
    `imports_of` names them so. As an importer the root is the API's front door (floor 10).
    """
    if module == PACKAGE:
        return 1
    prefixes = [p for p in FLOORS if module == p or module.startswith(p + ".")]
    return FLOORS[max(prefixes, key=len)] if prefixes else None


def importer_floor(module: str) -> int | None:
    return TOP_FLOOR if module == PACKAGE else floor_of(module)


def package_modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted name -> file of every module under `root` (the package directory); a package's
    `__init__.py` is named by the package. The `conf` symlink holds YAML only."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package, *parts))] = path
    return modules


@dataclass(frozen=True)
class ImportEdge:
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return (
            f"{self.importer} (floor {importer_floor(self.importer)}) imports {self.imported} "
            f"(floor {floor_of(self.imported)}) at line {self.line}"
        )


def imports_of(module: str, path: Path, known: set[str]) -> list[ImportEdge]:
    """Every import of a package module in `path`, at any depth (functions, TYPE_CHECKING, try
    blocks), relative ones resolved; `importlib.import_module("...")` with a literal name too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    this_package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = this_package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in node.names]
            # the root's public names (compose, train, ...) are api's, re-exported lazily
            targets = [
                f"{PACKAGE}.api" if t == PACKAGE and not a.name.startswith("__") else t
                for t, a in zip(targets, node.names, strict=True)
            ]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        edges += [ImportEdge(module, t, node.lineno) for t in targets if t == PACKAGE or t.startswith(PACKAGE + ".")]
    return edges


def upward_imports(root: Path, package: str = PACKAGE) -> list[ImportEdge]:
    """The imports from a lower floor to a higher one, in file order."""
    modules = package_modules(root, package)
    edges = [e for name, path in modules.items() for e in imports_of(name, path, set(modules))]
    return [e for e in edges if (floor_of(e.imported) or 0) > (importer_floor(e.importer) or 0)]


def test_every_module_sits_on_a_floor():
    """A new module is placed on a floor (FLOORS above and docs/architecture.md) when it is added."""
    unplaced = [name for name in package_modules(REPO / PACKAGE) if importer_floor(name) is None]
    assert not unplaced, f"modules on no floor (add them to FLOORS and docs/architecture.md): {unplaced}"


def test_lower_floors_never_import_higher_floors():
    edges = upward_imports(REPO / PACKAGE)
    assert not edges, f"{len(edges)} imports go up a floor:\n" + "\n".join(map(str, edges))


def private_imports(root: Path, package: str = PACKAGE) -> list[str]:
    """`module:line imports name from other` for every `_name` (not dunder) imported from another
    module of the package, at any depth of the file."""
    found = []
    for name, path in package_modules(root, package).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package) and not node.level:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__") and node.module != name:
                        found.append(f"{name}:{node.lineno} imports {alias.name} from {node.module}")
    return found


def test_no_private_name_crosses_a_module():
    """Shared code has a public name: a `_private` import from another module is a hidden contract."""
    found = private_imports(REPO / PACKAGE)
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_the_private_name_check_can_fail(tmp_path):
    root = tmp_path / PACKAGE
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("_hidden = 1\n__version__ = '0'\n")
    (root / "b.py").write_text(f"def f():\n    from {PACKAGE}.a import _hidden, __version__\n    return _hidden\n")
    assert private_imports(root) == [f"{PACKAGE}.b:2 imports _hidden from {PACKAGE}.a"]


def test_the_floor_check_sees_relative_and_function_level_imports(tmp_path):
    """The checker itself: a nested relative import, a function-level one, one in an except
    block and an import_module call going up are found; imports sideways, down, of the root's
    __version__ and of third-party packages are not."""
    root = tmp_path / PACKAGE
    (root / "io").mkdir(parents=True)
    (root / "cli").mkdir()
    for init in (root, root / "io", root / "cli"):
        (init / "__init__.py").write_text("")
    (root / "errors.py").write_text("import numpy\n")
    (root / "cli" / "run.py").write_text(f"from {PACKAGE}.io import store\nfrom .. import errors\n")
    (root / "io" / "store.py").write_text(
        "import importlib\nfrom . import reader\nfrom ..errors import UserError\n\n"
        "def open_store():\n    from ..cli import run\n    return run\n\n"
        f"def lazy():\n    return importlib.import_module('{PACKAGE}.cli.run')\n"
    )
    (root / "io" / "reader.py").write_text(
        f"import {PACKAGE}.errors\nimport {PACKAGE}\nfrom {PACKAGE} import __version__\n\n\n"
        f"try:\n    pass\nexcept ImportError:\n    from {PACKAGE} import compose  # the root's API name\n"
    )
    found = [(e.importer, e.imported, e.line) for e in upward_imports(root)]
    assert found == [
        (f"{PACKAGE}.io.reader", f"{PACKAGE}.api", 9),
        (f"{PACKAGE}.io.store", f"{PACKAGE}.cli.run", 6),
        (f"{PACKAGE}.io.store", f"{PACKAGE}.cli.run", 10),
    ]


def _precommit_hooks() -> list[dict]:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"], "hooks must be local: they run offline"
    return [hook for repo in config["repos"] for hook in repo["hooks"]]


def test_precommit_hooks_are_local_and_run_the_lint_tools():
    hooks = {hook["id"]: hook for hook in _precommit_hooks()}
    assert {"ruff-check", "ruff-format", "mypy", "check-yaml", "trailing-whitespace"} <= set(hooks)
    for hook in hooks.values():
        assert hook["language"] in ("system", "pygrep"), hook
        if hook["language"] == "system":
            tool = hook["entry"].split()[0]
            assert tool.startswith(".venv/bin/"), f"{hook['id']}: {tool} is not a tool of make install"
    makefile = (REPO / "Makefile").read_text()
    for tool in ("ruff check", "ruff format", "mypy"):
        assert f"$(BIN)/{tool}" in makefile, f"make lint no longer runs {tool}"
    if shutil.which("pre-commit", path=str(REPO / ".venv" / "bin")):  # the tool's own schema check
        done = subprocess.run(
            [str(REPO / ".venv/bin/pre-commit"), "validate-config", ".pre-commit-config.yaml"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "hook_id,bad,good",
    [
        ("trailing-whitespace", ["x = 1 \n", "key: value\t\n"], ["x = 1\n", "  indented: ok\n"]),
        (
            "merge-conflict-markers",
            ["<<<<<<< HEAD\n", "=======\n", ">>>>>>> branch\n"],
            ["========\n", "a <<<<<<< b\n", "# ======= heading\n"],
        ),
    ],
)
def test_precommit_patterns_flag_what_their_names_say(hook_id, bad, good):
    (hook,) = [h for h in _precommit_hooks() if h["id"] == hook_id]
    pattern = re.compile(hook["entry"])  # pre-commit's pygrep: a Python regex searched in each line
    assert [line for line in bad if not pattern.search(line)] == []
    assert [line for line in good if pattern.search(line)] == []


def test_make_test_lints_before_pytest_and_ci_calls_make_test():
    assert re.search(r"^make test$", (REPO / ".ci/run").read_text(), re.M)
    make = shutil.which("make")
    if make is None:
        pytest.skip("no make on PATH")
    # -n prints the recipes; -o keeps make from reinstalling the shared .venv
    done = subprocess.run(
        [make, "-n", "-o", ".venv/.installed", "test"], cwd=REPO, capture_output=True, text=True, check=True
    )
    lines = done.stdout.splitlines()
    first = {
        key: next(i for i, line in enumerate(lines) if key in line)
        for key in ("ruff check", "ruff format --check", "mypy", "-m pytest")
    }
    assert first["ruff check"] < first["-m pytest"] and first["mypy"] < first["-m pytest"], done.stdout


def test_ruff_config_selects_each_rule_family():
    """The repository's ruff settings catch one violation of each family (E, F, W, I, B, UP)."""
    snippet = (
        "import sys\nimport os\n"  # I001 unsorted, F401 unused (os)
        "from typing import List\n\n"  # UP035
        "def f(x: List[int] = []) -> None:\n"  # B006 mutable default
        f"    y = {'1' * 140}\n"  # E501 beyond the lint limit; F841 unused
        "    print(sys.argv, x)   \n"  # W291 trailing whitespace
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--no-cache",
            "--output-format",
            "concise",
            "--stdin-filename",
            f"{PACKAGE}/_probe.py",
            "-",
        ],
        cwd=REPO,
        input=snippet,
        capture_output=True,
        text=True,
        check=False,
    )
    codes = set(re.findall(r":\d+:\d+: ([A-Z]+\d+)", done.stdout))
    assert {"I001", "F401", "UP035", "B006", "E501", "W291"} <= codes, done.stdout + done.stderr
