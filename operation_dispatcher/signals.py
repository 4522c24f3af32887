"""SignalBoard: named live values (a PLC bit, a door switch, a mode) that release operations.

Each signal keeps the time it was last confirmed and an optional maximum age. A signal older than
its maximum age is *stale*, and a stale signal never satisfies a release condition: a PLC that
stopped answering must not leave ``plc.ready`` true forever. A signal never written is unmet.

Writers (bridges, the HTTP API, user code) call :meth:`SignalBoard.set`; listeners (the
dispatcher) are told of every change of value or freshness, after the board's lock is released.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import ValidationError
from .models import check_json_data, copy_json, format_datetime, utcnow

logger = logging.getLogger(__name__)

SignalListener = Callable[["Signal"], None]


def same_value(a: Any, b: Any) -> bool:
    """Equality for signal values, except that a bool never equals a number (True != 1)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


_EXPIRED = float("-inf")
_INF = float("inf")  # the confirmed_at of an expired signal: stale whatever its max age


@dataclass(frozen=True, slots=True)
class Signal:
    """One named value and when it was last confirmed."""

    name: str
    value: Any
    updated_at: datetime
    max_age_seconds: float | None
    confirmed_at: float  # time.monotonic() of the last set(); staleness is judged on it
    #: when the value last changed (a re-confirmation of the same value keeps it): "false for 12 s"
    changed_at: datetime | None = None

    def age_seconds(self, now: float | None = None) -> float:
        """Seconds since the value was last confirmed."""
        return (time.monotonic() if now is None else now) - self.confirmed_at

    def is_stale(self, now: float | None = None) -> bool:
        """True once the signal is older than its max age (never, without one), or expired."""
        if self.confirmed_at == _EXPIRED:
            return True
        return self.max_age_seconds is not None and self.age_seconds(now) > self.max_age_seconds

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``GET /signals``."""
        return {
            "name": self.name,
            "value": self.value,
            "updated_at": format_datetime(self.updated_at),
            "max_age_seconds": self.max_age_seconds,
            "stale": self.is_stale(),
        }


def _copy(signal: Signal) -> Signal:
    """A snapshot: a dict or list value is copied, so a reader's edit changes nothing inside."""
    if type(signal.value) in (dict, list):
        return dataclasses.replace(signal, value=copy_json(signal.value))
    return signal


class SignalBoard:
    """Named live values with timestamps and staleness, safe to use from any thread.

    >>> board = SignalBoard()
    >>> board.set("plc.ready", True, max_age_seconds=2.0)
    >>> board.holds("plc.ready", True)
    True
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signals: dict[str, Signal] = {}
        self._listeners: list[SignalListener] = []
        self._owners: dict[str, str] = {}  # name prefix -> owner (a bridge)

    def set(self, name: str, value: Any, max_age_seconds: float | None = None) -> Signal:
        """Write (or re-confirm) a signal; listeners hear of it if its value or freshness changed."""
        if not isinstance(name, str) or not name:
            raise ValidationError("name", "must be a non-empty signal name")
        check_json_data(name, "name")
        check_json_data(value, "value")  # no inf/nan, huge ints or lone surrogates
        if max_age_seconds is not None and (
            type(max_age_seconds) not in (int, float)
            or not 0 < max_age_seconds < _INF  # also refuses nan
        ):
            raise ValidationError(
                "max_age_seconds", f"must be a finite number > 0 or None, got {max_age_seconds!r}"
            )
        value = copy_json(value)  # the caller's dict, edited later, must not change the board
        now = time.monotonic()
        stamp = utcnow()
        with self._lock:
            old = self._signals.get(name)
            same = old is not None and same_value(old.value, value)
            # the same value confirmed again has not changed: "false for 12 s" counts from its change
            since = old.changed_at if same and old is not None and old.changed_at else stamp
            signal = Signal(name, value, stamp, max_age_seconds, now, since)
            self._signals[name] = signal
            listeners = list(self._listeners)
        changed = (
            old is None
            or not same
            or old.is_stale(now)
            or old.max_age_seconds != max_age_seconds
        )
        if changed:
            self._tell(listeners, signal)
        return _copy(signal)

    @staticmethod
    def _tell(listeners: list[SignalListener], signal: Signal) -> None:
        for listener in listeners:  # outside the lock: a listener may read the board
            try:
                listener(_copy(signal))
            except Exception:
                logger.exception("signal listener %r failed for %s", listener, signal.name)

    def get(self, name: str) -> Signal | None:
        """A snapshot of the signal called ``name``, or None if it was never written."""
        with self._lock:
            signal = self._signals.get(name)
        return None if signal is None else _copy(signal)

    def value(self, name: str, default: Any = None) -> Any:
        """The signal's value, or ``default`` if it was never written."""
        signal = self.get(name)
        return default if signal is None else signal.value

    def holds(self, name: str, required: Any, *, expiring: bool = False) -> bool:
        """True if the signal exists, is fresh and equals ``required`` (``True`` is not ``1``).

        ``expiring``: only a signal written with a max age counts. An executor's online signal
        is read so (design.md 2a: silence is not health): one without a max age could never
        go stale, so a device hung with its line open would stay online for ever.
        """
        with self._lock:
            signal = self._signals.get(name)
        return (
            signal is not None
            and not (expiring and signal.max_age_seconds is None)
            and not signal.is_stale()
            and same_value(signal.value, required)
        )

    def expire(self, name: str) -> bool:
        """Make a signal stale now, keeping its last value on show; True if it existed.

        Its release conditions are unmet until it is written again. Bridges expire their
        signals when the device goes away: old data must not release anything. Listeners hear
        of it when the signal was fresh until now (its freshness changed).
        """
        with self._lock:
            old = self._signals.get(name)
            if old is None:
                return False
            signal = dataclasses.replace(old, confirmed_at=_EXPIRED)
            self._signals[name] = signal
            listeners = list(self._listeners) if not old.is_stale() else []
        self._tell(listeners, signal)
        return True

    def delete(self, name: str) -> bool:
        """Forget a signal (it becomes unmet); True if it existed."""
        with self._lock:
            return self._signals.pop(name, None) is not None

    def snapshot(self) -> list[Signal]:
        """Snapshots of every signal, sorted by name."""
        with self._lock:
            signals = sorted(self._signals.values(), key=lambda s: s.name)
        return [_copy(signal) for signal in signals]

    def subscribe(self, listener: SignalListener) -> Callable[[], None]:
        """Call ``listener(signal)`` on every change; returns a function that unsubscribes."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def claim(self, prefix: str, owner: str) -> None:
        """Record that ``owner`` (a bridge) alone writes the signals whose names start with ``prefix``.

        The board itself does not enforce it (the owner writes through :meth:`set`); front ends
        such as the HTTP API ask :meth:`owner_of` and refuse to write an owned signal. Claiming
        again for the same owner is a no-op; a prefix overlapping another owner's raises
        :class:`ValidationError`.
        """
        if not isinstance(prefix, str) or not prefix:
            raise ValidationError("prefix", "must be a non-empty signal name prefix")
        if not isinstance(owner, str) or not owner:
            raise ValidationError("owner", "must be a non-empty string")
        with self._lock:
            for claimed, holder in self._owners.items():
                overlap = claimed.startswith(prefix) or prefix.startswith(claimed)
                if overlap and holder != owner:
                    raise ValidationError(
                        "prefix", f"signals {prefix}* overlap {claimed}* which {holder} owns"
                    )
            self._owners[prefix] = owner

    def owner_of(self, name: str) -> str | None:
        """Who owns the signal ``name`` (see :meth:`claim`), or None if anyone may write it."""
        claim = self.claim_of(name)
        return None if claim is None else claim[1]

    def claim_of(self, name: str) -> tuple[str, str] | None:
        """The claim covering ``name``: ``(prefix, owner)``, or None if anyone may write it."""
        with self._lock:
            for prefix, owner in self._owners.items():
                if name.startswith(prefix):
                    return prefix, owner
        return None

    def names(self) -> list[str]:
        """The names of every signal written so far (cheap: no value is copied)."""
        with self._lock:
            return list(self._signals)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._signals

    def __len__(self) -> int:
        with self._lock:
            return len(self._signals)


__all__ = ["Signal", "SignalBoard"]
