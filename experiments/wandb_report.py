"""The comparison view of a sweep, built from its offline W&B runs (no network, no account).

    python experiments/wandb_report.py outputs/infill/multiruns/<id> [more folders] --out report

Finds every `wandb/offline-run-*/run-*.wandb` under the folders given, reads what the run
sent to W&B (its name, group, job type, tags, config, final summary metrics and logged
images), and writes `wandb_runs.csv` (one row per run) and `wandb_report.md` (per group, per
variant: mean ± std over seeds of the headline metrics, and the images each run logged).
That is the table a W&B workspace grouped by `group` then by `model` shows; after
`wandb sync <run>` the same keys drive the online dashboard.

An offline run is a record log (the `.wandb` file: blocks of 32 KiB holding length-prefixed,
possibly split records, each a `wandb_internal_pb2.Record` protobuf); wandb 0.31 no longer
ships a Python reader for it, so `read_records` below is one.
"""

from __future__ import annotations

import argparse
import csv
import json
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from nowcast_infill.utils.results import format_mean_std
from nowcast_infill.utils.tables import HEADLINE, markdown_table

# The record log format of W&B's datastore (LevelDB's log format with its own file header).
FILE_HEADER = struct.Struct("<4sHB")  # ident ':W&B', magic 0xBEE1, version 0
FILE_IDENT, FILE_MAGIC = b":W&B", 0xBEE1
RECORD_HEADER = struct.Struct("<IHB")  # masked crc32c, length, type
BLOCK_BYTES = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class OfflineRunError(ValueError):
    """A `.wandb` file that is not a W&B record log."""


def read_records(path: str | Path) -> Iterator[bytes]:
    """The serialized records of the `.wandb` file at `path`, in order (a record split over
    blocks comes back joined). A record cut short at the end (a run still writing) is dropped."""
    data = Path(path).read_bytes()
    if len(data) < FILE_HEADER.size:
        raise OfflineRunError(f"{path}: too short for a W&B offline run file; pass a wandb/offline-run-*/run-*.wandb.")
    ident, magic, _version = FILE_HEADER.unpack_from(data)
    if ident != FILE_IDENT or magic != FILE_MAGIC:
        raise OfflineRunError(f"{path}: not a W&B offline run file (header {data[:7]!r}); pass a run-*.wandb.")
    pos, pending = FILE_HEADER.size, b""
    while pos + RECORD_HEADER.size <= len(data):
        room = BLOCK_BYTES - pos % BLOCK_BYTES
        if room < RECORD_HEADER.size:  # the writer pads the tail of a block that cannot hold a header
            pos += room
            continue
        _crc, length, kind = RECORD_HEADER.unpack_from(data, pos)
        start, pos = pos + RECORD_HEADER.size, pos + RECORD_HEADER.size + length
        if kind == 0 and length == 0:  # zero padding
            pos += BLOCK_BYTES - start % BLOCK_BYTES if start % BLOCK_BYTES else 0
            continue
        if pos > len(data):
            return
        chunk = data[start:pos]
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""
        else:
            raise OfflineRunError(f"{path}: unknown record type {kind} at byte {start - RECORD_HEADER.size}.")


def read_offline_run(path: str | Path) -> dict:
    """What one offline run sent: {'id', 'name', 'group', 'job_type', 'tags', 'config',
    'summary' (last value of every logged key), 'images' (keys of logged images), 'tables', 'path'}."""
    from wandb.proto import wandb_internal_pb2

    run: dict = {"path": str(Path(path).parent), "config": {}, "summary": {}, "images": [], "tables": []}
    for raw in read_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, name=r.display_name, group=r.run_group, job_type=r.job_type, tags=list(r.tags),
                       project=r.project)
            for item in r.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind in ("history", "summary"):
            items = record.history.item if kind == "history" else record.summary.update
            for item in items:
                # media come as one item per field: nested_key = [key, '_type'|'path'|...]
                nested = list(item.nested_key)
                key = item.key or (nested[0] if nested else "")
                if key.startswith("_"):
                    continue
                value = json.loads(item.value_json)
                if len(nested) > 1:
                    if nested[-1] == "_type" and value == "image-file" and key not in run["images"]:
                        run["images"].append(key)
                    elif nested[-1] == "_type" and "table" in str(value) and key not in run["tables"]:
                        run["tables"].append(key)
                elif isinstance(value, (int, float)) or value is None:
                    run["summary"][key] = float("nan") if value is None else value
    return run


def find_offline_runs(folders: Sequence[str | Path]) -> list[dict]:
    runs = []
    for folder in folders:
        if not Path(folder).is_dir():
            raise SystemExit(f"wandb_report.py: {folder}: no such folder; pass sweep or run folders.")
        runs += [read_offline_run(p) for p in sorted(Path(folder).rglob("offline-run-*/run-*.wandb"))]
    return runs


def _config_value(run: dict, dotted: str):
    """`task.name` of the run's config; the module's hyperparameters, logged after the config,
    replace some groups by a plain value (`task: infill`), which is then the answer."""
    node = run["config"]
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return node
        node = node.get(part)
    return node


def variant_of(run: dict) -> str:
    """`<task>_<model>` plus the swept overrides (tags with '=' other than seed and data)."""
    swept = [t for t in run.get("tags", []) if "=" in t and not t.startswith(("seed=", "data=", "model="))]
    base = f"{_config_value(run, 'task.name')}_{_config_value(run, 'model.name')}"
    return " ".join([base, *swept])


def report(runs: Sequence[dict], stage: str = "test") -> tuple[list[dict], str]:
    """(one row per run, the Markdown comparison grouped by group, then variant)."""
    rows = []
    for run in runs:
        row = {"group": run.get("group", ""), "variant": variant_of(run), "seed": _config_value(run, "seed"),
               "name": run.get("name", ""), "job_type": run.get("job_type", ""), "tags": " ".join(run.get("tags", [])),
               "images": len(run["images"])}
        row.update({m: run["summary"].get(f"{stage}/{m}", float("nan")) for m in HEADLINE})
        rows.append(row)
    present = [m for m in HEADLINE if any(r[m] == r[m] for r in rows)]  # some finite (NaN != NaN)
    lines = [f"# W&B comparison of {len(runs)} offline runs ({stage} metrics)\n"]
    for group in dict.fromkeys(r["group"] for r in rows):
        in_group = [r for r in rows if r["group"] == group]
        variants: dict[str, list[dict]] = {}
        for row in in_group:
            variants.setdefault(row["variant"], []).append(row)
        shown = [{"variant": v, "runs": len(rs), "seeds": " ".join(str(r["seed"]) for r in rs),
                  **{m: format_mean_std([r[m] for r in rs], digits=4) for m in present}} for v, rs in variants.items()]
        lines.append(f"## group {group}\n")
        lines.append(markdown_table(shown, ["variant", "runs", "seeds", *present]))
        lines.append(markdown_table(in_group, ["name", "job_type", "seed", "tags", "images"]))
    for run in runs:
        if run["images"]:
            lines.append(f"- {run.get('name')}: images {', '.join(run['images'])} in {run['path']}/files/media/images")
    return rows, "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("folders", nargs="+", help="sweep or run folders holding wandb/offline-run-*")
    parser.add_argument("--out", default=None, help="folder for wandb_report.md and wandb_runs.csv (default: the first folder)")
    parser.add_argument("--stage", default="test", choices=("test", "val"))
    args = parser.parse_args(argv)
    runs = find_offline_runs(args.folders)
    if not runs:
        print(f"wandb_report.py: no wandb/offline-run-* under {' '.join(args.folders)}: were the runs made with logger=wandb?",
              file=sys.stderr)
        return 2
    rows, markdown = report(runs, args.stage)
    out = Path(args.out or args.folders[0])
    out.mkdir(parents=True, exist_ok=True)
    (out / "wandb_report.md").write_text(markdown)
    with open(out / "wandb_runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(markdown)
    print(f"wandb_report.py: {len(runs)} runs -> {out / 'wandb_report.md'}, {out / 'wandb_runs.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
