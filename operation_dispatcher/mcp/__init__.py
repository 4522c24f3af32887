"""The MCP server for LLM agents (extra ``mcp``): read the cell, explain it, act as its approver.

Built on the official SDK (``mcp>=2.3,<3``, :class:`mcp.server.mcpserver.MCPServer`); the core
never imports it (it does not install everywhere the core runs: ``cffi`` has no armv7l wheel).

    from operation_dispatcher import OperationDispatcher
    from operation_dispatcher.mcp import McpHttpServer, create_mcp_server

    dispatcher = OperationDispatcher("robot-1")
    dispatcher.start()
    server = create_mcp_server(dispatcher)
    server.run("stdio")                              # a desktop agent, or:
    with McpHttpServer(create_mcp_server(dispatcher), port=8081):
        ...                                          # http://127.0.0.1:8081/mcp

``operation-dispatcher mcp --config FILE`` serves stdio; ``operation-dispatcher serve`` serves
streamable HTTP beside the REST API when ``[mcp] port`` (or ``--mcp-port``) is set.
"""

from __future__ import annotations

try:
    import mcp.server.mcpserver  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a bare venv
    raise ImportError(
        f"operation_dispatcher.mcp needs the 'mcp' extra ({exc.name} is missing): "
        "pip install 'operation-dispatcher[mcp]'"
    ) from exc

from .access import TOOL_SCOPES, Caller
from .http import McpHttpServer
from .server import create_mcp_server
from .tools import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, MAX_LISTED

__all__ = [
    "DEFAULT_HISTORY_LIMIT",
    "MAX_HISTORY_LIMIT",
    "MAX_LISTED",
    "TOOL_SCOPES",
    "Caller",
    "McpHttpServer",
    "create_mcp_server",
]
