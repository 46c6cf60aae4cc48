#!/usr/bin/env bash
# The two Quickstart commands:  bash run.sh reproduce [reproduce options]  |  bash run.sh test [pytest args]
# Each creates .venv (once, and again when requirements.txt changes) with the pinned requirements.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -f "$VENV/.installed" ] || [ requirements.txt -nt "$VENV/.installed" ] || [ pyproject.toml -nt "$VENV/.installed" ]; then
  echo "setting up $VENV with the pinned requirements (torch==2.13.0 CPU) ..."
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  touch "$VENV/.installed"
fi
PY="$VENV/bin/python"
case "${1:-}" in
  reproduce)
    # Verifies (or downloads) the data, then executes every notebook with papermill at the
    # quick budget (about 30 min on 2 cores); options go to `python -m vae_utils reproduce`.
    shift
    "$PY" -m vae_utils fetch-data
    "$PY" -m vae_utils reproduce "$@"
    ;;
  test)
    # The tests need the data: verify them in $AEVB_DATA_DIR (else data/), downloading what is missing.
    shift
    "$PY" -m vae_utils fetch-data
    "$PY" -m pytest -q "$@"
    ;;
  *)
    echo "usage: bash run.sh reproduce | test [pytest args]" >&2
    exit 2
    ;;
esac
