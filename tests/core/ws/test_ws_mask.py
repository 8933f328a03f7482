"""XOR masking: both implementations agree with a byte-by-byte reference at every size."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netkit.core.ws import mask
from netkit.core.ws.mask import NUMPY_THRESHOLD, key_int, mask_bytes, unmask_into, xor_small

KEY = b"\x37\xfa\x21\x3d"


def reference(data: bytes, key: bytes) -> bytes:
    # 5.3: transformed-octet-i = original-octet-i XOR masking-key-octet-(i MOD 4)
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


SIZES = [
    0,
    1,
    3,
    4,
    5,
    7,
    8,
    9,
    125,
    NUMPY_THRESHOLD - 1,
    NUMPY_THRESHOLD,
    NUMPY_THRESHOLD + 5,
    65536,
    65536 + 3,
]


@pytest.fixture(params=["numpy", "int-only"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "numpy":
        if not mask.have_numpy():
            pytest.skip("numpy not installed")
    else:
        # Simulate an environment without numpy: the int trick must cover every size.
        monkeypatch.setattr(mask, "_numpy_tried", True)
        monkeypatch.setattr(mask, "_numpy", None)
    return str(request.param)


def test_rfc_example() -> None:
    assert mask_bytes(b"Hello", KEY) == bytes.fromhex("7f 9f 4d 51 58")


@pytest.mark.parametrize("size", SIZES)
def test_mask_bytes_matches_reference(size: int, backend: str) -> None:
    data = os.urandom(size)
    original = bytes(data)
    assert bytes(mask_bytes(data, KEY)) == reference(data, KEY)
    assert data == original  # the caller's payload is untouched


@pytest.mark.parametrize("size", SIZES)
def test_unmask_into_in_place(size: int, backend: str) -> None:
    data = os.urandom(size)
    buf = bytearray(reference(data, KEY))
    unmask_into(memoryview(buf), KEY)
    assert buf == data


@pytest.mark.parametrize("offset", [1, 2, 3, 5])
def test_unmask_into_an_unaligned_slice(offset: int, backend: str) -> None:
    # Payloads sit at any offset of the receive buffer (after a 2..14 byte header).
    data = os.urandom(NUMPY_THRESHOLD * 3 + 7)
    buf = bytearray(b"\xee" * offset + reference(data, KEY) + b"\xee")
    unmask_into(memoryview(buf)[offset : offset + len(data)], KEY)
    assert buf[offset : offset + len(data)] == data
    assert buf[:offset] == b"\xee" * offset and buf[-1:] == b"\xee"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        mask_bytes(b"abc", b"123")
    with pytest.raises(TypeError):
        unmask_into(memoryview(b"read-only"), KEY)


@given(st.binary(max_size=3000), st.binary(min_size=4, max_size=4))
def test_mask_is_its_own_inverse(data: bytes, key: bytes) -> None:
    masked = bytes(mask_bytes(data, key))
    assert masked == reference(data, key)
    buf = bytearray(masked)
    unmask_into(memoryview(buf), key)
    assert buf == data


@pytest.mark.parametrize("size", range(126))
def test_xor_small_matches_reference(size: int) -> None:
    data = os.urandom(size)
    assert xor_small(data, key_int(KEY)) == reference(data, KEY)
