"""Drives weir's /mcp with the official MCP Python SDK, for tests/mcp.rs.

    python client.py '{"url": URL, "token": T, "mode": "legacy"|"2026-07-28",
                       "calls": [[TOOL, ARGS], ...]}'

Prints one JSON object: the negotiated protocol version, the tools listed
and each call's result (or the exception it raised).
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def dump(value):
    return value.model_dump(by_alias=True, exclude_none=True, mode="json")


async def main():
    spec = json.loads(sys.argv[1])
    headers = {"Authorization": f"Bearer {spec['token']}"}
    out = {"tools": [], "calls": []}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        transport = streamable_http_client(spec["url"], http_client=http)
        async with Client(transport, mode=spec["mode"]) as client:
            out["protocol"] = client.protocol_version
            out["tools"] = [dump(t) for t in (await client.list_tools()).tools]
            for name, arguments in spec["calls"]:
                try:
                    out["calls"].append(dump(await client.call_tool(name, arguments)))
                except Exception as e:  # a protocol error: the test reads it
                    out["calls"].append({"exception": f"{type(e).__name__}: {e}"})
    print(json.dumps(out))


asyncio.run(main())
