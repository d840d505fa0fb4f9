"""The demo's ``GET /metrics``: the service's metrics in Prometheus text, beside its ``/items`` route.

What a service would expose: the library's families (:class:`~sanaa_async_mem.integrations.prometheus
.SanaaCollector` over the demo's MemoryOptimizer) and prometheus_client's default process, platform and
GC collectors, in a registry of the demo's own. The text is rendered in a worker thread, once per half
second however many scrapers ask, so a scrape never blocks the event loop that serves the requests.

Needs ``prometheus-client`` (in the ``demo`` and ``prometheus`` extras); without it the route answers 503
with a line saying so, and the rest of the demo runs as before.
"""

from __future__ import annotations

from ..optimizer import MemoryOptimizer
from ._http import Handler, Response

__all__ = ["with_metrics"]

_PATHS = ("/metrics", "/metrics/")
_MISSING = b"/metrics needs prometheus-client: pip install 'sanaa-async-mem[prometheus]'\n"


def with_metrics(handler: Handler, optimizer: MemoryOptimizer) -> Handler:
    """``handler`` with ``GET /metrics`` in front of it (every other request goes to ``handler``)."""
    try:
        from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
        from prometheus_client.registry import CollectorRegistry

        from ..integrations.prometheus import MetricsEndpoint, SanaaCollector
    except ImportError:
        endpoint = None
    else:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        registry.register(SanaaCollector(optimizer))
        endpoint = MetricsEndpoint(registry)

    async def handle(method: str, path: str) -> Response:
        if path.split("?", 1)[0] not in _PATHS:
            return await handler(method, path)
        if endpoint is None:
            return 503, _MISSING, "text/plain"
        if method != "GET":
            return 404, b'{"error": "not found"}'
        return 200, await endpoint.arender(), endpoint.content_type

    return handle
