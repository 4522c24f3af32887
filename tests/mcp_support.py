"""Helpers for the MCP tests: a client session run to completion with anyio, and checks of a
tool's answer (structured content valid against the tool's output schema)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import jsonschema
from mcp import Client

Body = Callable[["Session"], Awaitable[Any]]


class Session:
    """An open MCP client with the tools' output schemas at hand."""

    def __init__(self, client: Client, schemas: dict[str, dict[str, Any] | None]) -> None:
        self.client = client
        self.schemas = schemas

    async def ok(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call ``tool``; assert it succeeded and its result matches its output schema."""
        result = await self.client.call_tool(tool, arguments)
        assert not result.is_error, (tool, result.content)
        schema = self.schemas[tool]
        assert schema is not None, f"{tool} has no output schema"
        jsonschema.validate(result.structured_content, schema)
        text = result.content[0].text  # the same data as text, for clients without structure
        assert json.loads(text) == result.structured_content
        return dict(result.structured_content or {})

    async def error(self, tool: str, **arguments: Any) -> str:
        """Call ``tool``; assert it failed; its message (what an agent reads)."""
        result = await self.client.call_tool(tool, arguments)
        assert result.is_error, (tool, arguments, result.structured_content)
        return str(result.content[0].text)

    async def read(self, uri: str) -> Any:
        """Read a JSON resource."""
        result = await self.client.read_resource(uri)
        (content,) = result.contents
        assert content.mime_type == "application/json"
        return json.loads(content.text)


def run(target: Any, body: Body, mode: str = "auto", **client_options: Any) -> Any:
    """Connect to ``target`` (a server, a URL, a transport), run ``body``, disconnect."""

    async def main() -> Any:
        async with Client(target, mode=mode, **client_options) as client:
            tools = await client.list_tools()
            schemas = {tool.name: tool.output_schema for tool in tools.tools}
            return await body(Session(client, schemas))

    return anyio.run(main)
