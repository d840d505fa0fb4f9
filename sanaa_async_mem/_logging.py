"""Logger names. The library logs under ``sanaa.*`` and never configures logging itself.

Records use lazy ``%`` formatting and put machine-readable fields in ``extra=`` (all prefixed
``sanaa_`` so they cannot collide with ``LogRecord`` attributes).
"""

from __future__ import annotations

import logging

ROOT = "sanaa"

logging.getLogger(ROOT).addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """The logger ``sanaa.<name>`` (``sanaa.pool``, ``sanaa.memory``, ``sanaa.gc``, ...)."""
    return logging.getLogger(f"{ROOT}.{name}")
