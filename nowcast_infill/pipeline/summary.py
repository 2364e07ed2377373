"""`compare(paths, out, sweep)` (`ni-compare`): one table over runs, of one sweep or of several.

    ni-compare outputs/infill/multiruns/2026-11-30_05-20-00
    ni-compare outputs/infill/multiruns/A outputs/infill/multiruns/B --out comparison
    ni-compare outputs --sweep 4711 --out outputs/sweeps/4711      # one Slurm array's runs

Reads `<run>/metrics.json` (written by every `ni-train`) under the folders given, prints the
variants (task, model and the overrides that differ between the runs) with mean ± std over
seeds and one row per run, and writes `summary.md`, `summary.csv` and `runs.csv` into `--out`
(default: the folder given, when there is one).
"""

from __future__ import annotations

from pathlib import Path

from nowcast_infill.errors import BadValueError, MissingInputError
from nowcast_infill.utils.results import RUN_METRICS_FILE, write_summary


def compare(paths: list[str], out: str | None = None, sweep: str | None = None) -> tuple[Path, str, list]:
    """Summarise the runs under `paths` into `out`; returns (summary.md path, its text, the run records)."""
    for given in paths:
        if not Path(given).exists():
            raise MissingInputError(
                f"{given}: no such run or sweep folder; pass folders that hold <run>/{RUN_METRICS_FILE}."
            )
    if out is None:
        if len(paths) != 1 or not Path(paths[0]).is_dir():
            raise BadValueError(f"ni-compare got {len(paths)} folders: name the folder for the tables with --out DIR.")
        out = paths[0]
    md_path, markdown, records = write_summary(out, paths, sweep)
    if not records:
        which = f" of sweep {sweep}" if sweep is not None else ""
        raise MissingInputError(
            f"no {RUN_METRICS_FILE}{which} under {' '.join(paths)}: ni-train writes one per run that tested "
            "(test=true); pass run or sweep folders."
        )
    return md_path, markdown, records
