"""Every failure a caller of sanaa_async_mem can act on, one class each.

All derive from :class:`SanaaError`. Where a builtin family already says what went wrong, the class joins
it too, so generic handlers keep working: :class:`ConfigurationError` is a ``ValueError``,
:class:`PoolTimeout` a ``TimeoutError``.
"""

from __future__ import annotations


class SanaaError(Exception):
    """Base class of every error raised by sanaa_async_mem."""


class ConfigurationError(SanaaError, ValueError):
    """A setting, argument or environment variable has a value the library cannot use.

    ``name`` is the parameter or variable, ``value`` what it was given.
    """

    def __init__(self, name: str, value: object, reason: str) -> None:
        self.name = name
        self.value = value
        self.reason = reason
        super().__init__(f"{name}={value!r}: {reason}")


class PoolError(SanaaError):
    """A pool was used in a way it cannot honour (foreign or double ``put``, wrong event loop, ...)."""


class PoolTimeout(PoolError, TimeoutError):
    """No object became available (or could be created) within the timeout."""


class PoolClosed(PoolError):
    """The pool is closed, or was closed while the caller was waiting."""


class PoolExhausted(PoolError):
    """Too many callers are already waiting (``max_waiting``); the request was refused at once."""


class ResourceError(SanaaError):
    """A managed resource is unknown, closed, or failed to open or clean up."""


class ResourceCleanupError(ResourceError, ExceptionGroup[Exception]):
    """One or more cleanups failed (``unregister_resource`` or ``aclose``); ``.exceptions`` holds each.

    Catch it as :class:`ResourceError`, or with ``except*`` on the cleanups' own error types. Every other
    cleanup still ran.
    """


class GCError(SanaaError):
    """Changing or running the garbage collector failed."""


__all__ = [
    "ConfigurationError",
    "GCError",
    "PoolClosed",
    "PoolError",
    "PoolExhausted",
    "PoolTimeout",
    "ResourceCleanupError",
    "ResourceError",
    "SanaaError",
]
