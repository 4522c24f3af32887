"""BaseBridge: the thread, reconnect policy and health signal every hardware bridge shares.

A bridge connects one device (a PLC, a microcontroller on a serial line) to an
:class:`~operation_dispatcher.OperationDispatcher`. The base class owns the lifecycle, written
and tested once (template method): a named background thread, a stop event that every wait
is made on, reconnects with a bounded exponential backoff, the health signal
``<name>.online``, I/O errors logged once per change of health, and counters. A subclass only
fills in the I/O hooks:

``_connect()``
    open the device; raise :class:`OSError` or :class:`BridgeConnectionError` when it is not
    there. Runs on the bridge thread.
``_poll_once()``
    one round of I/O (read what is there, write what is queued); the base then waits
    ``poll_interval`` seconds on the stop event and calls it again. An :class:`OSError` or
    :class:`BridgeConnectionError` means the connection is lost. A subclass with a read loop of
    its own may override ``_serve()`` instead, must call ``_confirm_online()`` after every
    successful read (the bridge is online only from the first one) and must return once
    ``stopping`` is true.
``_disconnect()``
    close the device; called on the bridge thread after every connection ends (also after a
    failed ``_connect()``), so it must tolerate a half-open connection and being called twice.
``_interrupt()``
    optional; called by :meth:`BaseBridge.stop` on the stopping thread to unblock a blocking
    read (for example pyserial's ``cancel_read()``). Everything else stays on the bridge thread.
``_on_event(event)``
    optional; every dispatcher event except ``*_REQUESTED`` ones, on the dispatcher's event
    thread. Executor bridges override it and queue commands for the bridge thread with
    :meth:`BaseBridge._queue_command` (no I/O there: the event thread is shared by every
    subscriber, SSE streams and user callbacks included, and a stalled device must not stall
    them); the bridge thread takes them with ``_next_command()``. The base subscribes on
    :meth:`start` only when the subclass overrides it (or ``_handles_events()`` says so) and
    unsubscribes on :meth:`stop`.

Every signal a bridge writes goes through :meth:`BaseBridge.set_signal`, which names it
``<bridge>.<local name>`` and stamps it with the bridge's ``max_age_seconds``: when the device
falls silent its signals go stale and no release condition stays true on old data. When the
bridge notices the device is gone it expires every signal it wrote at once (their last values
stay on show, stale), whether or not they have a max age. A bridge writes at most
``max_signals`` distinct signals besides ``<name>.online`` (a device inventing names must not
grow memory without bound); more are dropped and counted as ``malformed``. The bridge claims its
prefix ``<name>.`` on the dispatcher's signal board, so nobody else (the HTTP API) writes its
signals.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from operation_dispatcher import (
    DispatchEvent,
    ExecutionState,
    Operation,
    OperationDispatcher,
    TerminationReason,
    _checks,
)
from operation_dispatcher.errors import DispatcherError, ThreadDidNotStop, ValidationError

__all__ = [
    "BaseBridge",
    "BridgeConnectionError",
    "BridgeError",
    "BridgeProtocolError",
]

COUNTER_NAMES = ("reads", "errors", "reconnects", "malformed")
#: default bound on the distinct signals one bridge writes (``<name>.online`` not counted)
DEFAULT_MAX_SIGNALS = 256
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a signal prefix and a URL path segment


class BridgeError(DispatcherError):
    """Root of every error raised by a firmware bridge."""


class BridgeConnectionError(BridgeError, ConnectionError):
    """The device cannot be reached, or the connection to it was lost."""

    def __init__(self, bridge: str, reason: str) -> None:
        self.bridge = bridge
        self.reason = reason
        super().__init__(f"bridge {bridge!r}: {reason}")


class BridgeProtocolError(BridgeError, ValueError):
    """The device answered something the bridge does not understand (or refused a request)."""

    def __init__(self, bridge: str, reason: str) -> None:
        self.bridge = bridge
        self.reason = reason
        super().__init__(f"bridge {bridge!r}: {reason}")


class BaseBridge:
    """Runs one device connection on a named thread, reconnecting with bounded backoff.

    :param dispatcher: the dispatcher whose signals the bridge writes (and, in executor mode,
        whose operations it completes or fails).
    :param name: the bridge name; its signals are ``<name>.<local name>``, its health signal
        is ``<name>.online`` and its thread ``bridge-<kind>[<name>]``.
    :param max_age_seconds: max age of every signal the bridge writes (None: stale only once
        the bridge goes offline).
    :param reconnect_initial: the first wait after a failed or lost connection, in seconds.
    :param reconnect_max: the backoff doubles up to this many seconds.
    :param max_signals: most distinct signals the bridge writes besides ``<name>.online``;
        more are dropped, counted as ``malformed`` and warned about once per interval.
    :param logger: a logger to use instead of ``firmware_bridges.<module>``.
    """

    #: short name of the bridge type, used in the thread name (``bridge-<kind>[<name>]``)
    kind = "base"
    #: seconds the default ``_serve()`` waits between two ``_poll_once()`` calls
    poll_interval: float = 0.1
    #: a repeated warning of one topic (malformed lines, refusals) is logged at most this often;
    #: the ones in between are counted into the next (a noisy line must not flood the log)
    warning_interval: float = 10.0

    def __init__(
        self,
        dispatcher: OperationDispatcher,
        name: str,
        *,
        max_age_seconds: float | None = None,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
        max_signals: int = DEFAULT_MAX_SIGNALS,
        logger: logging.Logger | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValidationError(
                "name", f"must be a bridge name of letters, digits, '_' and '-', got {name!r}"
            )
        # bridges are built from TOML tables: a string or a bool is named here, not crash later
        _checks.seconds(max_age_seconds, "max_age_seconds", optional=True)
        _checks.seconds(reconnect_initial, "reconnect_initial")
        _checks.seconds(reconnect_max, "reconnect_max")
        if not reconnect_max >= reconnect_initial:
            raise ValidationError(
                "reconnect_max", f"must be >= reconnect_initial ({reconnect_initial}), got {reconnect_max!r}"
            )
        _checks.integer(max_signals, "max_signals", 1, 1_000_000)
        self.dispatcher = dispatcher
        self.name = name
        self.max_age_seconds = max_age_seconds
        self.reconnect_initial = float(reconnect_initial)
        self.reconnect_max = float(reconnect_max)
        self.max_signals = max_signals
        self.logger = logger or logging.getLogger(type(self).__module__)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._lifecycle_lock = threading.Lock()
        self._counters_lock = threading.Lock()  # guards the counters, _written and _warned
        self._counters = dict.fromkeys(COUNTER_NAMES, 0)
        self._written: set[str] = set()
        self._warned: dict[str, tuple[float, int]] = {}  # topic -> (last logged, held since)
        self._online: bool | None = None  # None: no connection attempt yet
        self._confirmed = False  # this connection has had a successful exchange
        self._unsubscribe: Callable[[], None] | None = None
        # (command, operation id, argument): queued on the event thread, run on the bridge thread
        self._commands: queue.SimpleQueue[tuple[str, Any, Any]] = queue.SimpleQueue()
        self._last_error: str | None = None  # why the bridge is offline, or a configuration error
        if dispatcher is not None:  # None: check-config only builds the bridge to check it
            dispatcher.signals.claim(f"{name}.", self.owner)

    # ================================================================ public API
    @property
    def thread_name(self) -> str:
        return f"bridge-{self.kind}[{self.name}]"

    @property
    def is_running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def is_online(self) -> bool:
        """True while the device is connected and answering."""
        return bool(self._online)

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called; read loops must return soon after."""
        return self._stop_event.is_set()

    @property
    def endpoint(self) -> str:
        """Where the device is, for people: ``tcp://host:port``, a serial URL, ..."""
        return ""

    @property
    def owner(self) -> str:
        """How the signal board names this bridge as the owner of ``<name>.*``."""
        return f"bridge {self.name}"

    @property
    def last_error(self) -> str | None:
        """Why the device is offline, or a configuration error it reported; None when fine."""
        return self._last_error

    def status(self) -> dict[str, Any]:
        """A snapshot for the API and dashboards: name, kind, endpoint, running, online,
        last_error, counters."""
        return {
            "name": self.name,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "running": self.is_running,
            "online": self.is_online,
            "last_error": self.last_error,
            "counters": self.counters,
        }

    @property
    def counters(self) -> dict[str, int]:
        """A copy of the counters: reads, errors, reconnects (attempts after a failure), malformed."""
        with self._counters_lock:
            return dict(self._counters)

    def start(self) -> None:
        """Start the bridge thread (it connects, then polls until :meth:`stop`)."""
        with self._lifecycle_lock:
            if self.is_running:
                raise RuntimeError(f"{self.thread_name} is already running")
            self._stop_event.clear()
            if self._handles_events():
                self._unsubscribe = self.dispatcher.subscribe(self._on_event)
            self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and close the device; safe to call twice.

        Raises :class:`~operation_dispatcher.errors.ThreadDidNotStop` if the thread is still
        alive after ``timeout`` seconds.
        """
        with self._lifecycle_lock:
            self._stop_event.set()
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            thread = self._thread
            if thread is None:
                return
            try:
                self._interrupt()
            except Exception:
                self.logger.exception("%s: interrupting the device failed", self.thread_name)
            if thread is not threading.current_thread():
                thread.join(timeout)
                if thread.is_alive():
                    raise ThreadDidNotStop(thread.name, timeout)
            self._thread = None

    def __enter__(self) -> BaseBridge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_signal(self, local_name: str, value: Any) -> bool:
        """Write ``<name>.<local_name>`` with the bridge's max age (goes stale when silent).

        Returns False, counting it as ``malformed``, for a new name beyond ``max_signals``.
        """
        if not self._confirmed and threading.current_thread() is self._thread:
            self._confirm_online()  # data from the device: the exchange worked, online first
        full = f"{self.name}.{local_name}"
        online = f"{self.name}.online"
        with self._counters_lock:  # set_signal is public: any thread may write a bridge signal
            over = (full not in self._written and full != online
                    and len(self._written - {online}) >= self.max_signals)
            if not over:
                self._written.add(full)
        if over:
            self._count("malformed")
            self._warn_limited("signals over max_signals", (
                f"dropped signal {full!r}: the bridge already writes max_signals="
                f"{self.max_signals} signals"))
            return False
        self.dispatcher.signals.set(full, value, max_age_seconds=self.max_age_seconds)
        return True

    def __repr__(self) -> str:
        state = "online" if self._online else "offline"
        return f"<{type(self).__name__} {self.name!r} {state} running={self.is_running}>"

    # ================================================================ hooks
    def _connect(self) -> None:
        """Open the device (bridge thread); raise OSError/BridgeConnectionError if it is absent."""
        raise NotImplementedError

    def _disconnect(self) -> None:
        """Close the device (bridge thread); tolerate a half-open connection and repeated calls."""

    def _poll_once(self) -> None:
        """One round of I/O; raise OSError/BridgeConnectionError when the connection is lost."""
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Unblock a blocking read; called by :meth:`stop` on the stopping thread."""

    def _on_event(self, event: DispatchEvent) -> None:
        """A dispatcher event (event thread): queue work for the bridge thread, do no I/O here."""

    def _handles_events(self) -> bool:
        """Whether :meth:`start` subscribes :meth:`_on_event` to the dispatcher."""
        return type(self)._on_event is not BaseBridge._on_event

    def _become_executor(self) -> None:
        """Claim the dispatcher's one executor seat; a bridge that runs jobs calls this last in
        its ``__init__``, so a second executor fails when it is built (ExecutorConflict names
        both). From then on no operation starts while ``<name>.online`` is not a fresh True.
        If the journal says this bridge was running an operation when the last process ended,
        :meth:`_reattach` takes it over: the device finishes it, nothing is sent again.

        An executor needs a ``max_age_seconds``: without one ``<name>.online`` never goes
        stale, and a device hung with its connection open would stay online forever and be
        sent the next job (design.md 2a: silence is not health)."""
        if self.max_age_seconds is None:
            raise ValidationError("max_age_seconds", "must be a number of seconds for an "
                                  "executor: its silence must make it offline, got None")
        if self.dispatcher is None:  # check-config builds bridges without a dispatcher
            return
        recovered = self.dispatcher.attach_executor(self.name)
        if recovered is not None:
            self._reattach(recovered)

    def _reattach(self, operation: Operation) -> None:
        """Watch ``operation``, started on the device by a previous process (thread not yet
        running, so no lock is needed)."""
        raise NotImplementedError

    def _may_send_start(self, op_id: Any, offline: str) -> bool:
        """Bridge thread, just before a start goes to the device: it must answer now (not only
        when the start was queued: it may have dropped since, or reconnected without a first
        exchange), and the dispatcher must still run the operation (a timeout or a cancel can
        overtake a queued start; the device would then run a job nobody watches)."""
        if not self.is_online:
            self._fail_start(op_id, offline)
            return False
        op = self.dispatcher.get_operation(op_id)
        if op is None or op.state is not ExecutionState.RUNNING:
            self.logger.info("%s: operation %s is no longer running; its start is not sent",
                             self.thread_name, op_id)
            return False
        return True

    def _fail_start(self, op_id: Any, reason: str) -> None:
        """Fail an operation the bridge could not start (EXTERNAL_ERROR, the reason in meta_data)."""
        try:
            self.dispatcher.fail_operation(
                op_id, TerminationReason.EXTERNAL_ERROR,
                meta_data={"bridge": self.name, "reason": reason}, executor=self.name,
            )
        except DispatcherError:
            self.logger.debug("%s: operation %s already finished", self.thread_name, op_id)

    def _forced_off(self, event: DispatchEvent) -> bool:
        """Event thread: whether ``event`` ends a job of this bridge that an operator finished
        by force (``complete``/``fail`` with force). The device may still be running it, and
        the dispatcher now starts the next job on it: so the bridge cancels the job on the
        device (its cancel command, if it has one), and ignores the device's late report."""
        meta = event.meta_data
        if meta.get("forced_by_operator") is not True or meta.get("executor") != self.name:
            return False
        self.logger.warning(
            "%s: operation %s was finished by an operator (force) while the device ran it; "
            "the device is told to cancel it, and what it reports for it is ignored",
            self.thread_name, event.operation_id,
        )
        return True

    def _forget_command(self, command: str, op_id: Any) -> None:
        """A queued command other than a start was dropped with its connection (see
        :meth:`_drop_queued_starts`): update what the bridge tracks, if it must."""

    def _serve(self) -> None:
        """The loop of one connection: poll, confirm the health signal, wait, until stopped."""
        while not self._stop_event.is_set():
            self._poll_once()
            self._confirm_online()  # re-confirmed each round, so it too goes stale if we hang
            if self._stop_event.wait(self.poll_interval):
                return

    # ================================================================ helpers for subclasses
    def _confirm_online(self) -> None:
        """Call after every successful exchange with the device (a poll, a line read).

        A bridge counts as online only from its first successful exchange, not from the
        moment the connection opened: a device that accepts and hangs up at once (a PLC at its
        connection limit, a busy serial-over-TCP server) must stay one outage, with growing
        backoff and one warning, and must never show ``<name>.online`` true. A device that
        fell silent on an open connection (:meth:`_went_silent`) is online again here.
        """
        self._confirmed = True
        if self._online is True:
            self.set_signal("online", True)
        else:
            self._went_online()

    def _went_silent(self, reason: str) -> None:
        """The connection is open but the device stopped talking: offline until it speaks.

        Logged once; its signals are expired and ``<name>.online`` is false, as for a lost
        connection, and ``last_error`` says why.
        """
        if self._online is not False:
            self.logger.warning("%s: %s; offline until it speaks again", self.thread_name, reason)
        self._last_error = reason
        self._mark_offline()

    def _queue_command(self, command: str, op_id: Any, argument: Any = None) -> None:
        """Event thread: hand a command to the bridge thread (which alone talks to the device)."""
        self._commands.put((command, op_id, argument))

    def _next_command(self) -> tuple[str, Any, Any] | None:
        """Bridge thread: the next queued command, or None."""
        try:
            return self._commands.get_nowait()
        except queue.Empty:
            return None

    def _drop_queued_starts(self) -> None:
        """Fail the starts queued for a connection that is gone; forget the other commands.

        A start is never kept for a later connection: the device would start the job
        unexpectedly on its return.
        """
        while (item := self._next_command()) is not None:
            command, op_id, _ = item
            if command == "start":
                self._fail_start(op_id, "the connection to the device was lost before the start")
            else:
                self._forget_command(command, op_id)

    def _warn_limited(self, topic: str, message: str) -> None:
        """Log a warning of ``topic`` (see :attr:`warning_interval`); held ones go to DEBUG."""
        now = time.monotonic()
        with self._counters_lock:
            last, held = self._warned.get(topic, (-math.inf, 0))
            if now - last < self.warning_interval:
                self._warned[topic] = (last, held + 1)
                log_it = False
            else:
                self._warned[topic] = (now, 0)
                log_it = True
        if not log_it:
            self.logger.debug("%s: %s", self.thread_name, message)
        elif held:
            self.logger.warning("%s: %s (and %d more %s in the last %.0f s)",
                                self.thread_name, message, held, topic, now - last)
        else:
            self.logger.warning("%s: %s", self.thread_name, message)

    def _count(self, counter: str, n: int = 1) -> None:
        with self._counters_lock:
            self._counters[counter] += n

    def _wait(self, seconds: float) -> bool:
        """Wait on the stop event; True if the bridge is stopping."""
        return self._stop_event.wait(seconds)

    # ================================================================ the thread
    def _run(self) -> None:
        delay = self.reconnect_initial
        attempted = False
        try:
            while not self._stop_event.is_set():
                if attempted:
                    self._count("reconnects")
                attempted = True
                self._confirmed = False
                try:
                    self._connect()
                    self._serve()
                except (OSError, BridgeConnectionError, BridgeProtocolError) as exc:
                    self._count("errors")  # a refusal the subclass did not handle: no traceback
                    self._went_offline(exc)
                except Exception as exc:  # a bug or a protocol surprise: log it, keep the bridge
                    self._count("errors")
                    if self._online is not False:  # once per change of health, as for I/O
                        self.logger.exception("%s: unexpected error", self.thread_name)
                    self._went_offline(exc, log=False)
                finally:
                    self._safe_disconnect()
                if self._confirmed:  # the connection worked: a new outage starts the backoff over
                    delay = self.reconnect_initial
                if self._stop_event.wait(delay):
                    break
                delay = min(delay * 2, self.reconnect_max)
        finally:
            self._went_offline(None, log=False)

    def _safe_disconnect(self) -> None:
        try:
            self._disconnect()
        except Exception:
            self.logger.debug("%s: closing the device failed", self.thread_name, exc_info=True)

    def _went_online(self) -> None:
        if self._online is not True:
            if self._online is False:
                self.logger.info("%s: connected again", self.thread_name)
            else:
                self.logger.info("%s: connected", self.thread_name)
        self._online = True
        self._last_error = None
        self.set_signal("online", True)

    def _went_offline(self, exc: BaseException | None, *, log: bool = True) -> None:
        if log and self._online is not False:  # once per change of health, not once per retry
            self.logger.warning(
                "%s: device unreachable (%s); retrying every <= %s s",
                self.thread_name, exc, self.reconnect_max,
            )
        elif exc is not None:
            self.logger.debug("%s: still unreachable (%s)", self.thread_name, exc)
        if exc is not None:  # a bridge error's reason: the status already names the bridge
            self._last_error = str(getattr(exc, "reason", None) or exc)
        elif self.stopping:
            self._last_error = "the bridge is stopped"
        self._mark_offline()

    def _mark_offline(self) -> None:
        """``<name>.online`` false and every other signal of the bridge stale at once."""
        self._online = False
        signals = self.dispatcher.signals
        online = f"{self.name}.online"
        with self._counters_lock:
            written = list(self._written)
        for full in written:  # old data must release nothing: stale at once
            if full != online:
                signals.expire(full)
        signals.set(online, False)
        with self._counters_lock:
            self._written.add(online)
