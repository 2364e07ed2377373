#!/usr/bin/env bash
# Lint findings counted per rule (ruff) and per error code (mypy), then per file: the work
# left before `make lint` passes. Never fails on findings (it is a report); fails only if a
# tool is missing. Usage: tools/lint_report.sh [paths...]   (default: nowcast_infill)
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
paths=("${@:-nowcast_infill}")
for tool in ruff mypy; do
    [[ -x $BIN/$tool ]] || { echo "lint_report: $BIN/$tool not found; run: make install" >&2; exit 2; }
done

echo "== ruff check: findings per rule (paths: ${paths[*]}) =="
"$BIN/ruff" check --statistics --exit-zero "${paths[@]}"

echo
echo "== ruff check: findings per file =="
"$BIN/ruff" check --output-format concise --exit-zero "${paths[@]}" | grep -E '^[^ ]+:[0-9]+:[0-9]+:' \
    | cut -d: -f1 | sort | uniq -c | sort -rn

echo
echo "== ruff format --check: files the formatter would change =="
"$BIN/ruff" format --check --output-format concise "${paths[@]}" 2>&1 | grep -E ': unformatted:' | cut -d: -f1 | sort
"$BIN/ruff" format --check "${paths[@]}" 2>&1 | tail -n 1

mypy_out=$("$BIN/mypy" "${paths[@]}" 2>&1)
echo
echo "== mypy: errors per error code =="
grep -E ': error: ' <<<"$mypy_out" | grep -oE '\[[a-z0-9-]+\]$' | sort | uniq -c | sort -rn
echo
echo "== mypy: errors per file =="
grep -E ': error: ' <<<"$mypy_out" | cut -d: -f1 | sort | uniq -c | sort -rn
tail -n 1 <<<"$mypy_out"
