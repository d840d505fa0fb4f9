"""This process, as psutil sees it: one ``psutil.Process`` for the whole library.

``psutil.Process()`` caches what it reads about the process (its creation time, for one); making one per
module, per object or per call repeats that work. ``memory_info()`` is ~10 us; ``memory_full_info()``
(USS/PSS) grows with RSS (~11 ms at 1 GiB) and must not run on the event loop.
"""

from __future__ import annotations

import os

import psutil

_process: psutil.Process | None = None
_pid = 0


def process() -> psutil.Process:
    """The current process (made anew after a fork, so a child never reads its parent)."""
    global _process, _pid
    pid = os.getpid()
    if _process is None or pid != _pid:
        _process, _pid = psutil.Process(pid), pid
    return _process


def rss() -> int:
    """Resident set size of this process, in bytes."""
    return int(process().memory_info().rss)
