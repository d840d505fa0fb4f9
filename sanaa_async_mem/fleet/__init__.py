"""A connection budget shared by every process of a service through Redis (``pip install
sanaa-async-mem[fleet]``): see :class:`FleetBudget`."""

from __future__ import annotations

import contextlib

from .budget import FleetBudget, FleetBudgetStats

__all__ = ["FleetBudget", "FleetBudgetStats"]

with contextlib.suppress(ImportError):  # the budget's Prometheus families, with prometheus_client
    from . import _metrics  # noqa: F401
