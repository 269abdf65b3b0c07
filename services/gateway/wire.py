"""The protobuf wire format, as far as the gateway writes and walks it: it forwards requests without decoding them.

A message is a sequence of fields, each a key (field number and wire type) and a value; a message field is its
bytes behind their length, so messages are framed into a batch, and a batch into a stream message, by putting a
key and a length in front of bytes already serialized.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message: forwarded as they are, for inference to refuse."""


def length_prefix(field: int, length: int) -> bytes:
    """The key of length-delimited field ``field`` and ``length`` as a varint: what comes before its bytes."""
    varint = bytearray()
    while length > 0x7F:
        varint.append((length & 0x7F) | 0x80)
        length >>= 7
    varint.append(length)
    return bytes([(field << 3) | LEN]) + bytes(varint)


def _varint(data: memoryview, offset: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if offset >= len(data) or shift > 63:
            raise WireError("truncated varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def fields(data: memoryview) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value, end) of each top-level field; for LEN fields ``value`` is where the bytes
    start, for varints the value itself."""
    offset = 0
    while offset < len(data):
        key, offset = _varint(data, offset)
        number, kind = key >> 3, key & 7
        if kind == VARINT:
            value, offset = _varint(data, offset)
            yield number, kind, value, offset
        elif kind == LEN:
            length, start = _varint(data, offset)
            offset = start + length
            if offset > len(data):
                raise WireError("truncated field")
            yield number, kind, start, offset
        elif kind in (I64, I32):
            offset += 8 if kind == I64 else 4
            if offset > len(data):
                raise WireError("truncated field")
            yield number, kind, 0, offset
        else:
            raise WireError(f"wire type {kind}")
