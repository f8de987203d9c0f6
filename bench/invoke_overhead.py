"""Invocation overhead: ``manager.call_tool`` versus a raw SDK ``ClientSession.call_tool``.

Both talk to the same in-memory SDK server in one process; the figure printed is the ratio of
their median latencies. Run: ``.venv/bin/python bench/invoke_overhead.py [calls] [--metrics]``
(``--metrics``: with a Prometheus ``FleetCollector`` attached to the manager; ``--state URL``:
with the event history written to that store, e.g. ``sqlite:///tmp/bench.db``).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import trio
from mcp.client.session import ClientSession
from mcp.server.mcpserver import MCPServer
from mcp.shared.memory import create_client_server_memory_streams

import trio_mcp
from trio_mcp.testing import memory_server


async def time_calls(call: object, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await call()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return samples


async def main(n: int, metrics: bool, state: str | None = None) -> None:
    server = MCPServer("bench")

    @server.tool()
    async def echo(text: str) -> str:
        return text

    lowlevel = server._lowlevel_server
    args = {"text": "hello"}

    stack = contextlib.AsyncExitStack()
    async with stack, create_client_server_memory_streams() as (client_streams, server_streams):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: lowlevel.run(
                    server_streams[0], server_streams[1], lowlevel.create_initialization_options()
                )
            )
            async with ClientSession(*client_streams) as session:
                await session.discover()
                policy = trio_mcp.ServerPolicy(health_interval=3600)
                async with trio_mcp.open_manager(
                    [memory_server(server, name="bench", policy=policy)]
                ) as manager:
                    await manager.acquire("bench")
                    if state is not None:
                        from trio_mcp.store import EventWriter, open_store

                        store = await stack.enter_async_context(open_store(state))
                        writer = EventWriter(store, manager.stream, replica="bench", retention=None)
                        await nursery.start(writer.run)
                    if metrics:
                        from prometheus_client import CollectorRegistry

                        from trio_mcp.metrics import FleetCollector

                        CollectorRegistry().register(FleetCollector(manager))
                    raw_call = lambda: session.call_tool("echo", args)  # noqa: E731
                    managed_call = lambda: manager.call_tool("echo", args)  # noqa: E731
                    await time_calls(raw_call, 200)  # warm up both paths
                    await time_calls(managed_call, 200)
                    raw: list[float] = []
                    managed: list[float] = []
                    # Interleave rounds so drift on the machine hits both paths alike.
                    for _ in range(10):
                        raw += await time_calls(raw_call, n // 10)
                        managed += await time_calls(managed_call, n // 10)
            await client_streams[1].aclose()
            nursery.cancel_scope.cancel()

    raw_median = statistics.median(raw)
    managed_median = statistics.median(managed)
    extras = [" (metrics collector attached)"] if metrics else []
    extras += [f" (event history written to {state})"] if state else []
    print(f"calls per path:            {len(raw)}{''.join(extras)}")
    print(f"raw ClientSession.call_tool median: {raw_median * 1e6:8.1f} us")
    print(f"manager.call_tool median:           {managed_median * 1e6:8.1f} us")
    print(f"ratio (manager / raw):              {managed_median / raw_median:8.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("calls", nargs="?", type=int, default=20000, help="calls per path (default 20000)")
    parser.add_argument("--metrics", action="store_true", help="attach a Prometheus FleetCollector")
    parser.add_argument("--state", metavar="URL", help="write the event history to this store")
    args = parser.parse_args()
    trio.run(main, args.calls, args.metrics, args.state)
