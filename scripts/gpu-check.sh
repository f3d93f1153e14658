#!/usr/bin/env bash
# The GPU check (scripts/gpu_check.py): on a machine with one CUDA GPU and no internet, install scopebench
# from this checkout into the current Python (its dependencies, torch with CUDA included, must already be
# there), then run the CUDA tests, the Sinkhorn-vs-ot.emd2 comparison and `scopebench plan` on the GPU
# within a time budget, and write every figure to one JSON.
#
#   scripts/gpu-check.sh [--dry-run] [--out FILE] [--budget SECONDS]
#
# --dry-run: no install, CPU-side checks at tiny sizes (seconds), the same JSON keys; `make test` runs it.
# PYTHON selects the interpreter (default: python3).
set -euo pipefail

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
dry_run=0
out="gpu-check.json"
budget=480
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --out) [ $# -ge 2 ] || { echo "gpu-check: --out needs a file name" >&2; exit 2; }; out="$2"; shift ;;
    --budget) [ $# -ge 2 ] || { echo "gpu-check: --budget needs seconds" >&2; exit 2; }; budget="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$budget" in ''|*[!0-9]*) echo "gpu-check: --budget must be whole seconds, got '$budget'" >&2; exit 2 ;; esac

repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MPLBACKEND=Agg
if [ "$dry_run" -eq 0 ]; then
  # offline: no index, no build isolation (setuptools from the environment), dependencies already present
  "$python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps --no-build-isolation -e "$repo"
  exec "$python" "$repo/scripts/gpu_check.py" --out "$out" --budget "$budget"
fi
exec "$python" "$repo/scripts/gpu_check.py" --dry-run --out "$out" --budget "$budget"
