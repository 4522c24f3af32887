"""Commands over MQTT: parse, check and run them on the dispatcher, with the REST API's codes.

A central system publishes ``{"command_id": "...", "command": "cancel", "args": {...}}`` on
``<prefix>/<resource_id>/commands``; the answer on ``.../command_results`` carries the same
``command_id`` (the correlation), ``ok``, the HTTP status the REST route would have answered,
and either ``result`` or ``error`` ``{"code", "message", "details"}`` with the REST route's code
(``error_codes.STATUS_BY_ERROR`` plus each route's specific codes). A malformed, oversized or
unknown command is answered with an error and nothing is applied.

QoS 1 may deliver a command twice: a ``command_id`` seen among the last
:data:`REMEMBERED_COMMANDS` is answered again with its first result, not run again.

Commands run one at a time on the :class:`CommandWorker` thread, never on paho's network
thread: a cancel may wait for an operator's approval, and meanwhile the link must go on
publishing and receiving. Its queue is bounded; a command beyond it is answered
``command_queue_full`` (503) at once. Pure: no paho here.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .. import _checks
from ..error_codes import ErrorAnswer
from ..errors import (
    DependencyError,
    DispatcherError,
    DuplicateOperation,
    InvalidTransition,
    OperationNotCurrent,
    OperationNotFound,
    OperationNotUpdatable,
    RequestClosed,
    ResourceMismatch,
    RunByExecutor,
    UnknownRequest,
    ValidationError,
)
from ..models import UPDATABLE_FIELDS, ExecutionState, Operation, TerminationReason
from ..progress import elapsed_seconds

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher

log = logging.getLogger(__name__)

#: A command (or response) payload larger than this is refused unread (the REST API's 413).
MAX_COMMAND_BYTES = 256 * 1024
#: Commands waiting for the worker; beyond it a command is refused (503 command_queue_full).
COMMAND_QUEUE_SIZE = 256
#: Recent command ids whose result is kept, so a QoS 1 duplicate is answered, not run again.
REMEMBERED_COMMANDS = 1024
#: as ``POST /operations/add``
MAX_OPERATIONS_PER_ADD = 1000
MAX_COMMAND_ID = 128
#: The fields an added operation may set (``POST /operations/add``'s, plus ``id`` so that a
#: retried add is refused as a duplicate rather than queued twice).
ADDABLE_FIELDS = UPDATABLE_FIELDS | {"job_id", "id"}
_HEADER_KEYS = frozenset({"headerId", "timestamp", "version", "manufacturer", "serialNumber"})
_ACTIVE = (ExecutionState.RUNNING, ExecutionState.PAUSED)

#: command -> the keys its ``args`` may hold
COMMANDS: dict[str, frozenset[str]] = {
    "add": frozenset({"operations"}),
    "update": frozenset({"operation_id", "updates"}),
    "cancel": frozenset({"operation_id", "termination_reason", "meta_data"}),
    "pause": frozenset({"operation_id", "meta_data"}),
    "resume": frozenset({"operation_id", "meta_data"}),
    "complete": frozenset({"operation_id", "meta_data", "force"}),
    "fail": frozenset({"operation_id", "termination_reason", "meta_data", "force"}),
    "progress": frozenset({"operation_id", "fraction", "message"}),
    "pause_dispatcher": frozenset(),
    "resume_dispatcher": frozenset(),
}


class CommandError(ErrorAnswer):
    """A refused command: the status and code the REST API would answer."""


@dataclass(slots=True)
class Command:
    """A parsed command (its ``args`` only shape-checked: each command checks its own)."""

    command: str
    command_id: str | None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CommandResult:
    """The answer to one command (the body of a ``command_results`` message)."""

    command: str | None
    command_id: str | None
    status: int
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_body(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id, "command": self.command, "ok": self.ok,
            "status": self.status, "result": self.result, "error": self.error,
        }

    @classmethod
    def refused(cls, exc: CommandError, command: str | None, command_id: str | None
                ) -> CommandResult:
        error: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.details:
            error["details"] = exc.details
        return cls(command, command_id, exc.status, None, error)


def decode(payload: bytes, what: str = "command") -> dict[str, Any]:
    """A JSON object from a message, or CommandError (413 when too large, 400 when not JSON)."""
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandError(413, "request_too_large",
                           f"{what} is larger than {MAX_COMMAND_BYTES} bytes",
                           {"max_bytes": MAX_COMMAND_BYTES})
    try:
        data = _checks.parse_json(payload, what)
    except ValidationError:
        raise CommandError(400, "invalid_json", f"{what} is not a JSON document") from None
    if not isinstance(data, dict):
        raise CommandError(400, f"invalid_{what}", f"{what} must be a JSON object")
    return data


def _command_id(data: dict[str, Any]) -> str | None:
    """The command's id when it is a usable one (else None: the answer can still be sent)."""
    value = data.get("command_id")
    if isinstance(value, str) and 0 < len(value) <= MAX_COMMAND_ID and value.isprintable():
        return value
    return None


def parse(payload: bytes) -> Command:
    """Check a command's envelope; raises CommandError (with the id, if readable, attached)."""
    data = decode(payload)
    command_id = _command_id(data)
    try:
        if "command_id" in data and command_id is None:
            raise CommandError(400, "invalid_command", "command_id must be a string of 1 to "
                               f"{MAX_COMMAND_ID} printable characters", {"field": "command_id"})
        unknown = sorted(set(data) - _HEADER_KEYS - {"command", "command_id", "args"})
        if unknown:
            raise CommandError(400, "invalid_command", f"unknown key {unknown[0]!r} (known: "
                               "command, command_id, args and the header fields)",
                               {"field": unknown[0]})
        name = data.get("command")
        if name not in COMMANDS:
            raise CommandError(400, "unknown_command", "command must be one of "
                               + ", ".join(COMMANDS), {"field": "command",
                                                       "valid_commands": list(COMMANDS)})
        args = data.get("args", {})
        if not isinstance(args, dict):
            raise CommandError(400, "invalid_command", "args must be an object",
                               {"field": "args"})
        extra = sorted(set(args) - COMMANDS[name])
        if extra:
            raise CommandError(400, "invalid_command", f"{name} takes no argument {extra[0]!r} "
                               f"(it takes: {', '.join(sorted(COMMANDS[name])) or 'none'})",
                               {"field": f"args.{extra[0]}"})
        try:
            _checks.check_json_data(args, "args")
        except ValidationError as exc:
            raise CommandError.from_exc(exc, "invalid_command") from None
    except CommandError as exc:
        exc.command_id = command_id  # type: ignore[attr-defined]
        raise
    return Command(name, command_id, args)


def _not_found(operation_id: UUID) -> CommandError:
    """The answer for an unknown operation (the REST API's 404 operation_not_found)."""
    return CommandError.from_exc(OperationNotFound(operation_id), message="operation not found",
                                 details={"operation_id": str(operation_id)})


def _status(op: Operation) -> dict[str, Any]:
    """An operation as the REST API's OperationStatus."""
    return {"operation": op.to_dict(), "is_current_operation": op.state in _ACTIVE,
            "elapsed_seconds": elapsed_seconds(op)}


class CommandHandler:
    """Runs parsed commands on one dispatcher, each as its REST route would (no lock of ours:
    one worker thread calls it)."""

    def __init__(self, dispatcher: OperationDispatcher) -> None:
        self._dispatcher = dispatcher
        self._done: OrderedDict[str, CommandResult] = OrderedDict()

    def handle(self, command: Command) -> CommandResult:
        """The result of ``command``; a repeated ``command_id`` gets the first result again."""
        if command.command_id is not None:
            earlier = self._done.get(command.command_id)
            if earlier is not None and earlier.command == command.command:
                return earlier
        try:
            status, result = getattr(self, f"_{command.command}")(command.args)
            answer = CommandResult(command.command, command.command_id, status, result)
        except CommandError as exc:
            answer = CommandResult.refused(exc, command.command, command.command_id)
        except DispatcherError as exc:  # a JournalError (503), for one: the table's status
            answer = CommandResult.refused(CommandError.from_exc(exc), command.command,
                                           command.command_id)
        except Exception as exc:
            log.exception("MQTT command %s failed", command.command)
            answer = CommandResult.refused(
                CommandError(500, "internal_error", f"internal error: {type(exc).__name__}"),
                command.command, command.command_id,
            )
        if command.command_id is not None:
            self._done[command.command_id] = answer
            self._done.move_to_end(command.command_id)
            while len(self._done) > REMEMBERED_COMMANDS:
                self._done.popitem(last=False)
        return answer

    # ------------------------------------------------------------------ helpers
    def _operation_id(self, args: dict[str, Any]) -> UUID:
        if "operation_id" not in args:
            raise CommandError(400, "invalid_command", "args.operation_id is required",
                               {"field": "args.operation_id"})
        try:
            return _checks.to_uuid(args["operation_id"], "operation_id")
        except ValidationError as exc:
            raise CommandError.from_exc(exc, "invalid_operation_id") from None

    def _find(self, operation_id: UUID) -> Operation:
        op = self._dispatcher.get_operation(operation_id)
        if op is None:
            raise _not_found(operation_id)
        return op

    @staticmethod
    def _meta(args: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return _checks.meta_data(args.get("meta_data"), "meta_data") or None
        except ValidationError as exc:
            raise CommandError.from_exc(exc, "invalid_request_body") from None

    @staticmethod
    def _force(args: dict[str, Any]) -> bool:
        try:
            return _checks.boolean(args.get("force", False), "force", ("true", "false"))
        except ValidationError as exc:
            raise CommandError.from_exc(exc, "invalid_request_body") from None

    @staticmethod
    def _reason(args: dict[str, Any]) -> TerminationReason:
        value = args.get("termination_reason", TerminationReason.INTERNAL_ERROR.value)
        try:
            return TerminationReason(value)
        except (ValueError, TypeError):
            raise CommandError(
                400, "invalid_termination_reason", "invalid termination_reason",
                {"valid_termination_reasons": [r.value for r in TerminationReason]},
            ) from None

    # ------------------------------------------------------------------ the commands
    def _add(self, args: dict[str, Any]) -> tuple[int, Any]:
        items = args.get("operations")
        if not isinstance(items, list):
            raise CommandError(400, "invalid_operations",
                               "args.operations must be a list of operations")
        if not items:
            raise CommandError(400, "missing_operations", "operations list must not be empty")
        if len(items) > MAX_OPERATIONS_PER_ADD:
            raise CommandError(400, "too_many_operations", "operations list must not have more "
                               f"than {MAX_OPERATIONS_PER_ADD} items",
                               {"max_items": MAX_OPERATIONS_PER_ADD})
        resource_id = self._dispatcher.resource_id
        ops = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise CommandError(400, "invalid_operation", "each operation must be an object",
                                   {"index": index})
            extra = sorted(set(item) - ADDABLE_FIELDS)
            if extra or "payload" not in item:
                name = extra[0] if extra else "payload"
                rule = "is not a field an add may set" if extra else "is required"
                raise CommandError(400, "invalid_operation", f"{name} {rule}",
                                   {"index": index, "field": name})
            try:
                ops.append(Operation(resource_id=resource_id, **item))
            except ValidationError as exc:
                raise CommandError.from_exc(exc, "invalid_operation",
                                      details={"index": index, "field": exc.field}) from None
        try:
            stored = self._dispatcher.add_operations(ops)
        except (ValidationError, DependencyError, DuplicateOperation, ResourceMismatch) as exc:
            failed = getattr(exc, "operation_id", None)
            details = {}
            for index, op in enumerate(ops):
                if op.id == failed:
                    details["index"] = index
            raise CommandError.from_exc(exc, "operation_rejected", details=details) from None
        return 201, [_status(op) for op in stored]

    def _update(self, args: dict[str, Any]) -> tuple[int, Any]:
        operation_id = self._operation_id(args)
        updates = args.get("updates")
        if not isinstance(updates, dict) or not updates:
            raise CommandError(400, "invalid_updates", "args.updates must be a non-empty object",
                               {"field": "updates"})
        extra = sorted(set(updates) - UPDATABLE_FIELDS)
        if extra:
            raise CommandError(400, "invalid_updates", f"{extra[0]} cannot be updated",
                               {"field": extra[0]})
        try:
            op = self._dispatcher.update_operation(operation_id, updates)
        except OperationNotUpdatable as exc:
            raise CommandError.from_exc(exc, "operation_update_denied") from None
        except (ValidationError, DependencyError) as exc:
            raise CommandError.from_exc(exc, "invalid_updates",
                                  details={"field": getattr(exc, "field", "dependencies")}) from None
        if op is None:  # update_operation's None: the operation is unknown
            raise _not_found(operation_id)
        return 200, _status(op)

    def _cancel(self, args: dict[str, Any]) -> tuple[int, Any]:
        operation_id = self._operation_id(args)
        reason, meta = self._reason(args), self._meta(args)
        self._find(operation_id)
        op = self._dispatcher.cancel_operation(operation_id, reason, meta)
        if op is None:
            raise CommandError(409, "operation_cancellation_denied",
                               "operation cancellation denied")
        return 200, _status(op)

    def _pause(self, args: dict[str, Any]) -> tuple[int, Any]:
        return self._pause_or_resume(args, pause=True)

    def _resume(self, args: dict[str, Any]) -> tuple[int, Any]:
        return self._pause_or_resume(args, pause=False)

    def _pause_or_resume(self, args: dict[str, Any], pause: bool) -> tuple[int, Any]:
        operation_id = self._operation_id(args)
        meta = self._meta(args)
        needed, verb = (
            (ExecutionState.RUNNING, "pause") if pause else (ExecutionState.PAUSED, "resume")
        )
        wrong = (("operation_not_running", "operation is not running") if pause
                 else ("operation_not_paused", "operation is not paused"))
        op = self._find(operation_id)
        if op.state is not needed:
            raise CommandError(409, *wrong, {"state": op.state.value})
        action = self._dispatcher.pause_operation if pause else self._dispatcher.resume_operation
        try:
            done = action(operation_id, meta_data=meta)
        except InvalidTransition as exc:
            raise CommandError.from_exc(exc, wrong[0], wrong[1], {"state": exc.state}) from None
        except OperationNotCurrent as exc:
            raise CommandError.from_exc(exc, f"operation_{verb}_failed") from None
        if not done:
            raise CommandError(409, f"operation_{verb}_denied", f"operation {verb} denied")
        return 200, _status(self._find(operation_id))

    def _complete(self, args: dict[str, Any]) -> tuple[int, Any]:
        return self._finish(args, fail=False)

    def _fail(self, args: dict[str, Any]) -> tuple[int, Any]:
        return self._finish(args, fail=True)

    def _finish(self, args: dict[str, Any], fail: bool) -> tuple[int, Any]:
        operation_id = self._operation_id(args)
        meta, force = self._meta(args), self._force(args)
        reason = self._reason(args) if fail else None
        op = self._find(operation_id)
        if op.state not in _ACTIVE:
            raise CommandError(409, "operation_not_running", "operation is not running",
                               {"state": op.state.value})
        try:
            if reason is not None:
                done = self._dispatcher.fail_operation(operation_id, reason, meta, force=force)
            else:
                done = self._dispatcher.complete_operation(operation_id, meta, force=force)
        except RunByExecutor as exc:
            raise CommandError.from_exc(exc, details={"executor": exc.executor}) from None
        except OperationNotCurrent as exc:
            raise CommandError.from_exc(exc, "operation_not_running",
                                  "operation is not running") from None
        return 200, _status(done)

    def _progress(self, args: dict[str, Any]) -> tuple[int, Any]:
        operation_id = self._operation_id(args)
        try:
            op = self._dispatcher.report_progress(
                operation_id, args.get("fraction"), args.get("message")
            )
        except OperationNotFound:
            raise _not_found(operation_id) from None
        except OperationNotCurrent as exc:
            current = self._dispatcher.get_operation(operation_id)
            state = None if current is None else current.state.value
            raise CommandError.from_exc(exc, "operation_not_running", details={"state": state}) from None
        except ValidationError as exc:
            raise CommandError.from_exc(exc, "invalid_progress") from None
        return 200, _status(op)

    def _pause_dispatcher(self, args: dict[str, Any]) -> tuple[int, Any]:
        if not self._dispatcher.pause_dispatcher_runtime():
            raise CommandError(409, "dispatcher_already_paused",
                               "operation dispatcher is already paused")
        return 200, self._dispatcher.get_state().to_dict()

    def _resume_dispatcher(self, args: dict[str, Any]) -> tuple[int, Any]:
        if not self._dispatcher.resume_dispatcher_runtime():
            raise CommandError(409, "dispatcher_not_paused", "operation dispatcher is not paused")
        return 200, self._dispatcher.get_state().to_dict()

    # ------------------------------------------------------------------ responses
    def respond(self, data: dict[str, Any]) -> CommandResult:
        """Answer an approval request from a ``responses`` message with ``decide()``.

        ``{"request_id", "accepted": true|false, "reasoning"?, "data"?, "answered_by"?}``;
        the decision's data records ``answered_by`` and ``"channel": "mqtt"``.
        """
        command_id = _command_id(data)
        try:
            unknown = sorted(set(data) - _HEADER_KEYS - {
                "request_id", "accepted", "reasoning", "data", "answered_by", "command_id"})
            if unknown:
                raise CommandError(400, "invalid_response", f"unknown key {unknown[0]!r}",
                                   {"field": unknown[0]})
            request_id = data.get("request_id")
            try:
                key = _checks.to_uuid(request_id, "request_id")
            except ValidationError as exc:
                raise CommandError.from_exc(exc, "invalid_response") from None
            accepted = data.get("accepted")
            if type(accepted) is not bool:  # only a real true approves (design 2a)
                raise CommandError(400, "invalid_response", "accepted must be true or false",
                                   {"field": "accepted"})
            by = data.get("answered_by")
            if by is not None and (not isinstance(by, str) or len(by) > MAX_COMMAND_ID):
                raise CommandError(400, "invalid_response", "answered_by must be a string of "
                                   f"at most {MAX_COMMAND_ID} characters",
                                   {"field": "answered_by"})
            reasoning = data.get("reasoning")
            try:
                extra = _checks.meta_data(data.get("data"), "data") or {}
                if reasoning is not None:
                    _checks.check_json_data(reasoning, "reasoning")
            except ValidationError as exc:
                raise CommandError.from_exc(exc, "invalid_response") from None
            decision_data = {**extra, "channel": "mqtt", "answered_by": by}
            try:
                self._dispatcher.decide(key, accepted, reasoning=reasoning, data=decision_data)
            except UnknownRequest as exc:
                raise CommandError.from_exc(exc, details={"request_id": str(key)}) from None
            except RequestClosed as exc:
                raise CommandError.from_exc(exc, details={"request_id": str(key),
                                                    "status": exc.status}) from None
            except ValidationError as exc:
                raise CommandError.from_exc(exc, "invalid_response") from None
        except CommandError as exc:
            return CommandResult.refused(exc, "respond", command_id)
        return CommandResult("respond", command_id, 200, {
            "request_id": str(key), "accepted": accepted, "reasoning": reasoning,
        })


#: (what to run, where its result goes)
_Job = tuple[Callable[[], CommandResult], Callable[[CommandResult], None]]


class CommandWorker:
    """One named thread that runs commands in arrival order from a bounded queue."""

    def __init__(self, name: str, size: int = COMMAND_QUEUE_SIZE) -> None:
        self._name = name
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=size)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._stopping.clear()  # a stop() that timed out: its thread goes on as the one worker
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, run: Callable[[], CommandResult],
               answer: Callable[[CommandResult], None]) -> bool:
        """Queue a job; False (and nothing queued) when the queue is full."""
        try:
            self._jobs.put_nowait((run, answer))
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if self._stopping.is_set():
                return  # what is still queued is not run: nothing of it was applied
            if job is None:
                continue  # a stop's wake-up that a start() overtook
            run, answer = job
            try:
                answer(run())
            except Exception:  # the answer could not be sent: the next command still runs
                log.exception("MQTT command worker: a job failed")

    def stop(self, timeout: float | None = None) -> None:
        """End the thread after the command it runs (waits ``timeout`` for one that is itself
        waiting, e.g. for an operator's approval); queued commands are dropped, not run, so
        the central system sees no result and may send them again, same ``command_id``."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        try:
            self._jobs.put_nowait(None)  # wakes an idle worker
        except queue.Full:
            pass  # a busy worker sees _stopping after its job
        thread.join(timeout)
        if thread.is_alive():
            return  # still finishing its job: it sees _stopping next and ends (or start() keeps it)
        self._thread = None
        while True:  # forget what was dropped, so a restart begins empty
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break


__all__ = [
    "COMMANDS",
    "COMMAND_QUEUE_SIZE",
    "Command",
    "CommandError",
    "CommandHandler",
    "CommandResult",
    "CommandWorker",
    "MAX_COMMAND_BYTES",
    "REMEMBERED_COMMANDS",
    "decode",
    "parse",
]
