#!/usr/bin/env bash
# Run the Python test suite (pytest over tests/, configured by pytest.ini) in the
# project's virtual environment, creating it first with scripts/setup_env.sh when it is
# missing. Extra arguments go to pytest, e.g.  bash scripts/run_tests.sh -k composite
#
# Environment: PNERF_VENV (default .venv). Exit status: pytest's, except that "no tests
# collected" (pytest's 5) is an error too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${PNERF_VENV:-.venv}
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import torch, pytest, pnerf_fast" 2>/dev/null; then
  echo "[run_tests] environment $VENV missing or incomplete: running scripts/setup_env.sh"
  bash scripts/setup_env.sh
fi

set +e
"$VENV/bin/python" -m pytest -q "$@"   # paths: pytest.ini testpaths = tests
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "[run_tests] ERROR: pytest collected no tests" >&2
  exit 1
fi
exit $rc
