"""The fleet budget's Prometheus families (``sanaa_budget_*``), read from ``Readings.other["budget"]``.

The fleet figures (``fleet_leases``, ``fleet_waiting``, ``total``) are the same in every process sharing a
budget, so dashboards and rules take their ``max`` across processes; ``leases``, ``waiting`` and
``degraded`` are the process's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from ..integrations.prometheus import OTHER_FAMILIES, Family
from .budget import FleetBudgetStats

_GAUGES = (
    ("total", "Leases of the fleet budget (connections the fleet may hold)", "total"),
    ("fleet_leases", "Leases held across the fleet (as of this process's last Redis answer)", "fleet_leases"),
    ("fleet_waiting", "Lease requests waiting across the fleet", "fleet_waiting"),
    ("processes", "Processes holding or waiting for leases of the budget", "processes"),
    ("leases", "Leases this process holds", "held"),
    ("leases_in_use", "Leases of this process attached to objects", "in_use"),
    ("waiting", "This process's callers waiting for a lease", "waiting"),
    ("local_share", "Leases this process may hold in the degraded mode", "local_share"),
)
_COUNTERS = (
    ("granted", "Leases granted to this process", "granted"),
    ("released", "Leases this process gave back", "released"),
    ("shed", "Objects given up to return their lease to other processes", "shed"),
    ("redis_errors", "Failed calls to the budget's Redis", "redis_errors"),
)


def budget_families(ns: str, stats: Mapping[str, object]) -> Iterator[Family]:
    budgets = [(name, st) for name, st in stats.items() if isinstance(st, FleetBudgetStats)]
    for metric, doc, field in _GAUGES:
        yield Family(
            "gauge",
            f"{ns}_budget_{metric}",
            doc,
            ("budget",),
            tuple(((name,), float(getattr(st, field))) for name, st in budgets),
        )
    yield Family(
        "gauge",
        f"{ns}_budget_degraded",
        "1 while this process cannot reach the budget's Redis (degraded mode), else 0",
        ("budget",),
        tuple(((name,), 1.0 if st.degraded else 0.0) for name, st in budgets),
    )
    for metric, doc, field in _COUNTERS:
        yield Family(
            "counter",
            f"{ns}_budget_{metric}",
            doc,
            ("budget",),
            tuple(((name,), float(getattr(st, field))) for name, st in budgets),
        )


OTHER_FAMILIES["budget"] = budget_families
