"""The resources: the original's six URIs, plus an operation's explanation and the open requests.

Each is JSON text. A bad or unknown id is a resource error the client sees (the original
answered an error *object* instead, indistinguishable from data). Lists are bounded like the
tools' (:data:`~.tools.MAX_LISTED`, :data:`~.tools.MAX_HISTORY_LIMIT`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError

from .._checks import to_uuid
from ..errors import OperationNotFound, ValidationError
from .tools import MAX_HISTORY_LIMIT, MAX_LISTED

if TYPE_CHECKING:
    from uuid import UUID

    from ..dispatcher import OperationDispatcher

_JSON = "application/json"


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _limit(text: str) -> int:
    """A ``{limit}`` of a URI: a whole number from 1 to :data:`MAX_HISTORY_LIMIT`."""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text[:6]) <= MAX_HISTORY_LIMIT:
        raise ResourceError(
            f"limit must be a whole number from 1 to {MAX_HISTORY_LIMIT}, got {text[:20]!r}"
        )
    return int(text)


class DispatcherResources:
    """The resources of one dispatcher; :meth:`register` adds them to a server."""

    def __init__(self, dispatcher: OperationDispatcher) -> None:
        self._dispatcher = dispatcher

    def register(self, server: MCPServer) -> None:
        for uri, name, function in (
            ("dispatcher://state", "dispatcher_state", self.state),
            ("dispatcher://queue", "dispatcher_queue", self.queue),
            ("dispatcher://requests", "dispatcher_requests", self.requests),
            ("dispatcher://history/{limit}", "dispatcher_history", self.history),
            ("dispatcher://events/{limit}", "dispatcher_events", self.events),
            ("dispatcher://operations/session/{operation_id}", "dispatcher_operation",
             self.operation),
            ("dispatcher://operations/session/{operation_id}/events",
             "dispatcher_operation_events", self.operation_events),
            ("dispatcher://operations/{operation_id}/explain", "dispatcher_operation_explain",
             self.explain),
        ):
            server.resource(uri, name=name, mime_type=_JSON, description=function.__doc__)(
                function
            )

    def _id(self, operation_id: str) -> UUID:
        try:
            return to_uuid(operation_id, "operation_id")
        except ValidationError as exc:
            raise ResourceError(f"invalid operation id: {exc.reason}") from None

    def _missing(self, key: UUID) -> ResourceNotFoundError:
        return ResourceNotFoundError(
            f"operation {key} not found: dispatcher://queue lists the queued ones"
        )

    def state(self) -> str:
        """The dispatcher's state (running, paused, queue size, current operation)."""
        return _text(self._dispatcher.get_state().to_dict())

    def queue(self) -> str:
        """The queued operations in dispatch order (at most 1000; total and truncated say more)."""
        schedule = self._dispatcher.get_schedule()
        return _text({
            "operations": [op.to_dict() for op in schedule[:MAX_LISTED]],
            "total": len(schedule), "truncated": len(schedule) > MAX_LISTED,
        })

    def requests(self) -> str:
        """The approval requests waiting for an answer, oldest first."""
        return _text({"requests": [r.to_dict() for r in self._dispatcher.pending_requests()]})

    def history(self, limit: str) -> str:
        """The most recent `limit` events (1..10000) with the operations they name."""
        history = self._dispatcher.get_history(resolve_operations=True, limit=_limit(limit))
        return _text(history.to_dict())

    def events(self, limit: str) -> str:
        """The most recent `limit` events (1..10000)."""
        history = self._dispatcher.get_history(resolve_operations=False, limit=_limit(limit))
        return _text({"events": [event.to_dict() for event in history.events]})

    def operation(self, operation_id: str) -> str:
        """One operation: queued, current or recently finished."""
        key = self._id(operation_id)
        op = self._dispatcher.get_operation(key)
        if op is None:
            raise self._missing(key)
        return _text(op.to_dict())

    def operation_events(self, operation_id: str) -> str:
        """The events of one operation, oldest first (the most recent 10000 of them)."""
        key = self._id(operation_id)
        if self._dispatcher.get_operation(key) is None:
            raise self._missing(key)
        events = self._dispatcher.list_events(key)
        return _text({
            "operation_id": str(key),
            "events": [event.to_dict() for event in events[-MAX_HISTORY_LIMIT:]],
            "truncated": len(events) > MAX_HISTORY_LIMIT,
        })

    def explain(self, operation_id: str) -> str:
        """Why an operation is not running, each reason with a sentence to act on."""
        key = self._id(operation_id)
        try:
            return _text(self._dispatcher.explain(key))
        except OperationNotFound:
            raise self._missing(key) from None


__all__ = ["DispatcherResources"]
