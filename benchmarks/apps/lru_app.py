"""A tiny uvicorn service with a bounded LRU cache: memory fills while the cache warms, then stays flat.

``GET /item/{key}`` returns a rendered page for ``key``, computed on a miss and kept in an LRU cache of
``LRU_APP_MAXSIZE`` entries (default 4000; each 2-6 KiB). Under load with keys drawn from a bounded space
larger than the cache (``benchmarks/record_series.py`` drives it), the process's RSS grows while the cache
fills (a couple of minutes) and is flat once every hit either finds its entry or evicts the oldest: a
no-leak series with a genuine warm-up. ``GET /stats`` reports the cache's size.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MAXSIZE = int(os.environ.get("LRU_APP_MAXSIZE", "4000"))
_cache: OrderedDict[str, bytes] = OrderedDict()
_counts = {"hits": 0, "misses": 0}


def _render(key: str) -> bytes:
    digest = hashlib.sha256(key.encode()).digest()
    size = 2048 + int.from_bytes(digest[:2], "big") % 4096
    return (digest.hex().encode() * (size // 64 + 1))[:size]


async def item(request: Request) -> Response:
    key = request.path_params["key"]
    body = _cache.get(key)
    if body is None:
        _counts["misses"] += 1
        body = _render(key)
        _cache[key] = body
        if len(_cache) > MAXSIZE:
            _cache.popitem(last=False)
    else:
        _counts["hits"] += 1
        _cache.move_to_end(key)
    return Response(body, media_type="text/plain")


async def stats(request: Request) -> Response:
    return JSONResponse({"size": len(_cache), "maxsize": MAXSIZE, **_counts})


app = Starlette(routes=[Route("/item/{key}", item), Route("/stats", stats)])
