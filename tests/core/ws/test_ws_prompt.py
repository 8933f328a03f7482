"""The ws-client prompt's line parser (netkit.core.ws.prompt)."""

from __future__ import annotations

from netkit.core.ws.prompt import PromptCommand, PromptKind, parse_prompt_line


def test_parse_prompt_line():
    send, ping, close, error = PromptKind.SEND, PromptKind.PING, PromptKind.CLOSE, PromptKind.ERROR
    assert parse_prompt_line("hello /world") == PromptCommand(send, "hello /world")
    assert parse_prompt_line("//ping") == PromptCommand(send, "/ping")
    assert parse_prompt_line("") == PromptCommand(send, "")
    assert parse_prompt_line("/ping") == PromptCommand(ping, "")
    assert parse_prompt_line("/ping some data") == PromptCommand(ping, "some data")
    assert parse_prompt_line("/ping " + "x" * 125) == PromptCommand(ping, "x" * 125)
    assert parse_prompt_line("/ping " + "x" * 126).kind is error
    assert parse_prompt_line("/close") == PromptCommand(close)
    assert parse_prompt_line("/close 4000") == PromptCommand(close, "", 4000)
    assert parse_prompt_line("/close 1001 see you  later") == PromptCommand(
        close, "see you  later", 1001
    )
    assert parse_prompt_line("/close 1000 " + "r" * 124).kind is error
    assert parse_prompt_line("/close 1006").kind is error
    assert parse_prompt_line("/close abc").kind is error
    assert parse_prompt_line("/quit") == PromptCommand(PromptKind.QUIT)
    unknown = parse_prompt_line("/help")
    assert unknown.kind is error and "/ping" in unknown.text
