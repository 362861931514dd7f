"""Hypothesis profiles of the fuzz suite: ``ci`` (the default, 500 examples per target, a few seconds each)
and ``deep`` (10,000 per target, on demand: ``HYPOTHESIS_PROFILE=deep .venv/bin/pytest tests/fuzz``)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=500, deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.filter_too_much])
settings.register_profile("deep", settings.get_profile("ci"), max_examples=10_000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
