import json

import pytest

from trio_mcp import (
    ConfigError,
    HttpTransport,
    MemoryTransport,
    ServerConfig,
    ServerPolicy,
    StdioTransport,
    parse_mcp_servers,
)


def test_claude_desktop_document() -> None:
    doc = {
        "mcpServers": {
            "files": {"command": "npx", "args": ["-y", "server-fs", "/tmp"], "env": {"TOKEN": "s3cret"}},
            "remote": {
                "url": "https://example.com/mcp",
                "headers": {"Authorization": "Bearer x"},
                "type": "http",
            },
            "off": {"command": "nope", "disabled": True},
        }
    }
    configs = parse_mcp_servers(json.dumps(doc))
    assert [c.name for c in configs] == ["files", "remote"]
    files, remote = configs
    assert files.transport == StdioTransport(
        command="npx", args=("-y", "server-fs", "/tmp"), env={"TOKEN": "s3cret"}
    )
    assert isinstance(remote.transport, HttpTransport)
    assert remote.transport.headers == {"Authorization": "Bearer x"}


def test_vscode_servers_document_and_policy_keys() -> None:
    doc = {
        "servers": {
            "a": {
                "type": "stdio",
                "command": "python3",
                "handshakeTimeout": 3,
                "healthInterval": 7,
                "protocol": "legacy",
                "idempotentTools": ["lookup"],
                "trusted": True,
            }
        }
    }
    (config,) = parse_mcp_servers(doc)
    assert config.policy.handshake_timeout == 3
    assert config.policy.health_interval == 7
    assert config.policy.protocol == "legacy"
    assert config.idempotent_tools == frozenset({"lookup"})
    assert config.trusted


@pytest.mark.parametrize(
    "entry, key",
    [
        ({"command": 5}, "mcpServers.x.command"),
        ({"command": "a", "args": "not-a-list"}, "mcpServers.x.args"),
        ({"command": "a", "args": ["ok", 3]}, "mcpServers.x.args[1]"),
        ({"command": "a", "env": {"K": 1}}, "mcpServers.x.env.K"),
        ({"url": "ftp://nope"}, "mcpServers.x.url"),
        ({"url": "http://h/mcp", "headers": {"A": 1}}, "mcpServers.x.headers.A"),
        ({"url": "http://h/mcp", "type": "sse"}, "mcpServers.x.type"),
        ({"url": "http://h/mcp", "type": "carrier-pigeon"}, "mcpServers.x.type"),
        ({"command": "a", "url": "http://h/mcp"}, "mcpServers.x"),
        ({}, "mcpServers.x"),
        ({"command": "a", "healthInterval": -1}, "mcpServers.x.healthInterval"),
        ({"command": "a", "protocol": "future"}, "mcpServers.x.protocol"),
        ({"command": "a", "idempotentTools": "lookup"}, "mcpServers.x.idempotentTools"),
        ("just a string", "mcpServers.x"),
    ],
)
def test_bad_entries_name_the_key(entry: object, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"mcpServers": {"x": entry}})
    assert info.value.key == key
    assert key in str(info.value)


@pytest.mark.parametrize("doc", ["{not json", "[]", '{"other": {}}', '{"mcpServers": []}'])
def test_bad_documents(doc: str) -> None:
    with pytest.raises(ConfigError):
        parse_mcp_servers(doc)


def test_config_objects_are_frozen_and_validated() -> None:
    config = ServerConfig(name="a", transport=StdioTransport(command="x"))
    with pytest.raises(AttributeError):
        config.name = "b"  # type: ignore[misc]
    with pytest.raises(ConfigError, match="name"):
        ServerConfig(name="bad name!", transport=StdioTransport(command="x"))
    with pytest.raises(ConfigError, match=r"policy\.unreachable_threshold"):
        ServerPolicy(unreachable_threshold=0)
    with pytest.raises(ConfigError, match=r"policy\.handshake_timeout"):
        ServerPolicy(handshake_timeout=0)
    with pytest.raises(ConfigError, match="server"):
        MemoryTransport(server=object())
    assert ServerPolicy(handshake_max_age=None).handshake_max_age is None


def test_reprs_hide_secret_values() -> None:
    stdio = StdioTransport(command="srv", env={"API_TOKEN": "s3cret-env"})
    http = HttpTransport(url="https://h/mcp", headers={"Authorization": "Bearer s3cret-header"})
    for obj in (stdio, http, ServerConfig(name="a", transport=http), ServerConfig(name="b", transport=stdio)):
        assert "s3cret" not in repr(obj)
