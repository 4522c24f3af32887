"""Who calls a tool, and whether their token may: the REST API's scopes, per tool.

Over streamable HTTP the bearer-token gate (:mod:`.http`) puts the caller (token name and
scopes) into the ASGI scope of every request; a tool reads it back from its request context.
Over stdio, in-process, or HTTP served without a token, the caller is :data:`LOCAL`: the person
who started the process, with every scope (as the REST API without a token).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError

from ..config import SCOPES

#: The key of the :class:`Caller` in the ASGI scope of an authenticated request.
CALLER_KEY = "operation_dispatcher.mcp.caller"

#: The scope each tool needs: the scope of the matching REST route (``http/auth.py``).
TOOL_SCOPES: Mapping[str, str] = {
    "dispatcher_get_state": "read",
    "dispatcher_get_history": "read",
    "dispatcher_list_operations": "read",
    "dispatcher_get_operation": "read",
    "dispatcher_explain_operation": "read",
    "dispatcher_list_requests": "read",
    "dispatcher_list_signals": "read",
    "dispatcher_list_bridges": "read",
    "dispatcher_add_operation": "submit",
    "dispatcher_update_operation": "submit",
    "dispatcher_cancel_operation": "operate",
    "dispatcher_pause_operation": "operate",
    "dispatcher_resume_operation": "operate",
    "dispatcher_report_progress": "operate",
    "dispatcher_complete_operation": "operate",
    "dispatcher_fail_operation": "operate",
    "dispatcher_approve_request": "operate",
    "dispatcher_deny_request": "operate",
    "dispatcher_pause_runtime": "admin",
    "dispatcher_resume_runtime": "admin",
}
#: The scope of a tool missing from :data:`TOOL_SCOPES` (the strongest: fail safe).
UNLISTED_SCOPE = "admin"
#: Every MCP request over HTTP needs this scope (listing and reading are reads).
GATE_SCOPE = "read"


@dataclass(frozen=True)
class Caller:
    """The token behind a request: ``name`` is recorded with an approval ("mcp" when the token
    has no name, or there is no token)."""

    name: str
    scopes: frozenset[str]


#: The caller over stdio and in-process: whoever started the process holds every scope.
LOCAL = Caller("mcp", frozenset(SCOPES))


def caller_of(ctx: Context) -> Caller:
    """The caller of the request ``ctx`` belongs to (:data:`LOCAL` without a token gate)."""
    try:
        request = ctx.request_context.request
    except ValueError:  # no request: a direct call of the tool function
        return LOCAL
    scope = getattr(request, "scope", None)
    found = scope.get(CALLER_KEY) if isinstance(scope, Mapping) else None
    return found if isinstance(found, Caller) else LOCAL


def require(ctx: Context, tool: str) -> Caller:
    """The caller, if their token holds the scope ``tool`` needs; else a ToolError saying which."""
    caller = caller_of(ctx)
    scope = TOOL_SCOPES.get(tool, UNLISTED_SCOPE)
    if scope not in caller.scopes:
        raise ToolError(
            f"this token lacks the scope {scope!r} that the tool {tool} needs "
            f"(it has: {', '.join(sorted(caller.scopes))}); ask for a token with {scope!r}"
        )
    return caller


__all__ = ["CALLER_KEY", "GATE_SCOPE", "LOCAL", "TOOL_SCOPES", "UNLISTED_SCOPE", "Caller",
           "caller_of", "require"]
