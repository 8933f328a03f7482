"""The ws-client prompt's line parser and input modes (netkit.core.ws.prompt)."""

from __future__ import annotations

from netkit.core.ws.prompt import (
    InputMode,
    PromptCommand,
    PromptKind,
    PromptState,
    parse_hex,
    parse_prompt_line,
)


def test_parse_prompt_line():
    send, ping, close, error = PromptKind.SEND, PromptKind.PING, PromptKind.CLOSE, PromptKind.ERROR
    assert parse_prompt_line("hello /world") == PromptCommand(
        send, "hello /world", data=b"hello /world"
    )
    assert parse_prompt_line("//ping") == PromptCommand(send, "/ping", data=b"/ping")
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
    assert unknown.kind is error and "/ping" in unknown.text and "/hex" in unknown.text


def test_binary_and_hex_once():
    binary = PromptKind.SEND_BINARY
    assert parse_prompt_line("/binary héllo") == PromptCommand(
        binary, "héllo", data="héllo".encode()
    )
    assert parse_prompt_line("/hex 68 69").data == b"hi"
    assert parse_prompt_line("/hex 00ff:10").data == b"\x00\xff\x10"
    assert parse_prompt_line("/hex 6").kind is PromptKind.ERROR
    assert parse_prompt_line("/hex hi").kind is PromptKind.ERROR
    assert parse_hex("") == b"" and parse_hex("0 1") is None


def test_modes_switch_and_toggle_back():
    state = PromptState()
    assert state.prompt == "> " and not state.hex
    assert state.read("/binary").kind is PromptKind.MODE
    assert state.mode is InputMode.BINARY and state.prompt == "binary> "
    assert state.read("abc") == PromptCommand(PromptKind.SEND_BINARY, "abc", data=b"abc")
    assert state.read("//x").data == b"/x"  # '//' still escapes a leading slash
    assert state.read("/ping x").kind is PromptKind.PING  # commands work in every mode
    assert state.read("/hex").kind is PromptKind.MODE  # straight from binary to hex
    assert state.hex and state.prompt == "hex> "
    assert state.read("de ad").data == b"\xde\xad"
    assert state.read("nope").kind is PromptKind.ERROR
    assert state.read("/binary text").data == b"text"  # once, the mode stays
    assert state.hex
    assert state.read("/hex").kind is PromptKind.MODE  # the same command again: text
    assert state.mode is InputMode.TEXT
    assert state.read("abc").kind is PromptKind.SEND
