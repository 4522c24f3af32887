"""The state that has no event of its own, put on ``/events/stream`` for the clients that ask
(``?include=requests,signals,bridges``), so that a dashboard never has to poll for it.

* ``event: request_opened``: an approval request now waits for an answer through ``decide()``
  (``GET /requests``' item). Sent at once, from the dispatcher's request watcher. It closes as
  a ``*_requested`` event (with ``include_requests=true``) whose ``id`` is the request id.
* ``event: signal``: a signal's value or freshness changed (``GET /signals``' item). Coalesced:
  at most one frame per signal per ``interval`` (0.5 s), carrying the latest value, so a device
  flooding a signal cannot flood the browsers. A signal with a max age that nobody confirms
  any more is sent again, ``stale``, within ``interval`` of going stale (a re-confirmation of
  the same value is not a change, so only this relay's own deadline can notice).
* ``event: signals_resync``: more than ``max_names`` signals changed within one interval; the
  client re-reads ``GET /signals`` once instead (memory stays bounded whatever a device names).
* ``event: bridge``: a bridge went online or offline (its ``<name>.online`` signal changed),
  ``GET /bridges``' item, coalesced like signals.

One relay serves every stream client of an app. It subscribes to the dispatcher only while a
client wants it, and its thread waits without a timeout while nothing changes: an idle page
costs the server nothing here.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .. import _checks

if TYPE_CHECKING:
    from ..approvals import PendingRequest
    from ..dispatcher import OperationDispatcher
    from ..signals import Signal
    from .state import Bridge

log = logging.getLogger(__name__)
#: Seconds between two frames of one signal (or bridge): the latest value wins meanwhile.
DEFAULT_INTERVAL = 0.5
#: Signals remembered at once (changed and not yet sent; or watched for going stale).
DEFAULT_MAX_NAMES = 1024
_STALE_MARGIN = 0.05  # seconds past a max age before a signal is looked at again

#: ``send(kind, message)``: queue one ready SSE message for every client that asked for kind.
Send = Callable[[str, str], None]


def frame(name: str, data: Any) -> str | None:
    """One SSE message without an id (these are not journal events); None if not JSON."""
    try:
        text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        log.exception("a %s frame cannot be sent as JSON; left out of the event streams", name)
        return None
    return f"event: {name}\ndata: {text}\n\n"


def _join(thread: threading.Thread | None) -> None:
    """Wait (bounded) for a relay thread told to end, unless it is the caller."""
    if thread is not None and thread is not threading.current_thread():
        thread.join(5)


class LiveFrames:
    """Request, signal and bridge frames for the stream clients that asked for them."""

    def __init__(
        self,
        dispatcher: OperationDispatcher,
        send: Send,
        *,
        bridges: Mapping[str, Bridge] | None = None,
        interval: float = DEFAULT_INTERVAL,
        max_names: int = DEFAULT_MAX_NAMES,
    ) -> None:
        _checks.seconds(interval, "interval")  # ValidationError is a ValueError
        _checks.integer(max_names, "max_names", minimum=1)
        self._dispatcher = dispatcher
        self._send = send
        self._bridge_by_signal = {f"{name}.online": b for name, b in (bridges or {}).items()}
        self.interval = interval
        self.max_names = max_names
        self._life = threading.Lock()  # join, leave and close: one at a time
        self._cond = threading.Condition(threading.Lock())  # what changed, the thread
        self._users = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._changed: dict[str, None] = {}  # names changed and not sent yet, in order
        self._overflow = False  # more names changed than max_names: one resync frame instead
        self._bridges: dict[str, Bridge] = {}  # bridges whose health changed, not sent yet
        self._deadlines: dict[str, float] = {}  # name -> when a fresh signal may go stale
        self._last_flush = float("-inf")

    # ------------------------------------------------------------------ clients come and go

    def join(self) -> None:
        """A client wants frames: subscribe (and start the thread) for the first one."""
        with self._life:
            if self._closed:
                return
            self._users += 1
            if self._users > 1:
                return
            thread = threading.Thread(
                target=self._run, daemon=True,
                name=f"operation-dispatcher-live-frames[{self._dispatcher.resource_id}]",
            )
            with self._cond:
                self._thread = thread
            thread.start()
            self._unsubscribe = [
                self._dispatcher.signals.subscribe(self._on_signal),
                self._dispatcher.watch_requests(self._on_request),
            ]

    def leave(self) -> None:
        """A client went: unsubscribe and stop the thread after the last one."""
        with self._life:
            if self._users == 0:
                return
            self._users -= 1
            if self._users > 0:
                return
            thread = self._stop()
        _join(thread)

    def close(self) -> None:
        """The server stops: no frames from now on, the thread ends."""
        with self._life:
            self._closed = True
            self._users = 0
            thread = self._stop()
        _join(thread)

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def _stop(self) -> threading.Thread | None:
        """Unsubscribe, forget what waits and tell the thread to end (``_life`` held); the
        thread, for the caller to join once ``_life`` is released (it may be in a bridge's
        ``status()``: a new client's ``join()`` must not wait behind that)."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []
        with self._cond:
            thread, self._thread = self._thread, None
            self._changed.clear()
            self._bridges.clear()
            self._deadlines.clear()
            self._overflow = False
            self._cond.notify_all()
        return thread

    # ------------------------------------------------------------------ what happens

    def _on_request(self, request: PendingRequest) -> None:
        """On a callback worker: a request waits for decide(); every client hears of it now."""
        message = frame("request_opened", request.to_dict())
        if message is not None:
            self._send("requests", message)

    def _on_signal(self, signal: Signal) -> None:
        """In the writer's thread: note the name; the relay's thread sends the board's latest."""
        with self._cond:
            if self._thread is None:
                return
            name = signal.name
            if name in self._changed or len(self._changed) < self.max_names:
                self._changed[name] = None
            else:
                self._overflow = True
            bridge = self._bridge_by_signal.get(name)
            if bridge is not None:
                self._bridges[bridge.name] = bridge
            self._cond.notify()

    # ------------------------------------------------------------------ the relay's thread

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while True:
                    if self._thread is not me:
                        return
                    wait = self._wait_seconds(time.monotonic())
                    if wait <= 0:
                        break
                    self._cond.wait(None if wait == float("inf") else wait)
                changed, self._changed = self._changed, {}
                overflow, self._overflow = self._overflow, False
                bridges, self._bridges = self._bridges, {}
                self._last_flush = now = time.monotonic()
                due = [name for name, at in self._deadlines.items() if at <= now]
                for name in due:
                    del self._deadlines[name]
            try:
                self._flush(changed, overflow, bridges, due)
            except Exception:  # a bridge's status() or a send failed: the relay carries on
                log.exception("live frames could not be sent")

    def _wait_seconds(self, now: float) -> float:
        """Seconds until the next flush (lock held): inf while nothing changed or is due."""
        if self._changed or self._overflow or self._bridges:
            wake = self._last_flush + self.interval
        elif self._deadlines:
            wake = max(min(self._deadlines.values()), self._last_flush + self.interval)
        else:
            return float("inf")
        return wake - now

    def _flush(self, changed: dict[str, None], overflow: bool, bridges: dict[str, Bridge],
               due: list[str]) -> None:
        board = self._dispatcher.signals
        for name in due:  # fresh when sent: stale by now, or confirmed again meanwhile
            signal = None if name in changed else board.get(name)
            if signal is not None:
                if signal.is_stale():
                    changed[name] = None
                else:
                    self._watch(signal)
        if overflow:
            message = frame("signals_resync", {"reason": "too many signals changed at once"})
            if message is not None:
                self._send("signals", message)
        for name in changed:
            # the board's signal now: confirmed again since the change, it may be fresh still
            signal = board.get(name)
            if signal is None:  # deleted meanwhile
                continue
            if not overflow:  # the client re-reads them all instead
                message = frame("signal", signal.to_dict())
                if message is not None:
                    self._send("signals", message)
            self._watch(signal)
        for bridge in bridges.values():
            message = frame("bridge", bridge.status())
            if message is not None:
                self._send("bridges", message)

    def _watch(self, signal: Signal) -> None:
        """Look at a fresh signal with a max age again when it would go stale."""
        if signal.max_age_seconds is None or signal.is_stale():
            return
        with self._cond:
            if signal.name in self._deadlines or len(self._deadlines) < self.max_names:
                self._deadlines[signal.name] = (
                    signal.confirmed_at + signal.max_age_seconds + _STALE_MARGIN
                )


__all__ = ["DEFAULT_INTERVAL", "DEFAULT_MAX_NAMES", "LiveFrames", "frame"]
