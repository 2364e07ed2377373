"""Metrics tables: one row per (model, split), written as CSV (all columns) and Markdown."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

# Shown in the Markdown table, in this order, when present (the CSV has every column).
HEADLINE = (
    "rmse",
    "mae",
    "bias",
    "ame",
    "temporal_corr",
    "spatial_corr",
    "csi@1mmh",
    "pod@1mmh",
    "far@1mmh",
    "fss@1mmh_5px",
    "n_pixels",
    "fallbacks",
)
LABELS = ("model", "task", "split", "checkpoint")


def metrics_row(label: Mapping[str, str], metrics: Mapping[str, float], stage: str) -> dict:
    """Strip the `{stage}/` prefix: {'test/rmse': 1.2} -> {'rmse': 1.2}, with the labels first."""
    row: dict[str, str | float] = dict(label)
    prefix = f"{stage}/"
    for key, value in metrics.items():
        if key.startswith(prefix):
            row[key[len(prefix) :]] = float(value)
    if "scored_pixels" in row:
        # The pixel-time samples scored: methods of one comparison must show the same number.
        row["n_pixels"] = int(row["scored_pixels"])
    return row


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of `rows` over `columns` (default: labels + headline metrics)."""
    if columns is None:
        present = set().union(*(r.keys() for r in rows)) if rows else set()
        columns = [c for c in (*LABELS, *HEADLINE) if c in present]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_metrics_tables(rows: Sequence[Mapping], stem: str | Path, markdown: bool = True) -> tuple[Path, Path]:
    """Write `<stem>.csv` (every column) and, unless `markdown` is false, `<stem>.md` (headline
    columns); return both paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    if markdown:
        md_path.write_text(markdown_table(rows))
    return csv_path, md_path


def log_table(loggers, key: str, row: Mapping) -> None:
    """Send `row` as a one-row table to every logger that takes tables (W&B); others skip it."""
    columns = list(row)
    for logger in loggers:
        if hasattr(logger, "log_table"):
            logger.log_table(key=key, columns=columns, data=[[row[c] for c in columns]])
