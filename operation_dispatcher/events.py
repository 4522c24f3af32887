"""EventBus: delivers DispatchEvents to subscribers, in emission order, on its own thread.

The dispatcher publishes while it holds its lock (that is what fixes the order); delivery happens
later on the bus thread, with no dispatcher lock held, so a subscriber may call back into the
dispatcher (complete an operation from a notification) and a slow one cannot stall dispatching.
A subscriber that raises is logged and kept. ``*_REQUESTED`` events reach only subscribers that
ask for them, as the original kept them out of the notification callback. A subscriber may also
ask for each event's sequence number in the event store (``with_seq``): the journal's
``events.seq``, which the MQTT link publishes so that consumers can dedupe and find gaps.

:meth:`EventBus.stop` is final until the dispatcher starts again: events published after it are
held (at most :data:`HELD_EVENTS_LIMIT`, oldest dropped first, with a warning) and delivered, in
order, once the ``opens_on`` event (the dispatcher's ``OPERATION_DISPATCHER_STARTED``) is
published; nothing restarts the thread before that.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .models import DispatchEvent, EventType

logger = logging.getLogger(__name__)

#: Events a stopped bus holds for its next start; beyond it the oldest are dropped (and a warning
#: logged), so a stopped dispatcher that keeps being used cannot grow without bound.
HELD_EVENTS_LIMIT = 10_000

EventHandler = Callable[[DispatchEvent], Any]
#: A handler subscribed ``with_seq``: it also gets the event's store sequence number (None for
#: an event published without one).
SeqEventHandler = Callable[[DispatchEvent, "int | None"], Any]

#: The values of the *_REQUESTED event types (only subscribers that ask for them get them).
_REQUEST_VALUES = frozenset(kind.value for kind in EventType if kind.is_request)


@dataclass(frozen=True, slots=True, eq=False)
class _Subscription:
    handler: Callable[..., Any]
    include_requests: bool
    with_seq: bool = False


def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn``; if it returned an awaitable (an ``async def`` callback), run it to the end.

    asyncio is imported only when such a callback shows up, so the core stays fast to import.
    """
    result = fn(*args)
    if result is None:  # the usual handler: no awaitable to look for
        return None
    if inspect.isawaitable(result):
        import asyncio

        async def _await() -> Any:
            return await result

        return asyncio.run(_await())
    return result


class EventBus:
    """Ordered, asynchronous delivery of events to subscribers (one thread per bus).

    The bus starts open: the first event starts its thread. :meth:`stop` closes it; a closed
    bus holds what is published and starts no thread until an ``opens_on`` event reopens it.
    Every event gets a sequence number, so :meth:`drain` knows exactly what is still to come.
    """

    def __init__(
        self,
        name: str,
        log: logging.Logger | None = None,
        *,
        opens_on: EventType | None = None,
        held_limit: int = HELD_EVENTS_LIMIT,
    ) -> None:
        self._name = name
        self._log = log or logger
        self._opens_on = opens_on
        self._held_limit = held_limit
        self._cond = threading.Condition(threading.Lock())
        # (delivery number, event, store sequence number or 0 when published without one)
        self._pending: deque[tuple[int, DispatchEvent, int]] = deque()
        self._subscribers: tuple[_Subscription, ...] = ()
        self._wants_requests = False
        self._thread: threading.Thread | None = None
        self._running = False  # a thread is in _deliver (set and cleared under _cond)
        self._in_flight = 0  # sequence number of the event being delivered (0: none)
        self._closed = False  # stop() was called and no opens_on event came since
        self._stop_after = 0  # while closed, only events up to this number are delivered
        self._held = 0  # pending events published after stop() (all after the others)
        self._dropped = 0  # held events dropped since the last warning
        self._published = 0

    def subscribe(
        self, handler: EventHandler | SeqEventHandler, *, include_requests: bool = False,
        with_seq: bool = False,
    ) -> Callable[[], None]:
        """Call ``handler(event)`` (``handler(event, seq)`` with ``with_seq``) for every event
        from now on; returns an unsubscribe function."""
        sub = _Subscription(handler, include_requests, with_seq)
        with self._cond:
            self._subscribers = (*self._subscribers, sub)
            self._wants_requests = any(s.include_requests for s in self._subscribers)

        def unsubscribe() -> None:
            with self._cond:
                self._subscribers = tuple(s for s in self._subscribers if s is not sub)
                self._wants_requests = any(s.include_requests for s in self._subscribers)

        return unsubscribe

    def publish(self, event: DispatchEvent) -> None:
        """Queue ``event`` for delivery; starts the delivery thread unless the bus is closed."""
        self.publish_many((event,))

    def publish_many(
        self, events: Iterable[DispatchEvent], first_seq: int | None = None
    ) -> None:
        """Queue events in order under one lock and one wake-up (a unit of work's events).

        ``first_seq``: the store's sequence number of the first event; the others follow it
        one by one (what ``with_seq`` subscribers receive).
        """
        wants_requests = self._wants_requests
        start = first_seq or 0
        step = 1 if first_seq else 0  # 0 throughout: published without sequence numbers
        # nobody listens for *_REQUESTED events: do not wake the thread for them
        if wants_requests:
            wanted = [(e, start + i * step) for i, e in enumerate(events)]
        else:  # by plain value: no property call and no Python-level enum hash per event
            wanted = [
                (e, start + i * step) for i, e in enumerate(events)
                if e.event_type._value_ not in _REQUEST_VALUES
            ]
        if not wanted:
            return
        with self._cond:
            for event, seq in wanted:
                self._published += 1
                self._pending.append((self._published, event, seq))
                if self._closed:
                    if event.event_type is not self._opens_on or self._opens_on is None:
                        self._hold()
                        continue  # stopped: nothing runs until the dispatcher starts again
                    self._closed = False  # started again: deliver what was held, in order
                    self._held = self._dropped = 0
            if self._closed:
                return
            if not self._running:
                self._spawn()
            self._cond.notify_all()

    def _spawn(self) -> None:
        """Start a delivery thread (lock held)."""
        self._running = True
        self._thread = threading.Thread(target=self._deliver, name=self._name, daemon=True)
        self._thread.start()

    def _hold(self) -> None:
        """Keep an event published while closed; beyond the limit drop the oldest held one."""
        self._held += 1
        if self._held <= self._held_limit:
            return
        del self._pending[len(self._pending) - self._held]  # the oldest held event
        self._held -= 1
        if not self._dropped:
            self._log.warning(
                "%s is stopped and already holds %d events for its next start; "
                "dropping the oldest", self._name, self._held_limit,
            )
        self._dropped += 1

    def _next_batch(self) -> list[tuple[int, DispatchEvent, int]] | None:
        """Every event that may be delivered now, in order; None when the thread should end
        (lock held). A batch costs one lock round and one wake-up of drain() instead of one
        per event."""
        pending = self._pending
        while True:
            if pending:
                if not self._closed:
                    batch = list(pending)
                    pending.clear()
                    return batch
                limit = self._stop_after
                if pending[0][0] > limit:
                    return None  # only held events are left: they wait for the next start
                batch = []
                while pending and pending[0][0] <= limit:
                    batch.append(pending.popleft())
                return batch
            if self._closed:
                return None
            self._cond.wait()

    def _deliver(self) -> None:
        try:
            while True:
                with self._cond:
                    batch = self._next_batch()
                    if batch is None:
                        return
                    self._in_flight = batch[0][0]
                self._deliver_batch(batch)
                with self._cond:
                    self._in_flight = 0
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._running = False
                self._in_flight = 0
                if self._pending and not self._closed:
                    self._spawn()  # reopened while this thread was on its way out
                self._cond.notify_all()  # drain() may wait for this

    def _deliver_batch(self, batch: list[tuple[int, DispatchEvent, int]]) -> None:
        done = 0
        try:
            for number, event, seq in batch:
                # only ever raised: drain() may see the batch as done up to number - 1
                self._in_flight = number
                self._deliver_one(event, seq or None, self._subscribers)
                done += 1
        except BaseException:  # the thread dies (SystemExit in a handler): keep the rest
            with self._cond:
                self._pending.extendleft(reversed(batch[done + 1 :]))
            raise

    def _deliver_one(
        self, event: DispatchEvent, seq: int | None, subscribers: tuple[_Subscription, ...]
    ) -> None:
        is_request = event.event_type.is_request
        for sub in subscribers:
            if is_request and not sub.include_requests:
                continue
            try:
                if sub.with_seq:
                    call_maybe_async(sub.handler, event, seq)
                else:
                    call_maybe_async(sub.handler, event)
            except Exception:
                self._log.exception(
                    "event subscriber %r failed on %s", sub.handler, event.event_type.value
                )

    def _done_up_to(self, target: int) -> bool:
        """True when no event numbered <= target is pending or being delivered (lock held)."""
        if self._in_flight and self._in_flight <= target:
            return False
        return not self._pending or self._pending[0][0] > target

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every event published so far has been delivered.

        False on timeout, and at once when events are held by a stopped bus (they wait for the
        next start). Raises RuntimeError on the event thread itself (from a subscriber): it would
        wait for the very delivery it is part of, forever.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "drain_events() was called from a notification handler, on the event thread "
                f"{self._name!r}: it would wait for its own delivery forever; "
                "call it from another thread"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._published
            while not self._done_up_to(target):
                if not self._running:
                    return False  # stopped with events held: they come after the next start
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    @property
    def is_closed(self) -> bool:
        """True after :meth:`stop` until the next ``opens_on`` event."""
        return self._closed

    def stop(self, timeout: float | None = None) -> bool:
        """Deliver what was published so far, end the thread, and hold later events until the
        bus is reopened; False if the thread is still busy after timeout."""
        with self._cond:
            thread = self._thread
            if not self._closed:
                self._closed = True
                self._stop_after = self._published
                self._held = 0
            self._cond.notify_all()
        if thread is None:
            return True
        if thread is threading.current_thread():
            return True  # stopped from a subscriber: the thread ends once the handler returns
        thread.join(timeout)
        return not thread.is_alive()


__all__ = ["HELD_EVENTS_LIMIT", "EventBus", "SeqEventHandler", "call_maybe_async"]
