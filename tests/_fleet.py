"""Shared helpers for the virtual-time tests."""

from __future__ import annotations

from trio_mcp import BackoffPolicy, ServerPolicy

# Exact, jitter-free schedules keep virtual-time assertions readable: no jitter in the backoff,
# the first probe exactly one health_interval after a connection opens.
NO_JITTER = BackoffPolicy(initial=1.0, multiplier=2.0, cap=8.0, jitter=0.0)


def policy(**overrides: object) -> ServerPolicy:
    base: dict[str, object] = {
        "health_interval": 10.0,
        "probe_timeout": 2.0,
        "handshake_timeout": 5.0,
        "call_timeout": 5.0,
        "backoff": NO_JITTER,
        "probe_spread": 0.0,
    }
    base.update(overrides)
    return ServerPolicy(**base)  # type: ignore[arg-type]
