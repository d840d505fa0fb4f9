"""TaskSet: the background tasks one component started, kept until they finish."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

__all__ = ["TaskSet"]

R = TypeVar("R")


class TaskSet:
    """Strong references to running tasks (the event loop keeps only weak ones, so an unreferenced task can
    be collected mid-flight). A finished task leaves the set by itself."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, R], *, name: str | None = None
    ) -> asyncio.Task[R]:
        """Start ``coro`` as a task on ``loop`` and keep it until it is done."""
        task = loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def pending(self) -> list[asyncio.Task[Any]]:
        """The tasks not finished yet (a copy)."""
        return [t for t in self._tasks if not t.done()]

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)
