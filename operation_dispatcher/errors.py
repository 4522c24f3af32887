"""Every error the dispatcher raises, with its message built once, here.

Each concrete error also inherits the builtin a caller would expect (``ValueError`` for bad input,
``LookupError`` for an unknown id, ``RuntimeError`` for a call made at the wrong time), so plain
``except ValueError`` keeps working; the parts of each message are kept as attributes so the HTTP
and MCP layers can put them into JSON without parsing strings.
"""

from __future__ import annotations

from typing import Any


class DispatcherError(Exception):
    """Root of every error raised by operation_dispatcher."""


class ValidationError(DispatcherError, ValueError):
    """A field of a model, or an argument, holds a value it must not hold."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field} {reason}")


class InvalidTransition(DispatcherError, ValueError):
    """A lifecycle trigger that the operation's current state does not allow."""

    def __init__(self, operation_id: Any, state: Any, trigger: str, allowed_from: Any = ()) -> None:
        self.operation_id = operation_id
        self.state = getattr(state, "value", state)
        self.trigger = trigger
        self.allowed_from = tuple(getattr(s, "value", s) for s in allowed_from)
        hint = f" ({trigger} needs {' or '.join(self.allowed_from)})" if self.allowed_from else ""
        super().__init__(
            f"cannot {trigger} operation {operation_id}: it is {self.state}{hint}"
        )


class OperationNotFound(DispatcherError, LookupError):
    """No operation with this id is known."""

    def __init__(self, operation_id: Any) -> None:
        self.operation_id = operation_id
        super().__init__(f"operation {operation_id} not found")

    def __str__(self) -> str:  # LookupError subclasses would otherwise be fine; keep it explicit
        return str(self.args[0])


class DuplicateOperation(DispatcherError, ValueError):
    """An operation with this id is already known to the queue or the dispatcher."""

    def __init__(self, operation_id: Any) -> None:
        self.operation_id = operation_id
        super().__init__(f"operation {operation_id} already exists; every operation needs a new id")


class DependencyError(DispatcherError, ValueError):
    """A dependency names an operation that cannot serve as its provider."""

    def __init__(self, operation_id: Any, provider_id: Any, reason: str) -> None:
        self.operation_id = operation_id
        self.provider_id = provider_id
        self.reason = reason
        super().__init__(f"operation {operation_id} depends on operation {provider_id}: {reason}")


class DependencyCycle(DependencyError):
    """Dependencies that would make operations wait for each other forever."""

    def __init__(self, cycle: list[Any]) -> None:
        self.cycle = list(cycle)
        path = " -> ".join(str(i) for i in self.cycle)
        DispatcherError.__init__(self, f"dependency cycle: {path}")
        self.operation_id = self.cycle[0] if self.cycle else None
        self.provider_id = self.cycle[1] if len(self.cycle) > 1 else None
        self.reason = "cycle"


class ResourceMismatch(DispatcherError, ValueError):
    """An operation addressed to another resource than this queue or dispatcher serves."""

    def __init__(self, operation_id: Any, resource_id: str, expected: str) -> None:
        self.operation_id = operation_id
        self.resource_id = resource_id
        self.expected = expected
        super().__init__(
            f"operation {operation_id} has resource_id {resource_id!r}, "
            f"but this dispatcher serves {expected!r}"
        )


class OperationNotCurrent(DispatcherError, RuntimeError):
    """A call that needs the current (pulled) operation got another one, or there is none."""

    def __init__(self, message: str, operation_id: Any = None) -> None:
        self.operation_id = operation_id
        super().__init__(message)


class OperationNotUpdatable(DispatcherError, RuntimeError):
    """The operation is running or finished, so its fields may not be changed now."""

    def __init__(self, operation_id: Any, message: str) -> None:
        self.operation_id = operation_id
        super().__init__(message)


class UnknownRequest(DispatcherError, LookupError):
    """No pending approval request has this id."""

    def __init__(self, request_id: Any) -> None:
        self.request_id = request_id
        super().__init__(f"request {request_id} not found")

    def __str__(self) -> str:
        return str(self.args[0])


class RequestClosed(DispatcherError, RuntimeError):
    """The approval request was already decided, timed out, or became void."""

    def __init__(self, request_id: Any, status: str) -> None:
        self.request_id = request_id
        self.status = status
        super().__init__(f"request {request_id} is already {status}")


class JournalError(DispatcherError, RuntimeError):
    """The journal file cannot be used, or a write to it failed (the change was not made)."""

    def __init__(self, path: str, cause: str) -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"journal {path}: {cause}")


class ExecutorConflict(DispatcherError, ValueError):
    """A second bridge asked to run the jobs of a resource that already has an executor."""

    def __init__(self, resource_id: str, attached: str, refused: str) -> None:
        self.resource_id = resource_id
        self.attached = attached
        self.refused = refused
        super().__init__(
            f"bridge {refused!r} cannot run the jobs of resource {resource_id!r}: bridge "
            f"{attached!r} already does (one executor per resource; set executor only on one)"
        )


class RunByExecutor(DispatcherError, RuntimeError):
    """Someone other than the executor bridge tried to finish an operation that bridge runs.

    The device may still be running the job: finishing it by hand needs ``force=True`` (the
    operator overrides the machine, and the event says so).
    """

    def __init__(self, operation_id: Any, executor: str) -> None:
        self.operation_id = operation_id
        self.executor = executor
        super().__init__(
            f"operation {operation_id} is run by executor bridge {executor!r}, which reports "
            f"when the device is done; to finish it by hand anyway, pass force=true"
        )


class ThreadDidNotStop(DispatcherError, RuntimeError):
    """A thread the dispatcher started was still alive after the stop timeout."""

    def __init__(self, thread_name: str, timeout: float | None) -> None:
        self.thread_name = thread_name
        self.timeout = timeout
        super().__init__(f"thread {thread_name!r} did not stop within {timeout} s")


__all__ = [
    "DependencyCycle",
    "DependencyError",
    "DispatcherError",
    "DuplicateOperation",
    "ExecutorConflict",
    "InvalidTransition",
    "JournalError",
    "OperationNotCurrent",
    "OperationNotFound",
    "OperationNotUpdatable",
    "RequestClosed",
    "ResourceMismatch",
    "RunByExecutor",
    "ThreadDidNotStop",
    "UnknownRequest",
    "ValidationError",
]
