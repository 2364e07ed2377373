"""Console scripts `ni-<verb>`: thin Hydra wrappers over plain functions."""

from pathlib import Path

# Absolute, built from this file: a relative `config_path` inside an installed console
# script is taken by Hydra as a Python package named `conf`, which does not exist.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
