"""Fuzz: damaged copies of real RADOLAN files are refused by name or stored as the original.

The generator is experiments/fuzz_convert.py (its larger run is in BENCHMARKS.md); here
360 cases (30 per mutation kind) from three small files: RW and RY (2-byte depths,
900x900) and RX (1-byte reflectivity).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _fuzz_module():
    if "fuzz_convert" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fuzz_convert", REPO / "experiments" / "fuzz_convert.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["fuzz_convert"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["fuzz_convert"]


@pytest.mark.shared_data
@pytest.mark.slow
def test_mutated_radolan_files_are_refused_by_name_or_stored_unchanged(shared_data, tmp_path):
    fuzz = _fuzz_module()
    radolan = shared_data / "radolan"
    sources = [radolan / "rw" / "raa01-rw_10000-1811220050-dwd---bin.gz",
               radolan / "ry" / "raa01-ry_10000-2001011530-dwd---bin.gz",
               radolan / "misc" / "raa01-rx_10000-1408102050-dwd---bin.gz"]
    n_cases = 30 * len(fuzz.KINDS)
    counts, slowest, failures = fuzz.run(sources, n_cases, seed=20261130, workdir=tmp_path, log=lambda _: None)
    table = fuzz.format_table(counts)
    assert not failures, "\n".join(failures[:20]) + "\n" + table
    assert slowest <= fuzz.MAX_CASE_S, table
    assert sum(counts[k, o] for k in fuzz.KINDS for o in fuzz.OUTCOMES if o != "over_5s") == n_cases
    # Every header field edit is refused; a damaged pixel body is stored at least once
    # (the flipped pixels differ) and refused at least once (an RX pixel above 500 mm/h).
    for kind in ("truncate", "trailing_bytes", "edit_grid", "edit_BY", "edit_PR", "edit_INT", "edit_product",
                 "edit_time", "gzip_truncate"):
        assert counts[kind, "refused"] == 30, (kind, table)
    assert counts["body_bytes", "identical_except_flipped"] > 0 and counts["body_bytes", "refused"] > 0, table


@pytest.mark.shared_data
def test_fuzz_generator_is_deterministic_and_covers_every_kind(shared_data):
    fuzz = _fuzz_module()
    source = fuzz.load_source(shared_data / "radolan" / "rw" / "raa01-rw_10000-1811220050-dwd---bin.gz")
    first = fuzz.generate([source], 24, seed=3)
    again = fuzz.generate([source], 24, seed=3)
    assert [c.data for c in first] == [c.data for c in again]
    assert {c.kind for c in first} == set(fuzz.KINDS)
    assert all(c.data != source.data for c in first)
