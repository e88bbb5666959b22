#!/usr/bin/env bash
# The README's main command: bootstrap, then the all-in-one demo on the embedded
# defaults. Ctrl-C tears everything down. Extra arguments go to `sensilla demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/sensilla" demo "$@"
