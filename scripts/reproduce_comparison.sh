#!/usr/bin/env bash
# Reproduce the NumPy-vs-PyTorch comparison study from nothing: set up .venv (first time only), run every part
# of the study (23 minutes on 2 CPU cores on 6 Dec 2026) and rewrite experiments/numpy_vs_torch/ (README.md, figures).
# Arguments go to scripts/study_numpy_vs_torch.py:   bash scripts/reproduce_comparison.sh --stages report
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" scripts/study_numpy_vs_torch.py "$@"
