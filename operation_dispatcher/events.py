"""EventBus: delivers DispatchEvents to subscribers, in emission order, on its own thread.

The dispatcher publishes while it holds its lock (that is what fixes the order); delivery happens
later on the bus thread, with no dispatcher lock held, so a subscriber may call back into the
dispatcher (complete an operation from a notification) and a slow one cannot stall dispatching.
A subscriber that raises is logged and kept. ``*_REQUESTED`` events reach only subscribers that
ask for them, as the original kept them out of the notification callback.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .models import DispatchEvent

logger = logging.getLogger(__name__)

EventHandler = Callable[[DispatchEvent], Any]


@dataclass(frozen=True, slots=True, eq=False)
class _Subscription:
    handler: EventHandler
    include_requests: bool


def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; if it returned an awaitable (an ``async def`` callback), run it to the end.

    asyncio is imported only when such a callback shows up, so the core stays fast to import.
    """
    result = fn(*args)
    if inspect.isawaitable(result):
        import asyncio

        async def _await() -> Any:
            return await result

        return asyncio.run(_await())
    return result


class EventBus:
    """Ordered, asynchronous delivery of events to subscribers (one thread per bus)."""

    def __init__(self, name: str, log: logging.Logger | None = None) -> None:
        self._name = name
        self._log = log or logger
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[DispatchEvent] = deque()
        self._subscribers: tuple[_Subscription, ...] = ()
        self._wants_requests = False
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._published = 0
        self._delivered = 0

    def subscribe(
        self, handler: EventHandler, *, include_requests: bool = False
    ) -> Callable[[], None]:
        """Call ``handler(event)`` for every event from now on; returns an unsubscribe function."""
        sub = _Subscription(handler, include_requests)
        with self._cond:
            self._subscribers = (*self._subscribers, sub)
            self._wants_requests = any(s.include_requests for s in self._subscribers)

        def unsubscribe() -> None:
            with self._cond:
                self._subscribers = tuple(s for s in self._subscribers if s is not sub)
                self._wants_requests = any(s.include_requests for s in self._subscribers)

        return unsubscribe

    def publish(self, event: DispatchEvent) -> None:
        """Queue ``event`` for delivery; starts the delivery thread on first use."""
        if event.event_type.is_request and not self._wants_requests:
            return  # nobody listens for *_REQUESTED events: do not wake the thread for them
        with self._cond:
            self._pending.append(event)
            self._published += 1
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._deliver, name=self._name, daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _deliver(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:
                    return
                event = self._pending.popleft()
                subscribers = self._subscribers
            is_request = event.event_type.is_request
            for sub in subscribers:
                if is_request and not sub.include_requests:
                    continue
                try:
                    call_maybe_async(sub.handler, event)
                except Exception:
                    self._log.exception(
                        "event subscriber %r failed on %s", sub.handler, event.event_type.value
                    )
            with self._cond:
                self._delivered += 1
                self._cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every event published so far has been delivered; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._published
            while self._delivered < target:
                if self._thread is None or not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def stop(self, timeout: float | None = None) -> bool:
        """Deliver what is queued, then end the thread; False if it is still busy after timeout."""
        with self._cond:
            thread = self._thread
            self._stopping = True
            self._cond.notify_all()
        if thread is None:
            return True
        if thread is threading.current_thread():
            return True  # stopped from a subscriber: the thread ends once the handler returns
        thread.join(timeout)
        return not thread.is_alive()


__all__ = ["EventBus", "call_maybe_async"]
