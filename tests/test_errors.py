"""The error tree (netkit.errors): errors are data that survive pickling as themselves."""

from __future__ import annotations

import pickle

import pytest

from netkit.core.buffers import FrameTooLarge
from netkit.core.ws.handshake import InvalidHandshake
from netkit.errors import ConnectError, NetkitError, PeerProtocolError


@pytest.mark.parametrize(
    "error",
    [
        ConnectError("refused", hint="is it running?"),
        PeerProtocolError("bad frame", close_code=1007),
        InvalidHandshake("no upgrade"),
        FrameTooLarge(10, 5),  # its constructor does not take the message
    ],
)
def test_errors_pickle_as_themselves(error: NetkitError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert str(back) == str(error) and back.hint == error.hint
    assert vars(back) == vars(error)
