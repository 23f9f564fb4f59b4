#!/usr/bin/env bash
# The quick start: set up .venv (first time only) and train the embedded default, a character-level LSTM on
# Shakespeare, offline. Extra arguments are Hydra overrides: bash scripts/quickstart.sh model=gru
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/rnnlab-train" "$@"
