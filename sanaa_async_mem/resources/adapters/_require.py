"""Lazy imports of optional client libraries, with an error that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ``ImportError`` telling which extra of sanaa-async-mem provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this adapter needs {module!r}, which is not installed: "
            f"pip install 'sanaa-async-mem[{extra}]' (or install {module} yourself)"
        ) from exc
