"""The prompts: the original's introduction, and a walk through triaging the cell."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp.server.mcpserver import MCPServer

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher

INTRODUCTION = """\
You are connected to an operation dispatcher: it queues, dispatches and supervises the \
operations (jobs) of one physical machine, "{resource_id}", one operation at a time.

How it works:
- Operations are added (dispatcher_add_operation) and may be updated while queued \
(dispatcher_update_operation). The queue sorts itself (by default: earliest release date, \
then highest priority, then oldest); an operation waits for its release date, its release \
conditions (live signals such as plc.ready), the operations it depends on, and a free machine.
- Before starting, cancelling, pausing or resuming, the dispatcher asks the business logic: \
a request event that is approved, denied, or left PENDING for an operator (or you) to answer \
with dispatcher_approve_request or dispatcher_deny_request.
- The machine (or the logic driving it) reports back when an operation completes or fails, and \
may report progress; a job done by hand is finished with dispatcher_complete_operation or \
dispatcher_fail_operation (one an executor bridge runs only with force=true).
- The dispatcher itself can be paused (no new starts; the current operation runs on) and resumed.

Guidance:
- Read before you act: dispatcher_get_state, dispatcher_list_operations, and \
dispatcher_explain_operation for why an operation waits.
- After pausing or resuming the dispatcher, check dispatcher_get_state.
- For what happened to one operation, read dispatcher://operations/session/{{operation_id}}/events.
- When you approve or deny, give a reasoning a person can audit: it is recorded with your \
token's name.
"""

TRIAGE = """\
Triage the cell "{resource_id}" and tell the operator what it is doing and why, in a few lines.
Right now: {running}, {paused}, {queue_size} operation(s) queued, {pending} request(s) waiting \
for an answer.

1. dispatcher_get_state: is the dispatcher running and not paused? Which operation is current, \
and for how long?
2. dispatcher_list_bridges and dispatcher_list_signals: is every bridge online, is any signal \
stale?
3. dispatcher_list_operations (state QUEUED): for the first few, dispatcher_explain_operation. \
Group them by reason (release condition, dependency, release date, cooldown after a denial, \
awaiting approval, executor offline, dispatcher paused, machine busy) and quote the sentences.
4. dispatcher_list_requests: for each request, what it asks (start, cancel, pause, resume of \
which operation) and since when. Do not approve or deny unless the operator asked you to; if \
you do, give the reason.
5. End with what would unblock the cell, most important first, and who can do it.
"""


class DispatcherPrompts:
    """The prompts of one dispatcher; :meth:`register` adds them to a server."""

    def __init__(self, dispatcher: OperationDispatcher) -> None:
        self._dispatcher = dispatcher

    def register(self, server: MCPServer) -> None:
        server.prompt(name="dispatcher_introduction_prompt")(self.introduction)
        server.prompt(name="dispatcher_triage_prompt")(self.triage)

    def introduction(self) -> str:
        """What the dispatcher is, how it works, and how an agent should use it."""
        return INTRODUCTION.format(resource_id=self._dispatcher.resource_id)

    def triage(self) -> str:
        """Walk through the cell: state, bridges and signals, why operations wait, open requests."""
        state = self._dispatcher.get_state()
        return TRIAGE.format(
            resource_id=state.resource_id,
            running="running" if state.is_running else "NOT running",
            paused="paused" if state.is_paused else "not paused",
            queue_size=state.queue_size,
            pending=len(self._dispatcher.pending_requests()),
        )


__all__ = ["INTRODUCTION", "TRIAGE", "DispatcherPrompts"]
