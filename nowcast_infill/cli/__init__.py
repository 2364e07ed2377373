"""Console scripts `ni-<verb>`: thin Hydra wrappers over plain functions."""

from pathlib import Path


def _config_dir() -> str:
    """The Hydra config folder: `nowcast_infill/conf` (a copy in an installed wheel, a symlink
    to the repository's conf/ in a checkout), else the checkout's top-level conf/ (a checkout
    where the symlink did not survive, e.g. on a filesystem without symlinks)."""
    package = Path(__file__).resolve().parents[1]
    for folder in (package / "conf", package.parent / "conf"):
        if (folder / "train.yaml").is_file():
            return str(folder)
    raise FileNotFoundError(f"no Hydra configs in {package / 'conf'} or {package.parent / 'conf'}: reinstall nowcast_infill")


# Absolute: a relative `config_path` inside an installed console script is taken by Hydra as
# a Python package named `conf`, which does not exist.
CONFIG_DIR = _config_dir()
