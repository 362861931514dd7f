"""arrears policy: the pure decision engine (load, layer, evaluate, forecast, explain, purchase gate).

Nothing here reads a clock, a file, a database or a host: every moment is passed in as ``now``.
"""

from policy.engine import balance_at, evaluate
from policy.errors import PolicyError
from policy.explain import explain
from policy.forecast import ForecastItem, forecast
from policy.loader import PolicySet, load_policy
from policy.simulate import apply_decision
from policy.spend import SpendVerdict, can_spend

__all__ = [
    "ForecastItem",
    "PolicyError",
    "PolicySet",
    "SpendVerdict",
    "apply_decision",
    "balance_at",
    "can_spend",
    "evaluate",
    "explain",
    "forecast",
    "load_policy",
]
