#!/usr/bin/env bash
# The README's test command: bootstraps everything, then runs lint, types and the
# fast test tier (everything not marked slow). `scripts/test.sh --full` adds the
# slow tier (long fuzzing, full fault matrix, soak runs). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/bootstrap.sh"
PY="$ROOT/.venv/bin/python"

MARK="not slow"
if [ "${1:-}" = "--full" ]; then
    MARK=""
    shift
    export SENSILLA_TEST_TIER=full
fi

echo "== ruff" >&2
"$PY" -m ruff check .
echo "== mypy" >&2
"$PY" -m mypy
echo "== pytest (${MARK:-all tiers})" >&2
mkdir -p tests/artifacts
set +e
if [ -n "$MARK" ]; then
    "$PY" -m pytest -m "$MARK" --junitxml=tests/artifacts/junit.xml "$@"
else
    "$PY" -m pytest --junitxml=tests/artifacts/junit.xml "$@"
fi
rc=$?
set -e
# A run that executes no test is a failure, whatever pytest says.
ran="$("$PY" - <<'PYEOF'
import xml.etree.ElementTree as ET
root = ET.parse("tests/artifacts/junit.xml").getroot()
suites = [root] if root.tag == "testsuite" else list(root)
print(sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites))
PYEOF
)"
echo "== tests executed: $ran" >&2
if [ "$ran" -eq 0 ]; then
    echo "test.sh: no test was executed" >&2
    exit 1
fi
exit "$rc"
