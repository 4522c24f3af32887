"""Why a Modbus TCP connection failed, in words an operator can act on.

pymodbus' ``ModbusTcpClient.connect()`` swallows the ``OSError`` and only logs it (and logs a
repeat as "Repeating...."), so a bridge retrying a closed port could only say "cannot connect",
and a PLC that accepts a connection and drops it at once surfaced as pymodbus' "Connection
unexpectedly closed 0.000 seconds into read". :class:`TcpClient` keeps the error of its last
connect; :func:`connect_failure` and :func:`closed_by_peer` turn both cases into one sentence.
"""

from __future__ import annotations

import socket

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException
from pymodbus.logging import Log

__all__ = ["TcpClient", "closed_by_peer", "connect_failure"]

#: what pymodbus' sync TCP client says when the peer closes the socket before answering
_CLOSED_TEXT = "Connection unexpectedly closed"


class TcpClient(ModbusTcpClient):
    """``ModbusTcpClient`` that remembers why its last :meth:`connect` failed (``connect_error``)."""

    connect_error: OSError | None = None

    def connect(self) -> bool:
        """Open the socket as pymodbus does, keeping the ``OSError`` instead of only logging it."""
        if self.socket:
            return True
        self.connect_error = None
        params = self.comm_params
        try:
            self.socket = socket.create_connection(
                (params.host, params.port), timeout=params.timeout_connect,
                source_address=getattr(params, "source_address", None),
            )
        except OSError as exc:
            self.connect_error = exc
            # as pymodbus logs it (the Modbus bridge's filter holds it back on a bridge thread)
            Log.error("Connection to ({}, {}) failed: {}", params.host, params.port, exc)
            self.close()
        return self.socket is not None


def connect_failure(host: str, port: int, error: OSError | None) -> str:
    """One sentence for a failed connect to ``host:port`` (``error`` None: reason unknown)."""
    where = f"{host}:{port}"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused by {where} (nothing listens on that port, or a firewall rejects it)"
    if isinstance(error, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return f"no answer from {where} while connecting (a wrong address, or the PLC is off)"
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name {host!r} ({error.strerror or error})"
    if error is not None:
        return f"cannot connect to {where} ({error.strerror or error})"
    return f"cannot connect to {where}"


def closed_by_peer(exc: BaseException) -> bool:
    """True when the peer closed (or reset) the connection instead of answering a request."""
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return True
    return isinstance(exc, ConnectionException) and _CLOSED_TEXT in str(exc)
