"""Tests of the test suite's own rules (no skips in CI, no real clock below the CLI)."""
