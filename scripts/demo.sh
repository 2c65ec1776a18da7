#!/usr/bin/env bash
# The main job: create the environment if it is missing, then run `pnerf demo`.
# Extra arguments go to `pnerf demo` (e.g. --out DIR, --photo me.jpg).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/pnerf demo "$@"
