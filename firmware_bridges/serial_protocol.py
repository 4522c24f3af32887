"""The serial line protocol between a host (the bridge) and a device (firmware), free of I/O.

Every message is one line of UTF-8 text ended by a terminator (``"\\n"`` unless configured; a
``"\\r"`` before it is ignored, so ``"\\r\\n"`` works too). Fields are separated by one space.

Device to host:

===========================  ================================================================
``SIG <name>=<value>``       a signal; ``<value>`` is read as JSON when it parses (``true``,
                             ``false``, ``null``, numbers, ``"quoted text"``, arrays, objects),
                             else kept as the raw text (``SIG mode=auto`` gives ``"auto"``)
``DONE <op-id>``             the operation finished successfully
``ERR <op-id> <reason>``     the operation failed; ``<reason>`` is the rest of the line
``PROG <op-id> <pct> [msg]`` progress of the running operation: ``<pct>`` is a plain decimal
                             number from 0 to 100 (``42``, ``42.5``; no sign, no exponent),
                             ``[msg]`` an optional text, the rest of the line
``ACK`` / ``NAK``            the last host command was accepted / refused
===========================  ================================================================

Host to device:

===========================  ================================================================
``RUN <op-id> <command>``    start the operation; ``<command>`` is the rest of the line
``PAUSE`` / ``RESUME``       pause / resume the running operation
``CANCEL <op-id>``           abandon the operation
===========================  ================================================================

Optional checksum, as in NMEA 0183: the line ends with ``*XX``, two hex digits (either case)
giving the XOR of all UTF-8 bytes before the ``*``. ``SIG ready=true*3D`` is a valid line; with
checksums on, a line without one or with a wrong one is rejected.

Lines longer than a cap (256 bytes by default, terminator excluded) are dropped whole by
:class:`LineFramer`; such lines, bytes that are not UTF-8, unknown messages and a ``SIG`` value
that is JSON no reader here takes (an integer over 4,300 digits, nesting past the stack) are
reported as :class:`MalformedLine`, which the bridge counts and logs and never treats as fatal.

>>> parse_device_line("SIG temperature=21.5")
DeviceMessage(kind='SIG', name='temperature', value=21.5, operation_id=None, reason=None, message=None)
>>> parse_device_line("PROG op-1 42.5 heating up")
DeviceMessage(kind='PROG', name=None, value=42.5, operation_id='op-1', reason=None, message='heating up')
>>> format_run("op-1", "weld seam=3")
'RUN op-1 weld seam=3'
>>> add_checksum("SIG ready=true")
'SIG ready=true*3D'
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from operation_dispatcher._checks import RefusedJSON, load_json

DEFAULT_TERMINATOR = "\n"
DEFAULT_MAX_LINE = 256

DEVICE_KINDS = ("SIG", "DONE", "ERR", "PROG", "ACK", "NAK")
#: a percent as ``PROG`` carries it: digits, an optional fraction; no sign, exponent, nan or inf
_PERCENT = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,6})?")
HOST_KINDS = ("RUN", "PAUSE", "RESUME", "CANCEL")


class MalformedLine(ValueError):
    """A line that is not a valid protocol message; ``line`` holds it, ``reason`` says why."""

    def __init__(self, line: str | bytes, reason: str) -> None:
        super().__init__(f"malformed line {line!r}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class DeviceMessage:
    """A parsed device-to-host line; fields that the kind does not use are None.

    ``PROG``: ``value`` is the percent (a float 0..100), ``message`` the text after it.
    """

    kind: str
    name: str | None = None
    value: Any = None
    operation_id: str | None = None
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class HostMessage:
    """A parsed host-to-device line; fields that the kind does not use are None."""

    kind: str
    operation_id: str | None = None
    command: str | None = None


# ------------------------------------------------------------------------------ checksums


def checksum(body: str) -> str:
    """Two upper-case hex digits: the XOR of the UTF-8 bytes of ``body``."""
    value = 0
    for byte in body.encode("utf-8"):
        value ^= byte
    return f"{value:02X}"


def add_checksum(body: str) -> str:
    """``body`` followed by ``*XX``."""
    return f"{body}*{checksum(body)}"


def strip_checksum(line: str) -> str:
    """The body of a checksummed line; raises :class:`MalformedLine` if missing or wrong."""
    body, star, given = line.rpartition("*")
    if not star or len(given) != 2:
        raise MalformedLine(line, "no '*XX' checksum at the end")
    if given.upper() != checksum(body):
        raise MalformedLine(line, f"bad checksum {given!r} (expected {checksum(body)!r})")
    return body


# ------------------------------------------------------------------------------ values


def parse_value(text: str) -> Any:
    """The JSON value of ``text`` if it is JSON, else ``text`` itself.

    JSON under the rules every reader of the package shares (``_checks.load_json``): ``NaN``
    and ``Infinity`` are not JSON (kept as text, never a NaN that equals nothing); an integer
    over 4,300 digits or nesting past the stack raises :class:`RefusedJSON` (a ValueError): a
    number or a list the device meant, that no reader can take, is refused, not turned to text.
    """
    try:
        return load_json(text)
    except RefusedJSON:
        raise
    except ValueError:
        return text


def format_value(value: Any) -> str:
    """``value`` as it appears after ``SIG name=`` (strings bare unless they would read as JSON)."""
    if isinstance(value, str):
        try:
            bare = parse_value(value) == value
        except RefusedJSON:  # digits or brackets the device would read as refused JSON
            bare = False
        return value if bare else json.dumps(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"cannot send {value!r}: the protocol only carries finite numbers")
    return json.dumps(value, separators=(",", ":"))


# ------------------------------------------------------------------------------ parsing


def _prepare(line: str | bytes, use_checksum: bool) -> str:
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedLine(line, f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    text = line.rstrip("\r\n")
    if any(ch < " " and ch != "\t" for ch in text):
        raise MalformedLine(line, "contains control characters")
    if use_checksum:
        text = strip_checksum(text)
    text = text.strip()
    if not text:
        raise MalformedLine(line, "empty line")
    return text


def _token(line: str | bytes, text: str, what: str) -> str:
    if not text or any(ch.isspace() for ch in text):
        raise MalformedLine(line, f"expected one {what}, got {text!r}")
    return text


def parse_device_line(line: str | bytes, *, use_checksum: bool = False) -> DeviceMessage:
    """Parse one device-to-host line (terminator optional); raises :class:`MalformedLine`."""
    text = _prepare(line, use_checksum)
    kind, _, rest = text.partition(" ")
    rest = rest.strip()
    if kind == "SIG":
        name, eq, value = rest.partition("=")
        if not eq:
            raise MalformedLine(line, "SIG needs '<name>=<value>'")
        name = _token(line, name.strip(), "signal name")
        try:
            return DeviceMessage("SIG", name=name, value=parse_value(value.strip()))
        except RefusedJSON as exc:
            raise MalformedLine(line, f"SIG value refused: {exc}") from None
    if kind == "DONE":
        return DeviceMessage("DONE", operation_id=_token(line, rest, "operation id"))
    if kind == "ERR":
        op_id, _, reason = rest.partition(" ")
        op_id = _token(line, op_id, "operation id")
        return DeviceMessage("ERR", operation_id=op_id, reason=reason.strip())
    if kind == "PROG":
        return _parse_progress(line, rest)
    if kind in ("ACK", "NAK"):
        if rest:
            raise MalformedLine(line, f"{kind} takes no arguments")
        return DeviceMessage(kind)
    raise MalformedLine(line, f"unknown message {kind!r} (known: {', '.join(DEVICE_KINDS)})")


def _parse_progress(line: str | bytes, rest: str) -> DeviceMessage:
    """``PROG <op-id> <percent> [message]``: the percent must be a plain number 0..100."""
    op_id, _, tail = rest.partition(" ")
    op_id = _token(line, op_id, "operation id")
    text, _, message = tail.strip().partition(" ")
    if not _PERCENT.fullmatch(text):
        raise MalformedLine(line, f"PROG needs a percent from 0 to 100 after the id, got {text!r}")
    percent = float(text)
    if percent > 100:
        raise MalformedLine(line, f"PROG percent must be from 0 to 100, got {text}")
    return DeviceMessage("PROG", value=percent, operation_id=op_id, message=message.strip() or None)


def parse_host_line(line: str | bytes, *, use_checksum: bool = False) -> HostMessage:
    """Parse one host-to-device line (the device side); raises :class:`MalformedLine`."""
    text = _prepare(line, use_checksum)
    kind, _, rest = text.partition(" ")
    rest = rest.strip()
    if kind == "RUN":
        op_id, _, command = rest.partition(" ")
        return HostMessage("RUN", _token(line, op_id, "operation id"), command.strip())
    if kind == "CANCEL":
        return HostMessage("CANCEL", _token(line, rest, "operation id"))
    if kind in ("PAUSE", "RESUME"):
        if rest:
            raise MalformedLine(line, f"{kind} takes no arguments")
        return HostMessage(kind)
    raise MalformedLine(line, f"unknown message {kind!r} (known: {', '.join(HOST_KINDS)})")


# ------------------------------------------------------------------------------ formatting


def _one_line(text: str, what: str) -> str:
    if any(ch < " " and ch != "\t" for ch in text):
        raise ValueError(f"{what} {text!r} must be one line without control characters")
    return text


def _op_id(operation_id: Any) -> str:
    text = str(operation_id)
    if not text or any(ch.isspace() for ch in text) or "*" in text:
        raise ValueError(f"operation id {text!r} must be one token without spaces or '*'")
    return text


def format_run(operation_id: Any, command: str) -> str:
    return _one_line(f"RUN {_op_id(operation_id)} {command}".rstrip(), "command")


def format_pause() -> str:
    return "PAUSE"


def format_resume() -> str:
    return "RESUME"


def format_cancel(operation_id: Any) -> str:
    return f"CANCEL {_op_id(operation_id)}"


def format_signal(name: str, value: Any) -> str:
    if not name or any(ch.isspace() for ch in name) or "=" in name:
        raise ValueError(f"signal name {name!r} must be one token without spaces or '='")
    return _one_line(f"SIG {name}={format_value(value)}", "signal")


def format_done(operation_id: Any) -> str:
    return f"DONE {_op_id(operation_id)}"


def format_error(operation_id: Any, reason: str) -> str:
    return _one_line(f"ERR {_op_id(operation_id)} {reason}".rstrip(), "reason")


def format_progress(operation_id: Any, percent: float, message: str | None = None) -> str:
    """``PROG <id> <percent> [message]``; ``percent`` a finite number from 0 to 100."""
    if type(percent) not in (int, float) or not 0 <= percent <= 100:  # also refuses nan
        raise ValueError(f"percent must be a number from 0 to 100, got {percent!r}")
    text = f"{percent:.3f}".rstrip("0").rstrip(".")
    body = f"PROG {_op_id(operation_id)} {text}"
    return _one_line(f"{body} {message}" if message else body, "message")


def encode_line(
    body: str, *, terminator: str = DEFAULT_TERMINATOR, use_checksum: bool = False
) -> bytes:
    """The bytes to write for one message: body, checksum if on, terminator."""
    if use_checksum:
        body = add_checksum(body)
    return (body + terminator).encode("utf-8")


# ------------------------------------------------------------------------------ framing


@dataclass(frozen=True)
class Overlong:
    """Stands in for a line that exceeded the cap; ``length`` is how many bytes were dropped."""

    length: int


class LineFramer:
    """Splits a byte stream into lines; over-long lines come out as :class:`Overlong`.

    >>> framer = LineFramer(max_line=8)
    >>> framer.feed(b"DONE 1\\nSIG a=12345678\\nDO")
    [b'DONE 1', Overlong(length=14)]
    >>> framer.feed(b"NE 2\\n")
    [b'DONE 2']
    """

    def __init__(
        self, terminator: str | bytes = DEFAULT_TERMINATOR, max_line: int = DEFAULT_MAX_LINE
    ) -> None:
        term = terminator.encode("utf-8") if isinstance(terminator, str) else bytes(terminator)
        if not term:
            raise ValueError("terminator must not be empty")
        if max_line < 1:
            raise ValueError(f"max_line must be >= 1, got {max_line}")
        self.terminator = term
        self.max_line = max_line
        self._buffer = bytearray()
        self._dropping = 0  # > 0 while discarding the rest of an over-long line

    @property
    def pending(self) -> int:
        """Bytes held of an unfinished line."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | Overlong]:
        """Add bytes; return the lines (terminator removed) they complete, in order."""
        self._buffer += data
        out: list[bytes | Overlong] = []
        term = self.terminator
        while True:
            end = self._buffer.find(term)
            if end < 0:
                break
            line = bytes(self._buffer[:end])
            del self._buffer[: end + len(term)]
            if self._dropping:
                out.append(Overlong(self._dropping + len(line)))
                self._dropping = 0
            elif len(line.rstrip(b"\r")) > self.max_line:
                out.append(Overlong(len(line)))
            else:
                out.append(line)
        # keep at most max_line + a partial terminator; beyond that the line is over-long
        keep = self.max_line + len(term)
        if len(self._buffer) > keep:
            cut = len(self._buffer) - (len(term) - 1)
            self._dropping += cut
            del self._buffer[:cut]
        return out

    def reset(self) -> None:
        """Forget any partial line (after a reconnect)."""
        self._buffer.clear()
        self._dropping = 0
