"""``create_mcp_server``: one MCPServer with every tool, resource and prompt of a dispatcher."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import MCPServer

from .. import __version__
from .prompts import DispatcherPrompts
from .resources import DispatcherResources
from .tools import DispatcherTools

if TYPE_CHECKING:
    from ..dispatcher import OperationDispatcher

INSTRUCTIONS = (
    "Reads, explains and steers the operation dispatcher of one machine. Start with "
    "dispatcher_get_state and dispatcher_list_operations; dispatcher_explain_operation says why "
    "an operation waits; dispatcher_list_requests shows what waits for an approval. The prompt "
    "dispatcher_triage_prompt walks through it all."
)


def create_mcp_server(
    dispatcher: OperationDispatcher,
    *,
    bridges: Iterable[Any] | Mapping[str, Any] | None = None,
    name: str | None = None,
) -> MCPServer:
    """An MCP server for ``dispatcher`` (and its hardware ``bridges``, for their health).

    Serve it with ``server.run("stdio")``, in-process with ``mcp.Client(server)``, or over
    streamable HTTP with :class:`~.http.McpHttpServer` (one server per transport).
    """
    by_name: dict[str, Any] = {}
    if isinstance(bridges, Mapping):
        by_name.update(bridges)
    elif bridges is not None:
        listed: Iterable[Any] = bridges
        by_name.update((bridge.name, bridge) for bridge in listed)
    # The SDK's constructor calls logging.basicConfig (INFO, to stderr): a library must not
    # configure its host program's logging, so a root logger without handlers keeps none.
    root = logging.getLogger()
    level, placeholder = root.level, logging.NullHandler()
    if not root.handlers:
        root.addHandler(placeholder)
    try:
        server: MCPServer = MCPServer(
            name or f"operation-dispatcher[{dispatcher.resource_id}]",
            instructions=INSTRUCTIONS, version=__version__,
        )
    finally:
        root.removeHandler(placeholder)
        root.setLevel(level)
    DispatcherTools(dispatcher, by_name).register(server)
    DispatcherResources(dispatcher).register(server)
    DispatcherPrompts(dispatcher).register(server)
    return server


__all__ = ["INSTRUCTIONS", "create_mcp_server"]
