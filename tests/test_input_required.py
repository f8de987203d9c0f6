"""Multi-round-trip requests (2026-07-28, SEP-2322) through ``manager.call_tool``,
``get_prompt`` and ``read_resource``, against a real SDK server in memory that answers
input-required results (virtual time)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio.testing
from mcp.server import Server
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitRequestParams,
    ElicitResult,
    ErrorData,
    GetPromptRequestParams,
    GetPromptResult,
    InputRequiredResult,
    ListPromptsResult,
    ListResourcesResult,
    ListRootsRequest,
    ListToolsResult,
    Prompt,
    PromptMessage,
    ReadResourceRequestParams,
    ReadResourceResult,
    Resource,
    SamplingMessage,
    TextContent,
    TextResourceContents,
    Tool,
)

import trio_mcp
from trio_mcp._input_required import MAX_ROUNDS


@dataclass
class Round:
    """One request as the server received it."""

    request_id: Any
    params: dict[str, Any]
    at: float


Step = Callable[[dict[str, Any], list[Round]], CallToolResult | InputRequiredResult]


@dataclass
class InteractiveServer:
    """A low-level SDK server whose tools answer each round with what ``steps`` says (the raw
    request parameters are recorded, so what the client put on the wire is visible)."""

    steps: dict[str, Step]
    rounds: dict[str, list[Round]] = field(default_factory=dict)

    def server(self) -> Server[Any]:
        async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
            return ListToolsResult(
                tools=[Tool(name=name, input_schema={"type": "object"}) for name in self.steps]
            )

        async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult | InputRequiredResult:
            rounds = self.rounds.setdefault(params.name, [])
            raw = dict(ctx.params or {})
            raw.pop("_meta", None)
            rounds.append(Round(ctx.request_id, raw, trio.current_time()))
            # Let concurrent calls interleave.
            await trio.lowlevel.checkpoint()
            return self.steps[params.name](params.arguments or {}, rounds)

        return Server("interactive", on_list_tools=list_tools, on_call_tool=call_tool)


def elicit(message: str) -> ElicitRequest:
    return ElicitRequest(
        params=ElicitRequestFormParams(
            message=message,
            requested_schema={
                "type": "object",
                "properties": {"confirmed": {"type": "boolean", "default": True}, "note": {"type": "string"}},
            },
        )
    )


def done(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)])


def text_of(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


@dataclass
class Handlers:
    """Client features that record what they were asked, by server."""

    asked: list[tuple[str | None, str]] = field(default_factory=list)
    decline: bool = False

    async def elicitation(self, server: str | None, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        self.asked.append((server, params.message))
        if self.decline:
            return ErrorData(code=-32603, message="the user is away")
        return ElicitResult(action="accept", content={"note": params.message})

    async def sampling(self, server: str | None, params: CreateMessageRequestParams) -> CreateMessageResult:
        self.asked.append((server, "sampling"))
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="42"), model="m")

    def features(self) -> trio_mcp.ClientFeatures:
        return trio_mcp.ClientFeatures(
            elicitation=self.elicitation, sampling=self.sampling, roots=["file:///work"]
        )


def config(server: Server[Any], name: str = "desk") -> trio_mcp.ServerConfig:
    return trio_mcp.ServerConfig(
        name=name,
        transport=trio_mcp.MemoryTransport(server=server),
        policy=trio_mcp.ServerPolicy(protocol="modern", probe="none"),
    )


def open_manager(server: Server[Any], handlers: Handlers) -> AbstractAsyncContextManager[trio_mcp.Manager]:
    return trio_mcp.open_manager([config(server)], client=handlers.features())


async def test_input_requests_are_answered_by_the_handlers_and_the_state_echoed() -> None:
    def book(arguments: dict[str, Any], rounds: list[Round]) -> CallToolResult | InputRequiredResult:
        if len(rounds) == 1:
            return InputRequiredResult(
                input_requests={
                    "who": elicit("book for whom?"),
                    "llm": CreateMessageRequest(
                        params=CreateMessageRequestParams(
                            messages=[
                                SamplingMessage(role="user", content=TextContent(type="text", text="?"))
                            ],
                            max_tokens=5,
                        )
                    ),
                    "where": ListRootsRequest(),
                },
                request_state='{"step": 1, "nonce": "\\u00e9 \\t"}',
            )
        return done("booked")

    fake = InteractiveServer({"book": book})
    handlers = Handlers()
    async with open_manager(fake.server(), handlers) as manager:
        result = await manager.call_tool("book", {"seats": 2})
    assert text_of(result) == "booked"
    first, retry = fake.rounds["book"]
    assert first.params == {"name": "book", "arguments": {"seats": 2}}
    # A new JSON-RPC request: another id, the same arguments, the state byte for byte.
    assert retry.request_id != first.request_id
    assert retry.params["arguments"] == {"seats": 2}
    assert retry.params["requestState"] == '{"step": 1, "nonce": "\\u00e9 \\t"}'
    responses = retry.params["inputResponses"]
    assert set(responses) == {"who", "llm", "where"}
    # The elicitation went through the same handler (and schema defaults) as a server request.
    assert responses["who"] == {"action": "accept", "content": {"note": "book for whom?", "confirmed": True}}
    assert responses["llm"]["content"] == {"type": "text", "text": "42"}
    assert responses["where"]["roots"] == [{"uri": "file:///work"}]
    assert sorted(handlers.asked) == [("desk", "book for whom?"), ("desk", "sampling")]


async def test_no_state_is_sent_back_when_the_server_sent_none() -> None:
    def confirm(arguments: dict[str, Any], rounds: list[Round]) -> CallToolResult | InputRequiredResult:
        if len(rounds) == 1:
            return InputRequiredResult(input_requests={"ok": elicit("sure?")})
        return done("confirmed")

    fake = InteractiveServer({"confirm": confirm})
    async with open_manager(fake.server(), Handlers()) as manager:
        assert text_of(await manager.call_tool("confirm", {})) == "confirmed"
    _, retry = fake.rounds["confirm"]
    assert "requestState" not in retry.params
    assert set(retry.params["inputResponses"]) == {"ok"}


async def test_a_state_only_answer_is_asked_again_after_a_growing_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def slow(arguments: dict[str, Any], rounds: list[Round]) -> CallToolResult | InputRequiredResult:
        if len(rounds) <= 4:
            return InputRequiredResult(request_state=f"not-yet-{len(rounds)}")
        return done("ready")

    fake = InteractiveServer({"slow": slow})
    async with open_manager(fake.server(), Handlers()) as manager:
        start = trio.current_time()
        assert text_of(await manager.call_tool("slow", {})) == "ready"
    rounds = fake.rounds["slow"]
    assert [r.params.get("requestState") for r in rounds] == [
        None,
        "not-yet-1",
        "not-yet-2",
        "not-yet-3",
        "not-yet-4",
    ]
    assert all("inputResponses" not in r.params for r in rounds)
    assert [round(r.at - start, 6) for r in rounds] == [0.0, 0.05, 0.15, 0.35, 0.6]


async def test_concurrent_calls_keep_their_rounds_apart() -> None:
    both_asked = trio.Event()
    asked: list[str] = []

    async def elicitation(server: str | None, params: ElicitRequestParams) -> ElicitResult:
        # Answer only once both calls are waiting for their answer.
        asked.append(params.message)
        if len(asked) == 2:
            both_asked.set()
        await both_asked.wait()
        return ElicitResult(action="accept", content={"note": params.message})

    def pay(arguments: dict[str, Any], rounds: list[Round]) -> CallToolResult | InputRequiredResult:
        who = arguments["who"]
        mine = [r for r in rounds if r.params["arguments"]["who"] == who]
        if len(mine) == 1:
            return InputRequiredResult(
                input_requests={"ok": elicit(f"pay {who}?")}, request_state=f"state-{who}"
            )
        retry = mine[-1].params
        return done(f"{who}:{retry['requestState']}:{retry['inputResponses']['ok']['content']['note']}")

    fake = InteractiveServer({"pay": pay, "plain": lambda arguments, rounds: done("plain")})
    results: dict[str, str] = {}
    features = trio_mcp.ClientFeatures(elicitation=elicitation, apply_elicitation_defaults=False)
    async with trio_mcp.open_manager([config(fake.server())], client=features) as manager:

        async def pay_for(who: str) -> None:
            results[who] = text_of(await manager.call_tool("pay", {"who": who}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pay_for, "ann")
            nursery.start_soon(pay_for, "bob")
            await both_asked.wait()
            # A request in between carries nothing of either call's rounds.
            results["plain"] = text_of(await manager.call_tool("plain", {}))
    assert results == {"ann": "ann:state-ann:pay ann?", "bob": "bob:state-bob:pay bob?", "plain": "plain"}
    assert fake.rounds["plain"][0].params == {"name": "plain", "arguments": {}}
    ids = [r.request_id for r in fake.rounds["pay"]]
    assert len(set(ids)) == 4


async def test_a_declined_input_request_rejects_the_call() -> None:
    def needs_you(arguments: dict[str, Any], rounds: list[Round]) -> CallToolResult | InputRequiredResult:
        return InputRequiredResult(input_requests={"who": elicit("who?")}, request_state="s")

    fake = InteractiveServer({"needs_you": needs_you})
    handlers = Handlers(decline=True)
    async with open_manager(fake.server(), handlers) as manager:
        with pytest.raises(trio_mcp.RequestRejectedError) as info:
            await manager.call_tool("needs_you", {})
        # Nothing is wrong with the server: it stays ready.
        assert manager.server("desk").status == trio_mcp.ServerStatus.HEALTHY
    assert str(info.value) == (
        "desk rejected tools/call: input request 'who' (elicitation/create) was not answered: "
        "the user is away"
    )
    assert len(fake.rounds["needs_you"]) == 1


async def test_a_server_that_keeps_asking_fails_after_the_round_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def forever(arguments: dict[str, Any], rounds: list[Round]) -> CallToolResult | InputRequiredResult:
        return InputRequiredResult(input_requests={"again": elicit("again?")}, request_state=str(len(rounds)))

    fake = InteractiveServer({"forever": forever})
    async with open_manager(fake.server(), Handlers()) as manager:
        with pytest.raises(trio_mcp.InvocationFailedError) as info:
            await manager.call_tool("forever", {}, failover="never")
    # The first call connected the server, then sent the request: one invocation attempt.
    assert [a.stage for a in info.value.attempts] == [trio_mcp.Stage.HANDSHAKE, trio_mcp.Stage.INVOKE]
    attempt = info.value.attempts[-1]
    assert attempt.category == "protocol_error"
    assert attempt.error == f"the server still required input after {MAX_ROUNDS} rounds"
    assert len(fake.rounds["forever"]) == MAX_ROUNDS + 1


async def test_prompts_and_resources_take_input_rounds_too() -> None:
    seen: list[tuple[str, Any]] = []

    def step(params: Any) -> InputRequiredResult | None:
        seen.append((type(params).__name__, params.request_state))
        if params.request_state is None:
            return InputRequiredResult(input_requests={"ok": elicit("go on?")}, request_state="again")
        return None

    async def list_prompts(ctx: Any, params: Any) -> ListPromptsResult:
        return ListPromptsResult(prompts=[Prompt(name="greet")])

    async def get_prompt(ctx: Any, params: GetPromptRequestParams) -> GetPromptResult | InputRequiredResult:
        pending = step(params)
        if pending is not None:
            return pending
        return GetPromptResult(
            messages=[PromptMessage(role="user", content=TextContent(type="text", text="hi"))]
        )

    async def list_resources(ctx: Any, params: Any) -> ListResourcesResult:
        return ListResourcesResult(resources=[Resource(name="doc", uri="doc://one")])

    async def read_resource(
        ctx: Any, params: ReadResourceRequestParams
    ) -> ReadResourceResult | InputRequiredResult:
        pending = step(params)
        if pending is not None:
            return pending
        return ReadResourceResult(contents=[TextResourceContents(uri="doc://one", text="body")])

    server: Server[Any] = Server(
        "interactive",
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
    )
    async with open_manager(server, Handlers()) as manager:
        prompt = await manager.get_prompt("greet")
        resource = await manager.read_resource("doc://one")
    assert isinstance(prompt.messages[0].content, TextContent) and prompt.messages[0].content.text == "hi"
    assert isinstance(resource.contents[0], TextResourceContents) and resource.contents[0].text == "body"
    assert seen == [
        ("GetPromptRequestParams", None),
        ("GetPromptRequestParams", "again"),
        ("ReadResourceRequestParams", None),
        ("ReadResourceRequestParams", "again"),
    ]
