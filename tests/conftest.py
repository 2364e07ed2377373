"""Shared fixtures: the real radar archive beside the checkout, and tmp stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NI_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (real DWD RADOLAN and KNMI files); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real radar data folder {SHARED_DATA} is absent (set NI_SHARED_DATA to point at it)")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    # No test may need network; W&B runs offline everywhere in the suite.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # An in-process run exports NI_RUN_ID for its DDP children; it must not leak into the
    # next test's run directory names or subprocesses.
    monkeypatch.setenv("NI_RUN_ID", "unset")
    monkeypatch.delenv("NI_RUN_ID")
