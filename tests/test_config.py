import json
from typing import Any

import pytest

import trio_mcp
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
    assert ServerPolicy(park_after=None).park_after is None
    assert ServerPolicy().park_after == 60.0


def test_reprs_hide_secret_values() -> None:
    stdio = StdioTransport(command="srv", env={"API_TOKEN": "s3cret-env"})
    http = HttpTransport(url="https://h/mcp", headers={"Authorization": "Bearer s3cret-header"})
    for obj in (stdio, http, ServerConfig(name="a", transport=http), ServerConfig(name="b", transport=stdio)):
        assert "s3cret" not in repr(obj)


@pytest.mark.parametrize(
    ("make", "key", "message"),
    [
        (lambda: ServerPolicy(call_timeout=None), "policy.call_timeout", "must be a number"),  # type: ignore[arg-type]
        (lambda: ServerPolicy(probe_timeout="5"), "policy.probe_timeout", "must be a number, got '5'"),  # type: ignore[arg-type]
        (lambda: ServerPolicy(health_interval=True), "policy.health_interval", "must be a number, got True"),
        (lambda: ServerPolicy(freshness_window=float("nan")), "policy.freshness_window", "must be a number"),
        (lambda: ServerPolicy(handshake_max_age=-1), "policy.handshake_max_age", "must be > 0, got -1"),
        (lambda: ServerPolicy(park_after=0), "policy.park_after", "must be > 0, got 0"),
        (lambda: ServerPolicy(park_after="1m"), "policy.park_after", "must be a number, got '1m'"),  # type: ignore[arg-type]
        (lambda: ServerPolicy(progress_hard_max=0), "policy.progress_hard_max", "must be > 0, got 0"),
        (lambda: ServerPolicy(max_concurrency=0), "policy.max_concurrency", "must be an integer >= 1"),
        (lambda: ServerPolicy(max_concurrency=True), "policy.max_concurrency", "must be an integer >= 1"),
        (lambda: ServerPolicy(unreachable_threshold=2.5), "policy.unreachable_threshold", "integer >= 1"),  # type: ignore[arg-type]
        (lambda: ServerPolicy(protocol="2024"), "policy.protocol", "got '2024'"),  # type: ignore[arg-type]
        (lambda: ServerPolicy(probe="icmp"), "policy.probe", "got 'icmp'"),  # type: ignore[arg-type]
        (lambda: ServerPolicy(backoff={"initial": 1}), "policy.backoff", "must be a BackoffPolicy"),  # type: ignore[arg-type]
        (lambda: StdioTransport(command=""), "command", "must be a non-empty string"),
        (lambda: StdioTransport(command="x", args="-v"), "args", "must be a list of strings"),  # type: ignore[arg-type]
        (lambda: StdioTransport(command="x", args=("-v", 1)), "args", "must be a list of strings"),  # type: ignore[arg-type]
        (lambda: StdioTransport(command="x", env={"K": 1}), "env", "must map strings to strings"),  # type: ignore[dict-item]
        (lambda: StdioTransport(command="x", env=["K"]), "env", "must map strings to strings"),  # type: ignore[arg-type]
        (lambda: StdioTransport(command="x", cwd=3), "cwd", "must be a string"),  # type: ignore[arg-type]
        (lambda: HttpTransport(url="http://h/mcp", headers={"A": 1}), "headers", "strings to strings"),  # type: ignore[dict-item]
        (lambda: HttpTransport(url="//no-scheme"), "url", "must be an http:// or https:// URL"),
        (lambda: ServerConfig(name="a", transport="stdio"), "transport", "must be a StdioTransport"),  # type: ignore[arg-type]
        (
            lambda: ServerConfig(name="a", transport=StdioTransport(command="x"), policy={}),  # type: ignore[arg-type]
            "policy",
            "must be a ServerPolicy",
        ),
        (
            lambda: ServerConfig(name="a", transport=StdioTransport(command="x"), idempotent_tools="charge"),  # type: ignore[arg-type]
            "idempotent_tools",
            "must be a collection of tool names",
        ),
    ],
)
def test_config_objects_name_the_bad_field(make: Any, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert info.value.key == key
    assert message in str(info.value)


def test_config_objects_normalize_their_collections() -> None:
    stdio = StdioTransport(command="x", args=["-v"], env={"K": "v"})  # type: ignore[arg-type]
    assert stdio.args == ("-v",)
    config = ServerConfig(name="a", transport=stdio, idempotent_tools={"lookup"})  # type: ignore[arg-type]
    assert config.idempotent_tools == frozenset({"lookup"})
    assert ServerPolicy(handshake_max_age=None, progress_hard_max=1).handshake_max_age is None


@pytest.mark.parametrize(
    ("entry", "key", "message"),
    [
        ({"command": "a", "type": 5}, "mcpServers.x.type", "must be 'stdio', got 5"),
        (
            {"command": "a", "type": "http"},
            "mcpServers.x.type",
            "must be 'stdio', got 'http'",
        ),
        ({"command": "a", "cwd": 7}, "mcpServers.x.cwd", "must be a string, got number"),
        ({"command": "a", "env": ["K"]}, "mcpServers.x.env", "must be an object, got array"),
        ({"command": ""}, "mcpServers.x.command", "must be a non-empty string"),
        ({"url": 5}, "mcpServers.x.url", "must be a string, got number"),
        ({"url": "http://h/mcp", "headers": "A: b"}, "mcpServers.x.headers", "got str"),
        ({"command": "a", "callTimeout": True}, "mcpServers.x.callTimeout", "must be a number, got boolean"),
        ({"command": "a", "timeout": 0}, "mcpServers.x.timeout", "must be > 0, got 0"),
        ({"command": "a", "maxConcurrency": 0}, "mcpServers.x.maxConcurrency", "must be >= 1, got 0"),
        ({"command": "a", "probe": "icmp"}, "mcpServers.x.probe", "got 'icmp'"),
        (
            {"command": "a", "idempotent": "yes"},
            "mcpServers.x.idempotent",
            "must be true or false, got string",
        ),
        ({"command": "a", "trusted": 1}, "mcpServers.x.trusted", "must be true or false, got number"),
        (
            {"command": "a", "idempotentTools": ["ok", 3]},
            "mcpServers.x.idempotentTools[1]",
            "must be a string",
        ),
    ],
)
def test_more_bad_entries_name_the_key(entry: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"mcpServers": {"x": entry}})
    assert info.value.key == key
    assert message in str(info.value)


def test_entry_options_reach_the_config() -> None:
    (config,) = parse_mcp_servers(
        {
            "mcpServers": {
                "srv": {
                    "url": "http://h/mcp",
                    "type": "streamable-http",
                    "timeout": 12,
                    "probeTimeout": 3,
                    "unreachableThreshold": 5,
                    "handshakeMaxAge": 60,
                    "freshnessWindow": 30,
                    "probe": "list_tools",
                    "connectOnStart": False,
                    "maxConcurrency": 2,
                    "parkAfter": 5,
                    "idempotent": True,
                }
            }
        }
    )
    p = config.policy
    assert p.park_after == 5
    assert (p.call_timeout, p.probe_timeout, p.unreachable_threshold) == (12, 3, 5)
    assert (p.handshake_max_age, p.freshness_window, p.probe) == (60, 30, "list_tools")
    assert (p.connect_on_start, p.max_concurrency, config.idempotent) == (False, 2, True)
    assert config.transport == HttpTransport(url="http://h/mcp")


@pytest.mark.parametrize(
    ("document", "key", "message"),
    [
        ({"mcpServers": {"bad name": {"command": "a"}}}, "mcpServers.bad name", "server names must be"),
        ({"servers": {"": {"command": "a"}}}, "servers.", "server names must be"),
        ({"mcpServers": ["a"]}, "mcpServers", "must be an object mapping names to servers"),
        (b"\xff", None, "not valid JSON"),
        ("[1]", None, "must be a JSON object"),
        ({"other": {}}, None, "must have an 'mcpServers'"),
    ],
)
def test_bad_documents_say_why(document: Any, key: str | None, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers(document)
    assert info.value.key == key
    assert message in str(info.value)


def test_an_unknown_key_names_the_closest_known_one() -> None:
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"mcpServers": {"demo": {"command": "x", "callTimout": 5}}})
    assert str(info.value) == "mcpServers.demo.callTimout: unknown key; did you mean 'callTimeout'?"
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"mcpServers": {"demo": {"command": "x", "zzz": 1}}})
    assert str(info.value) == "mcpServers.demo.zzz: unknown key"
    # Keys other clients keep in the same file are ignored.
    (config,) = parse_mcp_servers(
        {"mcpServers": {"demo": {"command": "x", "alwaysAllow": [], "description": "d"}}}
    )
    assert config.name == "demo"


def test_contradictory_keys_are_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers({"mcpServers": {"demo": {"command": "x", "timeout": 5, "callTimeout": 9}}})
    assert (
        str(info.value) == "mcpServers.demo.timeout: 'timeout' and 'callTimeout' set the same thing: give one"
    )


def test_variables_expand_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_TOKEN", "s3cret")
    monkeypatch.setenv("DEMO_HOST", "127.0.0.1")
    doc = {
        "mcpServers": {
            "web": {
                "url": "http://${DEMO_HOST}:9/mcp",
                "headers": {"X-Key": "${DEMO_TOKEN}"},
                "auth": {"type": "bearer", "token": "${DEMO_TOKEN}"},
            },
            "cli": {"command": "run", "args": ["--token", "${DEMO_TOKEN}"], "env": {"T": "${DEMO_TOKEN}"}},
        }
    }
    web, cli = parse_mcp_servers(doc)
    assert isinstance(web.transport, trio_mcp.HttpTransport)
    assert web.transport.url == "http://127.0.0.1:9/mcp"
    assert web.transport.headers == {"X-Key": "s3cret"}
    assert web.transport.auth == trio_mcp.BearerAuth(token="s3cret")
    assert "s3cret" not in repr(web)
    assert isinstance(cli.transport, trio_mcp.StdioTransport)
    assert (cli.transport.args, cli.transport.env) == (("--token", "s3cret"), {"T": "s3cret"})
    monkeypatch.delenv("DEMO_TOKEN")
    with pytest.raises(ConfigError) as info:
        parse_mcp_servers(doc)
    assert str(info.value) == "mcpServers.web.headers.X-Key: environment variable DEMO_TOKEN is not set"


def test_auth_key() -> None:
    (config,) = parse_mcp_servers(
        {
            "mcpServers": {
                "web": {
                    "url": "http://127.0.0.1:9/mcp",
                    "auth": {
                        "type": "client_credentials",
                        "clientId": "app",
                        "clientSecret": "pw",
                        "scope": "read",
                    },
                }
            }
        }
    )
    assert isinstance(config.transport, trio_mcp.HttpTransport)
    auth = config.transport.auth
    assert isinstance(auth, trio_mcp.ClientCredentialsAuth)
    assert (auth.client_id, auth.client_secret, auth.scope) == ("app", "pw", "read")
    for bad, message in [
        ({"type": "bearer"}, "mcpServers.web.auth.token: is required"),
        (
            {"type": "magic"},
            "mcpServers.web.auth.type: must be 'bearer', 'client_credentials', 'private_key_jwt' or "
            "'identity_assertion', got 'magic'",
        ),
        (
            {"type": "client_credentials", "clientId": "a"},
            "mcpServers.web.auth.clientSecret: is required",
        ),
        (
            {"type": "client_credentials", "clientId": "a", "clientSecret": "b", "x": 1},
            "mcpServers.web.auth.x: unknown key",
        ),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_mcp_servers({"mcpServers": {"web": {"url": "http://127.0.0.1:9/mcp", "auth": bad}}})
        assert str(info.value) == message


def test_null_means_never_for_park_after_and_handshake_max_age_and_the_default_elsewhere() -> None:
    (config,) = parse_mcp_servers(
        {
            "mcpServers": {
                "srv": {
                    "url": "http://h/mcp",
                    "parkAfter": None,
                    "handshakeMaxAge": None,
                    "probeTimeout": None,
                }
            }
        }
    )
    assert config.policy.park_after is None
    assert config.policy.handshake_max_age is None
    assert config.policy.probe_timeout == ServerPolicy().probe_timeout
