"""Test tiers: the fast tier (CI) and the full tier (SENSILLA_TEST_TIER=full, with the
slow marker's tests). Every fuzz target runs FUZZ_CASES cases: 1,000 in CI, 10,000 in
the full tier."""

from __future__ import annotations

import os

FULL = os.environ.get("SENSILLA_TEST_TIER") == "full"
FUZZ_CASES = 10_000 if FULL else 1_000
