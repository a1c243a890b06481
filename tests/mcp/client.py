"""Drives weir's /mcp with the official MCP Python SDK, for tests/mcp.rs.

    python client.py '{"url": URL, "token": T, "mode": "legacy"|"2026-07-28",
                       "calls": [[TOOL, ARGS, _META?], ...]}'
    python client.py '{"command": [WEIR, "mcp", "--stdio", ...], "mode": ...,
                       "calls": [...]}'

Prints one JSON object: the negotiated protocol version, the tools listed
and each call's result (or the exception it raised).
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client


def dump(value):
    return value.model_dump(by_alias=True, exclude_none=True, mode="json")


async def session(client, spec, out):
    async with client:
        out["protocol"] = client.protocol_version
        out["tools"] = [dump(t) for t in (await client.list_tools()).tools]
        for name, arguments, *meta in spec["calls"]:
            try:
                result = await client.call_tool(name, arguments, meta=meta[0] if meta else None)
                out["calls"].append(dump(result))
            except Exception as e:  # a protocol error: the test reads it
                out["calls"].append({"exception": f"{type(e).__name__}: {e}"})


async def main():
    spec = json.loads(sys.argv[1])
    out = {"tools": [], "calls": []}
    if "command" in spec:
        server = StdioServerParameters(command=spec["command"][0], args=spec["command"][1:])
        await session(Client(server, mode=spec["mode"]), spec, out)
    else:
        headers = {"Authorization": f"Bearer {spec['token']}"}
        async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
            transport = streamable_http_client(spec["url"], http_client=http)
            await session(Client(transport, mode=spec["mode"]), spec, out)
    print(json.dumps(out))


asyncio.run(main())
