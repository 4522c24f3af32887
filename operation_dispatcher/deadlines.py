"""Deadlines: the one heap of moments at which the dispatcher must look again.

Release dates, cooldown ends, request timeouts and operation timeouts all go here, and the
dispatcher thread sleeps on its condition variable until the nearest one (or until something
else wakes it). No polling loop and no timer thread per operation.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Hashable
from typing import Any
from uuid import UUID

from .keys import DeadlineKind


class Deadlines:
    """A min-heap of (when, kind, key) on the monotonic clock; at most one wake-up per key.

    ``kind`` is a :class:`~.keys.DeadlineKind`; a plain string is refused (TypeError), so a
    misspelt kind cannot become a wake-up that nobody acts on.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, DeadlineKind, Any]] = []
        self._seq = itertools.count()
        self._earliest: dict[tuple[DeadlineKind, Hashable], float] = {}

    def push(self, when: float, kind: DeadlineKind, key: Any) -> None:
        """Ask to be woken at ``when`` for (kind, key); a later duplicate is dropped."""
        if type(kind) is not DeadlineKind:
            raise TypeError(f"deadline kind must be a DeadlineKind, got {kind!r}")
        ident = (kind, key if isinstance(key, Hashable) else id(key))
        known = self._earliest.get(ident)
        if known is not None and known <= when:
            return
        self._earliest[ident] = when
        heapq.heappush(self._heap, (when, next(self._seq), kind, key))

    def discard(self, kind: DeadlineKind, key: Any) -> None:
        """Forget a wake-up that is no longer needed (e.g. its operation was cancelled)."""
        if type(kind) is not DeadlineKind:
            raise TypeError(f"deadline kind must be a DeadlineKind, got {kind!r}")
        # an operation id (the usual key) skips the slower ABC check
        hashable = type(key) is UUID or isinstance(key, Hashable)
        self._earliest.pop((kind, key if hashable else id(key)), None)
        # The heap entry is dropped lazily; rebuild once dead entries dominate, so a stream of
        # added-and-cancelled future operations cannot grow the heap without bound.
        if len(self._heap) > 64 and len(self._heap) > 2 * len(self._earliest):
            live = []
            for entry in self._heap:
                when, _, k, key_ = entry
                if self._earliest.get((k, key_ if isinstance(key_, Hashable) else id(key_))) == when:
                    live.append(entry)
            heapq.heapify(live)
            self._heap = live

    def pop_due(self, now: float | None = None) -> list[tuple[DeadlineKind, Any]]:
        """Remove and return every (kind, key) whose moment has come."""
        now = time.monotonic() if now is None else now
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, kind, key = heapq.heappop(heap)
            ident = (kind, key if isinstance(key, Hashable) else id(key))
            if self._earliest.get(ident) == when:  # else superseded or discarded: skip it
                del self._earliest[ident]
                due.append((kind, key))
        return due

    def seconds_until_next(self, now: float | None = None) -> float | None:
        """Seconds until the nearest deadline (0 if one is due), None if there is none."""
        heap = self._heap
        while heap:  # drop superseded or discarded entries, so they cause no wake-up
            when, _, kind, key = heap[0]
            if self._earliest.get((kind, key if isinstance(key, Hashable) else id(key))) == when:
                break
            heapq.heappop(heap)
        if not heap:
            return None
        now = time.monotonic() if now is None else now
        return max(0.0, heap[0][0] - now)

    def clear(self) -> None:
        """Forget every wake-up (the dispatcher state is being reloaded)."""
        self._heap = []
        self._earliest = {}

    def __len__(self) -> int:
        return len(self._heap)


__all__ = ["Deadlines"]
