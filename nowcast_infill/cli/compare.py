"""`ni-compare`: one table over runs, of one sweep or of several."""

from __future__ import annotations

import argparse
import sys

from nowcast_infill.cli.errors import exit_on_user_error, take_verbose_flag
from nowcast_infill.pipeline.summary import compare


def main(argv: list[str] | None = None) -> None:
    """Argparse, not Hydra: there is no config to compose (see `nowcast_infill.pipeline.summary`)."""
    argv = list(sys.argv if argv is None else ["ni-compare", *argv])
    verbose = take_verbose_flag(argv)
    example = "ni-compare outputs/infill/multiruns/<id> outputs/nowcast/multiruns/<id> --out comparison"
    parser = argparse.ArgumentParser(prog="ni-compare", description=__doc__, epilog=f"Example: {example}")
    parser.add_argument("paths", nargs="+", help="run folders, sweep folders, or any folder holding them")
    parser.add_argument("--out", help="folder for summary.md / summary.csv / runs.csv (default: the one folder given)")
    parser.add_argument("--sweep", help="keep only the runs of this sweep id (multirun folder or Slurm array job id)")
    args = parser.parse_args(argv[1:])
    with exit_on_user_error("ni-compare", verbose):
        md_path, markdown, records = compare(args.paths, args.out, args.sweep)
    print(markdown)
    print(f"ni-compare: {len(records)} runs -> {md_path} (+ summary.csv, runs.csv)")


if __name__ == "__main__":
    main()
