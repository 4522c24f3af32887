"""systemd's notify protocol in a few lines of stdlib: READY=1, WATCHDOG=1, STOPPING=1.

A unit with ``Type=notify`` hands the service ``$NOTIFY_SOCKET``, an ``AF_UNIX`` datagram socket
(a path, or an abstract name written with a leading ``@``); each message is one datagram of
``KEY=value`` lines. With ``WatchdogSec=`` it also sets ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``): the service must send ``WATCHDOG=1`` more often than that, or systemd kills
and restarts it. Without ``$NOTIFY_SOCKET`` nothing here does anything, so ``serve`` outside
systemd is unchanged.

``serve`` sends READY=1 once its HTTP server listens, STOPPING=1 when it begins to shut down, and
has the dispatcher loop itself send WATCHDOG=1 (:class:`Watchdog`): a loop wedged in a pass (a
journal write that never returns, the lock never given back) stops the pings, and systemd
restarts the service. A send never blocks (a full socket drops the message, logged once).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Sends notify messages to one ``$NOTIFY_SOCKET`` address."""

    def __init__(self, address: str) -> None:
        if not address or not (address.startswith("/") or address.startswith("@")):
            raise ValueError(f"NOTIFY_SOCKET must be a path or an @abstract name, got {address!r}")
        self.address = address
        # an abstract name: "@" stands for the leading NUL byte
        self._target = "\0" + address[1:] if address.startswith("@") else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._lock = threading.Lock()  # the loop thread and serve's thread both send
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier | None:
        """The notifier of ``$NOTIFY_SOCKET``, or None when it is unset (or not usable)."""
        address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
        if not address:
            return None
        try:
            return cls(address)
        except ValueError as exc:
            log.warning("%s; systemd is not notified", exc)
            return None

    def send(self, *lines: str) -> bool:
        """Send one message of ``KEY=value`` lines; False (logged once) if it could not go."""
        data = "\n".join(lines).encode()
        try:
            with self._lock:
                self._sock.sendto(data, self._target)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
                self._failed = True
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._sock.close()


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between two pings: half of ``$WATCHDOG_USEC``, if the watchdog is ours.

    None when it is unset, not a positive integer, or ``$WATCHDOG_PID`` names another process.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("WATCHDOG_USEC=%r is not a positive integer; no watchdog pings", usec)
        return None
    return value / 2_000_000


class Watchdog:
    """WATCHDOG=1 pings: from the dispatcher loop while it runs, from a thread while it does not.

    :meth:`beat` is the loop's heartbeat (called on every pass, it sends at most once per
    ``every`` seconds). While the loop is not running at all -- stopped by ``POST
    /dispatcher/stop``, or ended by an error that is logged and shown by ``/health`` -- the
    thread started by :meth:`start` pings instead: a stopped loop cannot be wedged, and a restart
    would start the dispatcher nobody meant to run. It never pings for a loop that runs.
    """

    def __init__(
        self, notifier: Notifier, every: float, is_running: Callable[[], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifier = notifier
        self.every = every
        self._is_running = is_running
        self._clock = clock
        self._next = float("-inf")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """The loop is alive: ping, unless the last ping was under ``every`` seconds ago."""
        now = self._clock()
        if now >= self._next:
            self._next = now + self.every
            self._notifier.send("WATCHDOG=1")

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._while_stopped, name="operation-dispatcher-watchdog", daemon=True
        )
        self._thread.start()

    def _while_stopped(self) -> None:
        while not self._stop.wait(self.every):
            if not self._is_running():
                self._notifier.send("WATCHDOG=1")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


__all__ = ["Notifier", "Watchdog", "watchdog_interval"]
