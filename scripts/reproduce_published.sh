#!/usr/bin/env bash
# rnnlab against published results on the JSB chorales: set up .venv (first time only), run every stage of
# scripts/published.py and rewrite experiments/published/ (README.md, figures). Resumable: a finished run is
# skipped, an interrupted one resumes from its last checkpoint, so the study can be run in parts.
#   bash scripts/reproduce_published.sh                          # all stages: 2.8 hours on 2 cores
#   bash scripts/reproduce_published.sh --stages search,tables   # the tables on the standard split (51 min)
#   bash scripts/reproduce_published.sh --quick                  # every stage in miniature (6.0 min)
# The standard split is read from ../shared/data/jsb_chorales/jsb-chorales-quarter.json (--data-path FILE).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" scripts/published.py "$@"
